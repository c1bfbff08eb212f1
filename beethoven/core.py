"""CoreServer: node lifecycle records and ``alert_me()`` notifications.

It turns membership events into one `NodeRecord` per node (``online`` while the
member is alive or suspect, ``offline`` once dead or left, with the time of the
last change) and into a `NodeUpdate` for every subscriber whenever a node goes
online or offline. Status comes from the membership layer, which is the failure
detector; it is not a store CRDT (``specs/roles.md`` §3, ``specs/node.md`` §3).

Subscribers cannot hurt the server (the Elixir original's followers crashed it
on the first join): each `alert_me()` subscription has its own bounded buffer
that drops its oldest update when full (counted in `stats()`), and a callback
that raises is logged and counted, never propagated.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs

from beethoven.fanout import Fanout, FanoutStats, Subscription
from beethoven.membership.api import MemberEvent, MemberEventKind, MemberInfo
from beethoven.wire.messages import MemberStatus

__all__ = ["CoreServer", "CoreStats", "NodeRecord", "NodeStatus", "NodeUpdate"]

logger = logging.getLogger(__name__)


class NodeStatus(enum.StrEnum):
    """Public status of a node, as in the original: online or offline."""

    ONLINE = "online"
    OFFLINE = "offline"


@attrs.frozen
class NodeUpdate:
    """A node went online or offline."""

    node: str
    status: NodeStatus


@attrs.frozen
class NodeRecord:
    """What `get_detailed_cluster_nodes()` returns for one node."""

    node: str
    status: NodeStatus
    last_change: dt.datetime  # timezone-aware, UTC


@attrs.frozen
class CoreStats:
    """Counters of the CoreServer."""

    online: int
    offline: int
    updates: int
    callback_errors: int
    alerts: FanoutStats


def _status_of(member: MemberInfo) -> NodeStatus:
    if member.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
        return NodeStatus.ONLINE
    return NodeStatus.OFFLINE


class CoreServer:
    """Keeps node records and tells subscribers about online/offline changes.

    Args:
        clock: wall-clock seconds, for ``last_change`` (injectable for tests).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[str, NodeRecord] = {}
        self._alerts: Fanout[NodeUpdate] = Fanout()
        self._callbacks: list[Callable[[NodeUpdate], None]] = []
        self._updates = 0
        self._callback_errors = 0
        self._listeners: list[Callable[[], None]] = []
        self._online: list[str] | None = None  # sorted cache, rebuilt after a change

    # --- queries --------------------------------------------------------------------

    def records(self) -> list[NodeRecord]:
        """Every node that ever joined and is not yet reaped, sorted by name."""
        return [self._records[name] for name in sorted(self._records)]

    def record(self, node: str) -> NodeRecord | None:
        """The record of *node*, if known."""
        return self._records.get(node)

    def online(self) -> list[str]:
        """Names of the online nodes, sorted (a fresh list; cached between changes)."""
        if self._online is None:
            self._online = sorted(
                n for n, r in self._records.items() if r.status is NodeStatus.ONLINE
            )
        return list(self._online)

    def stats(self) -> CoreStats:
        """Current counters."""
        online = len(self.online())
        return CoreStats(
            online=online,
            offline=len(self._records) - online,
            updates=self._updates,
            callback_errors=self._callback_errors,
            alerts=self._alerts.stats(),
        )

    # --- subscriptions --------------------------------------------------------------

    @asynccontextmanager
    async def alert_me(self, maxlen: int = 1024) -> AsyncIterator[Subscription[NodeUpdate]]:
        """Receive a `NodeUpdate` for every online/offline change during the block.

        Args:
            maxlen: buffer size; when full the oldest update is dropped (counted).
        """
        async with self._alerts.subscribe(maxlen) as sub:
            yield sub

    def add_callback(self, callback: Callable[[NodeUpdate], None]) -> None:
        """Call *callback* synchronously on every update (it must not block)."""
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[NodeUpdate], None]) -> None:
        """Stop calling *callback*."""
        self._callbacks.remove(callback)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Internal hook: called after any record change (RoleMgmt replans on it)."""
        self._listeners.append(listener)

    def close(self) -> None:
        """End every `alert_me()` iteration."""
        self._alerts.close()

    # --- input ----------------------------------------------------------------------

    def handle(self, event: MemberEvent) -> None:
        """Apply one membership event."""
        member = event.member
        if event.kind == MemberEventKind.REAPED:
            if self._records.pop(member.name, None) is not None:
                self._changed()
            return
        status = _status_of(member)
        old = self._records.get(member.name)
        if old is not None and old.status is status:
            return
        now = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC)
        self._records[member.name] = NodeRecord(member.name, status, now)
        update = NodeUpdate(member.name, status)
        self._updates += 1
        self._alerts.publish(update)
        for callback in list(self._callbacks):
            try:
                callback(update)
            except Exception:
                self._callback_errors += 1
                logger.exception("alert callback %r failed", callback)
        self._changed()

    def _changed(self) -> None:
        self._online = None
        for listener in self._listeners:
            listener()
