from __future__ import annotations

import datetime as dt

import trio

from beethoven.address import Address
from beethoven.core import CoreServer, NodeStatus, NodeUpdate
from beethoven.membership.api import MemberEvent, MemberEventKind, MemberInfo
from beethoven.wire.messages import MemberStatus


def event(kind: str, name: str, status: int) -> MemberEvent:
    info = MemberInfo(name, Address("127.0.0.1", 1), 1, 0, status, b"", 0.0)
    return MemberEvent(kind, info)


def test_records_follow_membership() -> None:
    now = [1000.0]
    core = CoreServer(clock=lambda: now[0])
    core.handle(event(MemberEventKind.JOINED, "a", MemberStatus.ALIVE))
    core.handle(event(MemberEventKind.JOINED, "b", MemberStatus.ALIVE))
    now[0] = 2000.0
    core.handle(event(MemberEventKind.SUSPECT, "b", MemberStatus.SUSPECT))  # still online
    assert core.online() == ["a", "b"]
    core.handle(event(MemberEventKind.DEAD, "b", MemberStatus.DEAD))
    record = core.record("b")
    assert record is not None
    assert record.status is NodeStatus.OFFLINE
    assert record.last_change == dt.datetime.fromtimestamp(2000.0, tz=dt.UTC)
    assert [r.node for r in core.records()] == ["a", "b"]  # offline nodes stay listed
    core.handle(event(MemberEventKind.REAPED, "b", MemberStatus.DEAD))
    assert [r.node for r in core.records()] == ["a"]


async def test_a_crashing_or_stuck_follower_cannot_hurt_the_server() -> None:
    """Regression for the original's fault 1: followers crashed the core server."""
    core = CoreServer()
    seen: list[NodeUpdate] = []

    def bad(update: NodeUpdate) -> None:
        raise RuntimeError("follower bug")

    core.add_callback(bad)
    core.add_callback(seen.append)
    async with core.alert_me(maxlen=2) as stuck, core.alert_me() as live:
        for i in range(5):
            core.handle(event(MemberEventKind.JOINED, f"n{i}", MemberStatus.ALIVE))
            core.handle(event(MemberEventKind.DEAD, f"n{i}", MemberStatus.DEAD))
        assert len(seen) == 10
        assert core.stats().callback_errors == 10
        with trio.fail_after(1):
            assert [await live.receive() for _ in range(2)] == [
                NodeUpdate("n0", NodeStatus.ONLINE),
                NodeUpdate("n0", NodeStatus.OFFLINE),
            ]
            assert [await stuck.receive() for _ in range(2)] == [
                NodeUpdate("n4", NodeStatus.ONLINE),
                NodeUpdate("n4", NodeStatus.OFFLINE),
            ]
    assert core.stats().alerts.dropped == 8
    assert core.online() == []  # the server still reports the right state


def test_only_online_offline_flips_notify() -> None:
    core = CoreServer()
    seen: list[NodeUpdate] = []
    core.add_callback(seen.append)
    core.handle(event(MemberEventKind.JOINED, "a", MemberStatus.ALIVE))
    core.handle(event(MemberEventKind.SUSPECT, "a", MemberStatus.SUSPECT))
    core.handle(event(MemberEventKind.ALIVE, "a", MemberStatus.ALIVE))
    core.handle(event(MemberEventKind.UPDATED, "a", MemberStatus.ALIVE))
    core.handle(event(MemberEventKind.LEFT, "a", MemberStatus.LEFT))
    assert seen == [NodeUpdate("a", NodeStatus.ONLINE), NodeUpdate("a", NodeStatus.OFFLINE)]
