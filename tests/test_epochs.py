"""Fencing epochs strictly increase, whatever ends a holding (issue #10, item 2).

Every test runs whole nodes on the in-memory network through the real store, and
records the ``(epoch, node)`` token each holding of the role sees — at start and
whenever ``ctx.epoch`` rises in place (a re-fence). The recorded sequence must be
strictly increasing, in epochs as well as in tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from beethoven.assignment import rendezvous_rank
from beethoven.config import Config
from beethoven.node import Node, open_node
from beethoven.roles import Role, RoleContext
from beethoven.testing import EPOCH, PORT, Cluster, open_cluster
from beethoven.transport.memory import MemoryNetwork
from beethoven_store import open_store

Token = tuple[int, str]


class Tokens:
    """A role whose task records every fencing token it is given."""

    def __init__(self) -> None:
        self.seen: list[Token] = []
        self.running: dict[str, RoleContext] = {}

    def role(self, name: str = "solo", *, eligible: Sequence[str] = ()) -> Role:
        async def run(ctx: RoleContext) -> None:
            self.running[ctx.node] = ctx
            try:
                epoch = 0
                while True:
                    if ctx.epoch != epoch:  # a new holding, or a re-fenced one
                        epoch = ctx.epoch
                        self.seen.append((epoch, ctx.node))
                    await trio.sleep(0.05)
            finally:
                if self.running.get(ctx.node) is ctx:
                    del self.running[ctx.node]

        return Role(name, 1, run, eligible=frozenset(eligible))

    def holder(self) -> str | None:
        """The one node running the task, or None (none, or more than one)."""
        return next(iter(self.running)) if len(self.running) == 1 else None

    def assert_strictly_increasing(self) -> None:
        assert self.seen, "the role never ran"
        epochs = [epoch for epoch, _ in self.seen]
        assert all(a < b for a, b in itertools.pairwise(self.seen)), self.seen
        assert all(a < b for a, b in itertools.pairwise(epochs)), self.seen


def settled(cluster: Cluster, tokens: Tokens) -> bool:
    """One task runs, every node names it as the holder, and its token is the latest."""
    holder = tokens.holder()
    return (
        holder is not None
        and cluster.converged()
        and all(n.whois_hosting("solo") == [holder] for n in cluster.nodes())
        and tokens.seen[-1] == (tokens.running[holder].epoch, holder)
    )


def held_by(cluster: Cluster, tokens: Tokens, name: str) -> Callable[[], bool]:
    return lambda: settled(cluster, tokens) and tokens.holder() == name


def taken_times(cluster: Cluster, tokens: Tokens, times: int) -> Callable[[], bool]:
    return lambda: settled(cluster, tokens) and len(tokens.seen) == times


async def wait_moved(cluster: Cluster, tokens: Tokens, away_from: str) -> str:
    await cluster.wait_for(lambda: settled(cluster, tokens) and tokens.holder() != away_from)
    holder = tokens.holder()
    assert holder is not None
    return holder


async def test_graceful_hand_off_does_not_reuse_the_released_epoch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # On real agents: agent3 e1 → agent2 e1 → agent3 e1 (the tombstone hid the epoch).
    tokens = Tokens()
    with trio.fail_after(600):
        async with open_cluster(3, roles=[tokens.role()]) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(lambda: settled(cluster, tokens))
            for _ in range(4):
                holder = tokens.holder()
                assert holder is not None
                await cluster.stop(holder)  # leaves: stops the role, releases, says goodbye
                await wait_moved(cluster, tokens, holder)
                await cluster.start(holder)
                await cluster.wait_for(lambda: settled(cluster, tokens))
    assert len(tokens.seen) == 5
    tokens.assert_strictly_increasing()


def ranked(names: Sequence[str], role: str = "solo") -> list[str]:
    return sorted(names, key=lambda n: rendezvous_rank(role, n), reverse=True)


async def test_keeper_of_an_over_assigned_role_is_refenced_above_the_released_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The other side of a partition takes a higher epoch; after the heal the keeper
    # must not stay below it, or an external fence refuses the legitimate holder.
    tokens = Tokens()
    with trio.fail_after(600):
        async with open_cluster(4, roles=[tokens.role()]) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(lambda: settled(cluster, tokens))
            keeper = tokens.holder()
            assert keeper is not None
            order = ranked(cluster.names())
            # The other side holds only nodes ranked below the holder, so the holder
            # is the one that keeps the role when the partition heals.
            side = order[: order.index(keeper) + 1]
            others = [n for n in order if n not in side]
            assert others, "the holder ranks last: pick another role name"
            cluster.partition("split", side, others)
            await cluster.wait_for(lambda: len(tokens.running) == 2)
            duplicate = next(n for n in tokens.running if n != keeper)
            assert tokens.running[duplicate].epoch > tokens.running[keeper].epoch
            cluster.heal("split")
            await cluster.wait_for(
                lambda: (
                    cluster.converged()
                    and tokens.holder() == keeper
                    and all(n.whois_hosting("solo") == [keeper] for n in cluster.nodes())
                )
            )
            await trio.sleep(10)  # time to re-fence, and to show that no epoch war follows
            assert settled(cluster, tokens)
            assert cluster.node(keeper).stats().roles.refences == 1
    assert [node for _, node in tokens.seen] == [keeper, duplicate, keeper]
    tokens.assert_strictly_increasing()


def retag(node: Node, tags: Sequence[str]) -> None:
    """Publish *node*'s record with other tags (what a re-tagging restart publishes)."""
    record = dict(node._store.get_own(("node",)))
    record["tags"] = list(tags)
    node._disseminate(node._store.put_own(("node",), record))


async def test_role_moved_by_loss_of_eligibility_gets_a_higher_epoch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The holder loses its tag while no other node is eligible: it releases the role
    # (a tombstone) and the next eligible node must still take a higher epoch.
    tokens = Tokens()
    with trio.fail_after(600):
        async with open_cluster(3, roles=[tokens.role(eligible=["gpu"])]) as cluster:
            await cluster.wait_ready()
            for name in ["n0", "n1", "n2", "n0"]:
                for node in cluster.nodes():
                    retag(node, ["gpu"] if node.name == name else [])
                await cluster.wait_for(held_by(cluster, tokens, name))
                for node in cluster.nodes():
                    retag(node, [])  # nobody is eligible: the role is released
                await cluster.wait_for(
                    lambda: (
                        not tokens.running
                        and not any(n.whois_hosting("solo") for n in cluster.nodes())
                    )
                )
    assert [node for _, node in tokens.seen] == ["n0", "n1", "n2", "n0"]
    tokens.assert_strictly_increasing()


async def test_crashed_holders_epoch_outlives_its_reaped_keyspace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = Tokens()
    with trio.fail_after(600):
        async with open_cluster(4, roles=[tokens.role()], reap_after=5.0) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(lambda: settled(cluster, tokens))
            first = tokens.holder()
            assert first is not None
            await cluster.crash(first)
            second = await wait_moved(cluster, tokens, first)
            # the crashed node is forgotten everywhere (its keyspace removed) ...
            await cluster.wait_for(
                lambda: all(first not in n._store.owners() for n in cluster.nodes())
            )
            # ... and the successor hands off: the third epoch is above both.
            await cluster.stop(second)
            await wait_moved(cluster, tokens, second)
    assert len(tokens.seen) == 3
    tokens.assert_strictly_increasing()


async def test_holder_restarted_under_its_name_does_not_reset_the_epoch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A quick restart (memory://) replaces the node's keyspace with a new life's,
    # which dropped the old holding — and its epoch — before anyone saw it die.
    tokens = Tokens()
    with trio.fail_after(600):
        async with open_cluster(3, roles=[tokens.role()]) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(lambda: settled(cluster, tokens))
            for taken in range(2, 5):
                holder = tokens.holder()
                assert holder is not None
                await cluster.crash(holder)
                await cluster.start(holder)
                await cluster.wait_for(taken_times(cluster, tokens, taken))
    assert len(tokens.seen) == 4
    tokens.assert_strictly_increasing()


def _config(cluster_size: int, index: int, role: Role, store: str) -> Config:
    host = f"10.0.0.{index + 1}"
    return Config(
        name=f"n{index}",
        bind=host,
        port=PORT,
        roles=(role,),
        cluster_net=(f"{host}/32",),
        seeds=tuple(f"10.0.0.{j + 1}:{PORT}" for j in range(cluster_size) if j != index),
        store=store,
    )


@asynccontextmanager
async def sqlite_cluster(
    n: int, role: Role, directory: Path, network: MemoryNetwork
) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, network, seed=7, hw_sampler=lambda: (10.0, 30.0))
        for i in range(n):
            cluster.add(f"n{i}", _config(n, i, role, f"sqlite:///{directory / f'n{i}.db'}"))
        yield cluster
        nursery.cancel_scope.cancel()


async def pace() -> None:
    """Keep virtual time from leaping ahead while the sqlite store commits in a thread.

    Under ``autojump_threshold=0`` a task waiting for a worker thread counts as idle,
    so the clock would jump straight to the next deadline — the test's own timeout
    when the last node flushes on its way out.
    """
    while True:  # noqa: ASYNC110 - a pacemaker, not a wait for a condition
        await trio.sleep(0.01)


async def test_epochs_survive_a_restart_of_every_node_with_sqlite(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # After a mass restart the only holder got (1, "n07") after (3, "n17").
    tokens = Tokens()
    network = MemoryNetwork(seed=7)
    async with trio.open_nursery() as pacer:
        pacer.start_soon(pace)
        with trio.fail_after(900):
            async with sqlite_cluster(3, tokens.role(), tmp_path, network) as cluster:
                for name in cluster.names():
                    await cluster.start(name)
                await cluster.wait_ready()
                await cluster.wait_for(lambda: settled(cluster, tokens))
                holder = tokens.holder()
                assert holder is not None
                await cluster.stop(holder)
                await wait_moved(cluster, tokens, holder)
                await cluster.start(holder)
                await cluster.wait_for(lambda: settled(cluster, tokens))
                before = tokens.seen[-1][0]
                for name in cluster.running():  # the whole cluster goes down ...
                    await cluster.stop(name)
                assert not tokens.running
                # ... and comes back, one node at a time: the first one is alone.
                for name in reversed(cluster.names()):
                    await cluster.start(name)
                await cluster.wait_ready()
                await cluster.wait_for(lambda: settled(cluster, tokens))
                assert tokens.seen[-1][0] > before
        pacer.cancel_scope.cancel()
    tokens.assert_strictly_increasing()


async def test_a_week_old_mark_is_not_dropped_by_a_late_joiners_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A replica drops an LWW entry older than the LWW horizon (7 d) that it did not
    # hold before its first GC pass: a mark written once and left alone while the
    # role stays put would be lost to a joiner that missed its join sync.
    def fast_wall_clock() -> float:
        return EPOCH + trio.current_time() * 3600  # one virtual second = one hour

    tokens = Tokens()
    config = Config(name="n0", bind="10.0.0.1", port=PORT, cluster_net=("10.0.0.1/32",))
    with trio.fail_after(600):
        async with open_node(
            config,
            roles=[tokens.role()],
            network=MemoryNetwork(seed=3),
            hw_sampler=lambda: (10.0, 30.0),
            clock=fast_wall_clock,
        ) as node:
            await node.wait_ready()
            assert tokens.seen == [(1, "n0")]
            await trio.sleep(8 * 24)  # eight days of wall time hold the role in place
            late = open_store("memory://", owner="late", clock=fast_wall_clock)
            late.gc()  # its GC floor is now a week ago
            late.merge(node._store.full_state())
            assert late.get(("epoch", "solo", "n0")) == 1
            late.close()
    assert tokens.seen == [(1, "n0")]
