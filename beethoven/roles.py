"""RoleMgmt: host the roles this node is assigned, and only those.

A `Role` is a name, a desired instance count and an async ``run`` callable. Every
node computes the same plan from its view of the cluster (`plan_assignment`) and
acts only on its own part of it:

* assigned and not hosting → pick a fencing epoch above the role's epoch
  high-water mark (every epoch any node ever took for it, kept after the holding
  ends), publish the mark and the holding together, start the task;
* hosting and no longer assigned → ask the task to stop (``ctx.stopping``), cancel
  it after the grace period, then withdraw the holding (the epoch mark stays);
* hosting at an epoch not above the mark of an online node that no longer holds
  the role (after a healed partition the released duplicate may have taken a
  higher one) → take a new epoch above every mark and publish it (``ctx.epoch``
  rises in place).

A role task that raises is restarted with exponential back-off and reported
(log, stats, `RoleStatus`); a role task that returns on its own is restarted the
same way while the node still holds the role. ``get_roles()`` and
``whois_hosting()`` report the holdings published in the store — actual holders,
not intentions.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NoReturn, Protocol

import attrs
import trio

from beethoven.assignment import RoleDemand, plan_assignment
from beethoven.errors import ConfigError

__all__ = [
    "Role",
    "RoleContext",
    "RoleMgmt",
    "RoleMgmtStats",
    "RolePublisher",
    "RoleStatus",
    "RoleView",
    "resolve_callable",
]

logger = logging.getLogger(__name__)

RoleFunc = Callable[["RoleContext"], Awaitable[None]]


def resolve_callable(path: str) -> RoleFunc:
    """Import ``"package.module:function"`` and return the function.

    Raises:
        ConfigError: the path is malformed, the module cannot be imported, or the
            attribute is missing or not callable.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"role run: expected 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"role run: cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"role run: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"role run: {path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _check_count(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"role count must be a whole number >= 1, got {value!r}")


def _check_name(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ConfigError(f"role name must be a string of 1..128 characters, got {value!r}")


def _to_run(value: RoleFunc | str) -> RoleFunc:
    if isinstance(value, str):
        return resolve_callable(value)
    if not callable(value):
        raise ConfigError(f"role run must be an async callable or an import path, got {value!r}")
    return value


def _to_tags(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


@attrs.frozen
class Role:
    """A unit of work the cluster keeps running on *count* nodes.

    Attributes:
        name: unique role name.
        count: how many nodes should host it (at most one instance per node).
        run: ``async def run(ctx: RoleContext)``, or its import path
            ``"package.module:function"`` (resolved at construction).
        args: free-form arguments, handed to the task as ``ctx.args``.
        eligible: tags a node must all carry to host the role (empty: any node).
    """

    name: str = attrs.field(validator=_check_name)
    count: int = attrs.field(default=1, validator=_check_count)
    run: RoleFunc = attrs.field(default=None, converter=_to_run)
    args: Mapping[str, Any] = attrs.field(factory=dict)
    eligible: frozenset[str] = attrs.field(default=frozenset(), converter=_to_tags)


@attrs.frozen
class RoleStatus:
    """How a role hosted here is doing."""

    role: str
    epoch: int
    state: str  # "running", "restarting", "stopping"
    restarts: int
    last_error: str | None
    health: str | None


class RoleContext:
    """What a role task gets: who and what it is, and a way to report health.

    Attributes:
        role: the role name.
        node: this node's name.
        epoch: the fencing epoch of this holding; a higher epoch elsewhere means
            this holding is stale (use it to fence writes to external systems).
            Read it at every write: it rises in place when the holding is
            re-fenced (a holding that ended elsewhere had a higher epoch).
        args: the role's ``args``.
        stopping: set when the node is about to stop hosting the role; the task
            should wrap up within the grace period or it is cancelled.
    """

    def __init__(self, role: str, node: str, epoch: int, args: Mapping[str, Any]) -> None:
        self.role = role
        self.node = node
        self.epoch = epoch
        self.args = args
        self.stopping = trio.Event()
        self.health: str | None = None

    def report_health(self, status: str) -> None:
        """Record a short health text, shown in role status and stats."""
        self.health = status


class RoleView(Protocol):
    """The converged cluster view RoleMgmt plans from."""

    def online_nodes(self) -> Collection[str]:
        """Names of the online members, self included."""

    def node_tags(self, node: str) -> frozenset[str]:
        """The tags *node* published."""

    def role_holders(self, role: str) -> Mapping[str, int]:
        """Node → fencing epoch of every current holding of *role* (online holders)."""

    def scores(self) -> Mapping[str, float]:
        """Node → last published allocator score."""

    def epoch_marks(self, role: str) -> Mapping[str, int]:
        """Node → the highest epoch that node ever took for *role* (its high-water mark).

        A mark survives the end of the holding: release, loss of eligibility, the
        holder's crash, restart and removal from membership.
        """


class RolePublisher(Protocol):
    """Where RoleMgmt records this node's holdings (its own store keyspace)."""

    def publish_holding(self, role: str, epoch: int) -> None:
        """Record that this node hosts *role* at *epoch*, and raise its mark to *epoch*.

        The mark must be visible no later than the holding (one update).
        """

    def release_holding(self, role: str) -> None:
        """Withdraw this node's holding of *role*."""


@attrs.frozen
class RoleMgmtStats:
    """Counters of RoleMgmt."""

    hosting: int
    starts: int
    stops: int
    crashes: int
    plans: int
    refences: int = 0


@attrs.define
class _Hosted:
    ctx: RoleContext
    scope: trio.CancelScope
    state: str = "running"
    restarts: int = 0
    last_error: str | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


class RoleMgmt:
    """Reconciles the roles this node hosts with the cluster-wide plan.

    Args:
        node: this node's name.
        roles: the roles the cluster runs (every node should declare the same).
        view: the cluster view to plan from.
        publisher: records this node's holdings.
        grace: seconds a stopping role task gets before it is cancelled.
        restart_backoff: ``(first, max)`` seconds between restarts of a failing task.
        reconcile_interval: seconds between plans when nothing triggers one.
        replan_gap: least seconds between two plans; notifications in between are
            coalesced into one plan (a burst of store changes costs one plan).
        on_change: called after this node starts or stops hosting a role.
    """

    def __init__(
        self,
        node: str,
        roles: Sequence[Role],
        view: RoleView,
        publisher: RolePublisher,
        *,
        grace: float = 5.0,
        restart_backoff: tuple[float, float] = (1.0, 30.0),
        reconcile_interval: float = 1.0,
        replan_gap: float = 0.05,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        names = [r.name for r in roles]
        if len(set(names)) != len(names):
            raise ConfigError(f"role names must be unique, got {names}")
        self.node = node
        self.roles = {r.name: r for r in roles}
        self._view = view
        self._publisher = publisher
        self._grace = grace
        self._backoff = restart_backoff
        self._interval = reconcile_interval
        self._gap = replan_gap
        self._on_change = on_change
        self._hosted: dict[str, _Hosted] = {}
        self._epochs: dict[str, int] = {}  # highest epoch this node took, per role
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._starts = self._stops = self._crashes = self._plans = self._refences = 0
        self.planned_once = trio.Event()
        self._closing = False
        self._hold_until = -math.inf

    # --- queries --------------------------------------------------------------------

    def hosting(self) -> list[str]:
        """Roles whose task runs on this node now."""
        return sorted(self._hosted)

    def status(self) -> list[RoleStatus]:
        """Status of every role hosted here."""
        return [
            RoleStatus(
                role=name,
                epoch=h.ctx.epoch,
                state=h.state,
                restarts=h.restarts,
                last_error=h.last_error,
                health=h.ctx.health,
            )
            for name, h in sorted(self._hosted.items())
        ]

    def stats(self) -> RoleMgmtStats:
        """Current counters."""
        return RoleMgmtStats(
            hosting=len(self._hosted),
            starts=self._starts,
            stops=self._stops,
            crashes=self._crashes,
            plans=self._plans,
            refences=self._refences,
        )

    def hold_new_roles(self, seconds: float) -> None:
        """Take no role this node does not already host for *seconds* from now.

        A node that has just joined plans from a store still catching up; it could
        miss a holding published moments before and start a role that already runs
        elsewhere. The node calls this after joining a cluster. Readiness (the first
        plan) waits for the hold to end.
        """
        self._hold_until = max(self._hold_until, trio.current_time() + seconds)
        self.notify()

    def notify(self) -> None:
        """Ask for a new plan soon (membership or store changed)."""
        self._wakeup.set()

    # --- planning -------------------------------------------------------------------

    def plan(self) -> dict[str, frozenset[str]]:
        """The cluster-wide plan from the current view."""
        online = list(self._view.online_nodes())
        needs_tags = any(role.eligible for role in self.roles.values())
        tags = {node: self._view.node_tags(node) for node in online} if needs_tags else {}
        demands = [
            RoleDemand(
                role.name,
                role.count,
                None
                if not role.eligible
                else frozenset(n for n in online if role.eligible <= tags[n]),
            )
            for role in self.roles.values()
        ]
        holders = {name: list(self._view.role_holders(name)) for name in self.roles}
        return plan_assignment(demands, online, holders, self._view.scores())

    def reconcile(self) -> None:
        """Start and stop role tasks so this node hosts exactly its share."""
        if self._nursery is None or self._closing:
            return
        plan = self.plan()
        self._plans += 1
        holding_off = trio.current_time() < self._hold_until
        for name, nodes in plan.items():
            mine = self.node in nodes
            hosted = self._hosted.get(name)
            if mine and hosted is None:
                if not holding_off:
                    self._start(name)
            elif not mine and hosted is not None and hosted.state != "stopping":
                self._nursery.start_soon(self._stop, name, hosted)
            elif mine and hosted is not None and hosted.state != "stopping":
                self._refence_if_stale(name, hosted)
        if not holding_off:
            self.planned_once.set()

    # --- running --------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Plan on every notification (and every interval) until cancelled.

        On cancellation every hosted task is cancelled; holdings are withdrawn by
        `stop_all`, which the node calls before leaving.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    self._wakeup = trio.Event()
                    self.reconcile()
                    await trio.sleep(self._gap)  # coalesce bursts of notifications
                    wait = max(0.0, self._interval - self._gap)
                    if trio.current_time() < self._hold_until:
                        wait = min(wait, self._hold_until - trio.current_time())
                    with trio.move_on_after(wait):
                        await self._wakeup.wait()
            finally:
                self._nursery = None
        raise AssertionError("unreachable")  # pragma: no cover

    async def stop_all(self) -> None:
        """Stop every hosted role (with the grace period) and withdraw its holding.

        After this the node starts no role again: it is about to leave.
        """
        self._closing = True
        async with trio.open_nursery() as nursery:
            for name, hosted in list(self._hosted.items()):
                if hosted.state != "stopping":
                    nursery.start_soon(self._stop, name, hosted)

    def _next_epoch(self, name: str) -> int:
        """One above every mark, every current holding and every epoch taken here."""
        seen = max(
            max(self._view.epoch_marks(name).values(), default=0),
            max(self._view.role_holders(name).values(), default=0),
            self._epochs.get(name, 0),
        )
        epoch = seen + 1
        self._epochs[name] = epoch
        return epoch

    def _refence_if_stale(self, name: str, hosted: _Hosted) -> None:
        """Take a new epoch if an online non-holder's mark is at or above ours.

        After a healed partition the released duplicate may have taken a higher
        epoch than the holder that keeps the role; the keeper must not stay below it
        (the external system would refuse the legitimate holder). Current holders
        are not compared with each other, so two holders never outbid each other;
        nor are nodes this one sees offline: across a partial partition two holders
        that each see the other dead would outbid each other without end.
        """
        holders = self._view.role_holders(name)
        online = set(self._view.online_nodes())
        ended = max(
            (
                epoch
                for node, epoch in self._view.epoch_marks(name).items()
                if node != self.node and node in online and node not in holders
            ),
            default=0,
        )
        if ended < hosted.ctx.epoch:
            return
        epoch = self._next_epoch(name)
        hosted.ctx.epoch = epoch
        self._publisher.publish_holding(name, epoch)
        self._refences += 1
        logger.info("role %s re-fenced at epoch %d (an ended holding had %d)", name, epoch, ended)

    def _start(self, name: str) -> None:
        assert self._nursery is not None
        role = self.roles[name]
        epoch = self._next_epoch(name)
        ctx = RoleContext(name, self.node, epoch, role.args)
        hosted = _Hosted(ctx=ctx, scope=trio.CancelScope())
        self._hosted[name] = hosted
        self._publisher.publish_holding(name, epoch)
        self._starts += 1
        logger.info("hosting role %s (epoch %d)", name, epoch)
        self._nursery.start_soon(self._supervise, role, hosted)
        if self._on_change is not None:
            self._on_change()

    async def _supervise(self, role: Role, hosted: _Hosted) -> None:
        delay = self._backoff[0]
        try:
            with hosted.scope:
                while True:
                    hosted.state = "running"
                    started = trio.current_time()
                    try:
                        await role.run(hosted.ctx)
                        reason = "returned"
                    except Exception as exc:
                        self._crashes += 1
                        reason = f"{type(exc).__name__}: {exc}"
                        logger.warning("role %s failed, restarting: %s", role.name, reason)
                    if hosted.ctx.stopping.is_set():
                        return
                    hosted.last_error = reason
                    hosted.restarts += 1
                    hosted.state = "restarting"
                    if trio.current_time() - started > 4 * self._backoff[1]:
                        delay = self._backoff[0]  # it ran well for a while: start over
                    await trio.sleep(delay)
                    delay = min(delay * 2, self._backoff[1])
        finally:
            hosted.done.set()

    async def _stop(self, name: str, hosted: _Hosted) -> None:
        hosted.state = "stopping"
        hosted.ctx.stopping.set()
        with trio.move_on_after(self._grace) as grace:
            grace.shield = True
            await hosted.done.wait()
        if not hosted.done.is_set():
            hosted.scope.cancel()
            with trio.CancelScope(shield=True):
                await hosted.done.wait()
        if self._hosted.get(name) is hosted:
            del self._hosted[name]
        self._publisher.release_holding(name)
        self._stops += 1
        logger.info("stopped hosting role %s", name)
        if self._on_change is not None:
            self._on_change()
        self.notify()
