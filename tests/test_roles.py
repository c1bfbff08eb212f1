from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping

import pytest
import trio
import trio.testing

from beethoven.assignment import rendezvous_rank
from beethoven.errors import ConfigError
from beethoven.roles import Role, RoleContext, RoleMgmt, resolve_callable


class FakeCluster:
    """A converged view shared by several RoleMgmt instances (an instant store)."""

    def __init__(self) -> None:
        self.online: set[str] = set()
        self.tags: dict[str, frozenset[str]] = {}
        # Like the store: a released holding is gone (a tombstone), while each node's
        # epoch mark (its highest epoch per role) stays.
        self.holdings: dict[str, dict[str, int]] = {}  # role -> node -> epoch
        self.marks: dict[str, dict[str, int]] = {}  # role -> node -> highest epoch it took
        self.running: dict[str, set[str]] = {}  # role -> nodes whose task runs now
        self.mgmts: dict[str, RoleMgmt] = {}

    def view_for(self, node: str) -> NodeView:
        return NodeView(self, node)

    def notify_all(self) -> None:
        for mgmt in self.mgmts.values():
            mgmt.notify()


class NodeView:
    def __init__(self, cluster: FakeCluster, node: str) -> None:
        self.cluster = cluster
        self.node = node

    def online_nodes(self) -> Collection[str]:
        return self.cluster.online

    def node_tags(self, node: str) -> frozenset[str]:
        return self.cluster.tags.get(node, frozenset())

    def role_holders(self, role: str) -> Mapping[str, int]:
        return self.cluster.holdings.get(role, {})

    def scores(self) -> Mapping[str, float]:
        return {}

    def epoch_marks(self, role: str) -> Mapping[str, int]:
        return self.cluster.marks.get(role, {})

    def publish_holding(self, role: str, epoch: int) -> None:
        self.cluster.holdings.setdefault(role, {})[self.node] = epoch
        marks = self.cluster.marks.setdefault(role, {})
        marks[self.node] = max(marks.get(self.node, 0), epoch)
        self.cluster.notify_all()

    def release_holding(self, role: str) -> None:
        self.cluster.holdings.get(role, {}).pop(self.node, None)
        self.cluster.notify_all()


def make_roles(cluster: FakeCluster, counts: Mapping[str, int]) -> list[Role]:
    def runner(name: str) -> object:
        async def run(ctx: RoleContext) -> None:
            cluster.running.setdefault(name, set()).add(ctx.node)
            try:
                await trio.sleep_forever()
            finally:
                cluster.running[name].discard(ctx.node)

        return run

    return [Role(name, count, runner(name)) for name, count in counts.items()]  # type: ignore[arg-type]


async def start_node(
    nursery: trio.Nursery, cluster: FakeCluster, node: str, roles: list[Role]
) -> trio.CancelScope:
    cluster.online.add(node)
    view = cluster.view_for(node)
    mgmt = RoleMgmt(node, roles, view, view, grace=1.0, reconcile_interval=0.5)
    cluster.mgmts[node] = mgmt
    scope = trio.CancelScope()

    async def host() -> None:
        with scope:
            await mgmt.run()

    nursery.start_soon(host)
    cluster.notify_all()
    return scope


def hosted_counts(cluster: FakeCluster) -> dict[str, int]:
    return {role: len(nodes) for role, nodes in cluster.running.items()}


async def test_roles_are_hosted_exactly_count_times(autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    roles = make_roles(cluster, {"solo": 1, "pair": 2, "trio": 3})
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(5):
                await start_node(nursery, cluster, f"n{i}", roles)
            await trio.sleep(5)
            assert hosted_counts(cluster) == {"solo": 1, "pair": 2, "trio": 3}
            for role, holders in cluster.holdings.items():
                assert set(holders) == cluster.running[role]  # published = actual
            nursery.cancel_scope.cancel()


async def test_a_crashed_holders_role_moves_with_a_higher_epoch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = FakeCluster()
    roles = make_roles(cluster, {"solo": 1})
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            scopes = {f"n{i}": await start_node(nursery, cluster, f"n{i}", roles) for i in range(3)}
            await trio.sleep(3)
            (holder,) = cluster.running["solo"]
            old_epoch = cluster.holdings["solo"][holder]
            # kill -9: the task dies, the holding stays published, the node goes offline
            scopes[holder].cancel()
            await trio.sleep(0.1)
            cluster.running["solo"].discard(holder)
            cluster.online.discard(holder)
            cluster.notify_all()
            await trio.sleep(3)
            (new,) = cluster.running["solo"]
            assert new != holder
            assert cluster.holdings["solo"][new] > old_epoch
            # the old node returns (new life): it must not double-host
            cluster.holdings["solo"].pop(holder)
            await start_node(nursery, cluster, holder, roles)
            await trio.sleep(5)
            assert cluster.running["solo"] == {new}
            nursery.cancel_scope.cancel()


async def test_failing_role_is_restarted_with_backoff_and_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    async def flaky(ctx: RoleContext) -> None:
        attempts.append(trio.current_time())
        raise RuntimeError("boom")

    cluster = FakeCluster()
    cluster.online.add("n0")
    view = cluster.view_for("n0")
    mgmt = RoleMgmt("n0", [Role("flaky", 1, flaky)], view, view, restart_backoff=(1.0, 4.0))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(mgmt.run)
            await trio.sleep(20)
            nursery.cancel_scope.cancel()
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 4.0]
    (status,) = mgmt.status()
    assert status.last_error == "RuntimeError: boom"
    assert status.restarts >= 5
    assert mgmt.stats().crashes == len(attempts)


async def test_stopping_role_gets_a_grace_period_then_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []

    async def polite(ctx: RoleContext) -> None:
        await ctx.stopping.wait()
        log.append(("polite-done", trio.current_time()))

    async def stubborn(ctx: RoleContext) -> None:
        try:
            await trio.sleep_forever()
        finally:
            log.append(("stubborn-cancelled", trio.current_time()))

    cluster = FakeCluster()
    cluster.online.add("n0")
    view = cluster.view_for("n0")
    roles = [Role("polite", 1, polite), Role("stubborn", 1, stubborn)]
    mgmt = RoleMgmt("n0", roles, view, view, grace=2.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(mgmt.run)
            await trio.sleep(1)
            assert mgmt.hosting() == ["polite", "stubborn"]
            start = trio.current_time()
            await mgmt.stop_all()
            nursery.cancel_scope.cancel()
    assert log == [("polite-done", start), ("stubborn-cancelled", start + 2.0)]
    assert cluster.holdings == {"polite": {}, "stubborn": {}}


async def test_eligibility_tags_restrict_holders(autojump_clock: trio.testing.MockClock) -> None:
    cluster = FakeCluster()
    cluster.tags = {"gpu1": frozenset({"gpu"}), "gpu2": frozenset({"gpu", "big"})}
    roles = make_roles(cluster, {"train": 2})
    roles = [Role("train", 2, roles[0].run, eligible=frozenset({"gpu"}))]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for node in ("cpu1", "gpu1", "cpu2", "gpu2"):
                await start_node(nursery, cluster, node, roles)
            await trio.sleep(3)
            assert cluster.running["train"] == {"gpu1", "gpu2"}
            nursery.cancel_scope.cancel()


async def test_keeper_of_an_over_assigned_role_is_refenced_above_the_released_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = FakeCluster()
    roles = make_roles(cluster, {"solo": 1})
    assert rendezvous_rank("solo", "n0") > rendezvous_rank("solo", "n1")  # n0 keeps the role
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await start_node(nursery, cluster, "n0", roles)
            await trio.sleep(3)
            mgmt = cluster.mgmts["n0"]
            assert [s.epoch for s in mgmt.status()] == [1]
            # a healed partition: n1 filled the role on its side, at a higher epoch
            cluster.online.add("n1")
            cluster.holdings["solo"]["n1"] = 5
            cluster.marks["solo"]["n1"] = 5
            cluster.notify_all()
            await trio.sleep(3)
            assert [s.epoch for s in mgmt.status()] == [1]  # two live holders never outbid
            # n1, ranked lower, releases: its holding ends, its mark stays
            del cluster.holdings["solo"]["n1"]
            cluster.notify_all()
            await trio.sleep(3)
            assert [s.epoch for s in mgmt.status()] == [6]
            assert cluster.holdings["solo"] == {"n0": 6}
            assert cluster.marks["solo"] == {"n0": 6, "n1": 5}
            assert mgmt.stats().refences == 1
            await trio.sleep(10)
            assert mgmt.stats().refences == 1
            nursery.cancel_scope.cancel()


def test_bad_role_definitions_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="count"):
        Role("x", 0, "tests.test_roles:make_roles")
    with pytest.raises(ConfigError, match="cannot import"):
        Role("x", 1, "no_such_module_xyz:run")
    with pytest.raises(ConfigError, match="has no attribute"):
        Role("x", 1, "beethoven.roles:nope")
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        resolve_callable("justaname")
    with pytest.raises(ConfigError, match="unique"):
        RoleMgmt("n", [Role("a", 1, "beethoven.roles:resolve_callable")] * 2, None, None)  # type: ignore[arg-type]
    assert Role("x", 1, "beethoven.roles:resolve_callable").run is resolve_callable  # type: ignore[comparison-overlap]
