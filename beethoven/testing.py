"""Helpers for testing code that embeds Beethoven: a whole cluster in one process.

`open_cluster` starts *n* nodes on an in-memory network (see
`beethoven.transport.memory.MemoryNetwork`), so a test can crash, restart and
partition nodes deterministically, under ``trio.testing.MockClock``::

    async def test_failover(autojump_clock):
        async with open_cluster(3, roles=[Role("solo", 1, idle_role)]) as cluster:
            with trio.fail_after(60):
                await cluster.wait_converged()  # every node agrees on members and holders
                (holder,) = cluster.node("n0").whois_hosting("solo")
                await cluster.crash(holder)
                survivor = cluster.nodes()[0]
                await cluster.wait_for(lambda: survivor.whois_hosting("solo") not in ([], [holder]))

`Cluster.wait_ready` only says that each node is ready (its discovery finished and it
planned its roles once): the nodes may still disagree on who is online or who holds
a role. Wait with `Cluster.wait_converged` before reading cluster-wide answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from beethoven.address import Address
from beethoven.config import Config
from beethoven.node import Node, open_node
from beethoven.roles import Role, RoleContext
from beethoven.transport.memory import MemoryNetwork

__all__ = ["Cluster", "idle_role", "open_cluster"]

PORT = 33000
#: Wall-clock origin of virtual time: a seeded run under MockClock replays exactly.
EPOCH = 1_700_000_000.0


def _virtual_wall_clock() -> float:
    return EPOCH + trio.current_time()


async def idle_role(ctx: RoleContext) -> None:
    """A role that does nothing until it is stopped (``"beethoven.testing:idle_role"``).

    Handy in configuration files and tests where only the placement of a role matters.
    """
    ctx.report_health("idle")
    await ctx.stopping.wait()


def _address(index: int) -> Address:
    return Address(f"10.0.{index // 250}.{index % 250 + 1}", PORT)


@attrs.define
class _Slot:
    index: int
    config: Config
    scope: trio.CancelScope | None = None
    node: Node | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


class Cluster:
    """A set of nodes on one `MemoryNetwork`, addressed by name (``n0``, ``n1``, …)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        network: MemoryNetwork,
        *,
        seed: int,
        hw_sampler: Callable[[], tuple[float, float]],
    ) -> None:
        self.network = network
        self._nursery = nursery
        self._seed = seed
        self._sampler = hw_sampler
        self._slots: dict[str, _Slot] = {}
        self._boots = 0

    # --- membership of the harness --------------------------------------------------

    def names(self) -> list[str]:
        """Every node name the harness knows (running or not)."""
        return list(self._slots)

    def running(self) -> list[str]:
        """Names of the nodes that run now."""
        return [name for name, slot in self._slots.items() if slot.node is not None]

    def node(self, name: str) -> Node:
        """The running node called *name*."""
        node = self._slots[name].node
        if node is None:
            raise KeyError(f"node {name!r} is not running")
        return node

    def nodes(self) -> list[Node]:
        """Every running node."""
        return [s.node for s in self._slots.values() if s.node is not None]

    def address(self, name: str) -> Address:
        """The network address of *name*."""
        return _address(self._slots[name].index)

    # --- lifecycle ------------------------------------------------------------------

    def add(self, name: str, config: Config) -> None:
        """Declare a node (not started)."""
        self._slots[name] = _Slot(len(self._slots), config)

    async def start(self, name: str) -> Node:
        """Start (or restart) node *name*; returns once it serves."""
        slot = self._slots[name]
        if slot.node is not None:
            raise RuntimeError(f"node {name!r} already runs")
        address = self.address(name)
        if self.network.is_crashed(address):
            self.network.recover(address)
        slot.done = trio.Event()
        self._boots += 1
        seed = self._seed * 100_003 + self._boots

        async def run(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with trio.CancelScope() as scope:
                    slot.scope = scope
                    async with open_node(
                        slot.config,
                        network=self.network,
                        seed=seed,
                        hw_sampler=self._sampler,
                        clock=_virtual_wall_clock,
                    ) as node:
                        slot.node = node
                        task_status.started(node)
                        await trio.sleep_forever()
            finally:
                slot.node = None
                slot.scope = None
                slot.done.set()

        node: Node = await self._nursery.start(run)
        return node

    async def crash(self, name: str) -> None:
        """Kill *name* like ``kill -9``: it goes silent at once, nothing is said."""
        slot = self._slots[name]
        self.network.crash(self.address(name))
        if slot.node is not None:
            slot.node.kill()  # no goodbye: cancelling the block alone would leave gracefully
        if slot.scope is not None:
            slot.scope.cancel()
        await slot.done.wait()

    async def stop(self, name: str) -> None:
        """Stop *name* gracefully, as leaving its ``async with open_node`` block does.

        Its roles stop (their holdings withdrawn) and it announces a ``Leave``: peers
        see it ``left`` within about a gossip round, not suspect then dead, and its
        roles move at once. Takes at most ``beethoven.node.LEAVE_TIMEOUT`` seconds
        (plus the store flush).
        """
        slot = self._slots[name]
        if slot.scope is not None:
            slot.scope.cancel()
        await slot.done.wait()

    def partition(self, label: str, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut the network between two groups of nodes (heal with `heal`)."""
        self.network.partition(
            label, [self.address(n) for n in side_a], [self.address(n) for n in side_b]
        )

    def heal(self, label: str) -> None:
        """Remove the partition called *label*."""
        self.network.heal(label)

    # --- waiting --------------------------------------------------------------------

    async def wait_ready(self) -> None:
        """Wait until every running node is ready (bound it with ``trio.fail_after``).

        Each node is then ready by itself (`Node.wait_ready`); they need not agree
        yet: use `wait_converged` for that.
        """
        for node in self.nodes():
            await node.wait_ready()

    async def wait_converged(self, *, step: float = 0.05) -> None:
        """Wait until every running node is ready and all agree (see `agreed`).

        Bound it with ``trio.fail_after``.
        """
        await self.wait_ready()
        await self.wait_for(self.agreed, step=step)

    async def wait_for(self, condition: Callable[[], bool], *, step: float = 0.05) -> None:
        """Wait until *condition* holds, checking every *step* seconds of (virtual) time.

        Bound it with ``trio.fail_after``.
        """
        while not condition():  # noqa: ASYNC110 - a predicate over cluster state
            await trio.sleep(step)

    def converged(self) -> bool:
        """True when every running node sees exactly the running nodes online."""
        running = sorted(self.running())
        return all(n.get_active_cluster_nodes() == running for n in self.nodes())

    def agreed(self) -> bool:
        """True when the running nodes agree on members and on every role's holders.

        That is: `converged`; every node reports the same holders for every role
        (`Node.get_roles`); those holders are the nodes that really run the role;
        and each role has as many holders as it wants, or as many eligible
        running nodes as there are.
        """
        nodes = self.nodes()
        if not nodes or not self.converged():
            return False
        views = [n.get_roles() for n in nodes]
        if any(view != views[0] for view in views):
            return False
        hosting = {n.name: {s.role for s in n.role_status()} for n in nodes}
        declared = {role.name: role for n in nodes for role in n.config.roles}
        for info in views[0]:
            if {name for name, roles in hosting.items() if info.role in roles} != set(info.nodes):
                return False
            role = declared.get(info.role)
            eligible = sum(
                1 for n in nodes if role is None or role.eligible <= frozenset(n.config.tags)
            )
            if info.assigned != min(info.count, eligible):
                return False
        return True


@asynccontextmanager
async def open_cluster(
    n: int,
    *,
    roles: Sequence[Role] = (),
    network: MemoryNetwork | None = None,
    seed: int = 0,
    discovery: str = "seeds",
    hw_sampler: Callable[[], tuple[float, float]] = lambda: (10.0, 30.0),
    **config: Any,
) -> AsyncIterator[Cluster]:
    """Start *n* nodes (``n0`` … ``n{n-1}``) on an in-memory network.

    Args:
        n: number of nodes.
        roles: roles every node declares.
        network: the network to use (a new seeded one by default).
        seed: seed of the network and of every node's random choices.
        discovery: ``"seeds"`` (every node joins through the first nodes) or ``"sweep"``
            (nodes find each other by sweeping a network that holds them all).
        hw_sampler: the CPU/RAM reading every node uses (psutil is not read).
        **config: further `Config` keys for every node (``preset="local"``, …).

    Yields:
        The running cluster; leaving the block stops every node.
    """
    if discovery not in ("seeds", "sweep"):
        raise ValueError("discovery must be 'seeds' or 'sweep'")
    if discovery == "sweep" and n > 250:
        raise ValueError("sweep discovery puts every node in 10.0.0.0/24: at most 250 nodes")
    net = network if network is not None else MemoryNetwork(seed=seed)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, net, seed=seed, hw_sampler=hw_sampler)
        for i in range(n):
            address = _address(i)
            settings: dict[str, Any] = {
                "name": f"n{i}",
                "bind": address.host,
                "port": PORT,
                "roles": tuple(roles),
                "cluster_net": ("10.0.0.0/24",),
            }
            if discovery == "seeds":
                # No sweep (a /32 of its own address); join through the first three
                # other nodes, so any node — n0 too — finds the cluster after a restart.
                settings["cluster_net"] = (f"{address.host}/32",)
                settings["seeds"] = tuple(str(_address(j)) for j in range(min(n, 4)) if j != i)[:3]
            settings.update(config)
            cluster.add(f"n{i}", Config(**settings))
        for name in cluster.names():
            await cluster.start(name)
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()
