"""The contract between a sans-I/O membership core and whatever drives it.

The core (``swim.py``) never touches sockets, trio or a wall clock. A driver — the
trio runner (``runner.py``), the simulator (``beethoven.sim``) or a unit test — feeds
it inputs and carries out the effects it returns, in order:

* inputs are method calls that take ``now`` (seconds, float, from the driver's clock:
  ``trio.current_time()`` in production, virtual time in the simulator);
* timers are not effects: after every call the driver asks ``next_deadline()`` and
  calls ``handle_timeout(now)`` once ``now >= next_deadline()``;
* effects are the records below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from beethoven.address import Address
from beethoven.wire.messages import Message

__all__ = [
    "Effect",
    "MemberEvent",
    "MemberEventKind",
    "MemberInfo",
    "MembershipCore",
    "MembershipStats",
    "SendDatagram",
    "StreamRequest",
]


class MemberEventKind:
    """Kinds of `MemberEvent`, as strings (stable, printable)."""

    JOINED = "joined"
    UPDATED = "updated"
    SUSPECT = "suspect"
    ALIVE = "alive"  # a suspect member was refuted / confirmed alive again
    DEAD = "dead"
    LEFT = "left"
    REAPED = "reaped"


@attrs.frozen
class MemberInfo:
    """A read-only snapshot of one member as the local node sees it."""

    name: str
    addr: Address
    generation: int
    incarnation: int
    status: int  # beethoven.wire.messages.MemberStatus
    meta: bytes
    last_change: float  # driver time of the last status change


@attrs.frozen
class SendDatagram:
    """Send these messages to *to* in one UDP datagram (the core keeps it within budget)."""

    to: Address
    messages: tuple[Message, ...]


@attrs.frozen
class StreamRequest:
    """Open a TCP stream to *to*, send *message*, read one reply within *timeout* seconds.

    The driver reports the outcome with ``core.handle_stream_reply(now, token, reply)``
    where *reply* is the decoded answer, or ``None`` on any failure or timeout.
    """

    token: int
    to: Address
    message: Message
    timeout: float


@attrs.frozen
class MemberEvent:
    """A change the application should hear about."""

    kind: str  # a MemberEventKind value
    member: MemberInfo


Effect = SendDatagram | StreamRequest | MemberEvent


@attrs.frozen
class MembershipStats:
    """Counters of a membership core since it was created.

    Attributes:
        messages_sent: messages sent (datagrams' contents and stream messages) by type name.
        bytes_sent: their encoded bytes by type name (as measured by the core's ``size_of``).
        messages_received: datagram messages received by type name.
        probes: probes started.
        probe_failures: probes that ended without any ack.
        indirect_probes: indirect ping requests sent.
        tcp_fallback_acks: probes saved by the TCP fallback ping.
        suspicions_raised: suspicions this node raised after a failed probe.
        suspicions_refuted: accusations about this node it refuted.
        deaths_declared: suspicions that expired here into a death.
        pushpulls: anti-entropy exchanges started (joins excluded).
        pushpull_differing: of those, how many found differing roots.
        joins_ok: join push-pulls that succeeded.
        joins_failed: join push-pulls that failed.
        dropped: messages ignored (misdirected, oversized metadata, unknown type).
        stalls: timers that fired late enough to prove the local loop stalled.
        inconclusive_probes: failed probes not turned into a suspicion because no
            relay answered either (local health on).
        name_conflicts: claims refused because their name is held by a live member
            at another address (specs/membership.md §Name ownership), plus joins
            of this node refused that way.
        local_health: current Lifeguard local health score (0 = healthy).
        members: members in the table, self and dead ones included.
        live: members alive or suspect, self included.
    """

    messages_sent: dict[str, int]
    bytes_sent: dict[str, int]
    messages_received: dict[str, int]
    probes: int
    probe_failures: int
    indirect_probes: int
    tcp_fallback_acks: int
    suspicions_raised: int
    suspicions_refuted: int
    deaths_declared: int
    pushpulls: int
    pushpull_differing: int
    joins_ok: int
    joins_failed: int
    dropped: int
    stalls: int
    inconclusive_probes: int
    name_conflicts: int
    local_health: int
    members: int
    live: int


class MembershipCore(Protocol):
    """What a driver may call on a membership core. Every call returns effects."""

    @property
    def name(self) -> str:
        """This node's name."""

    @property
    def name_conflict(self) -> MemberInfo | None:
        """The live member holding this node's name at another address, found on join.

        Set when a join reply shows the name alive or suspect at another address
        (another life); the node must not take part then. ``None`` otherwise.
        """

    def start(self, now: float) -> list[Effect]:
        """Begin operating (schedules the first probe and gossip)."""

    def join(self, now: float, seeds: Sequence[Address]) -> list[Effect]:
        """Push-pull with each seed address to join their cluster."""

    def leave(self, now: float) -> list[Effect]:
        """Announce a graceful leave; keep running until the driver stops."""

    def handle_datagram(
        self, now: float, source: Address, messages: Sequence[Message]
    ) -> list[Effect]:
        """Process the messages of one received UDP datagram."""

    def handle_stream(
        self, now: float, source: Address, message: Message
    ) -> tuple[Message | None, list[Effect]]:
        """Answer one request that arrived on an inbound TCP stream."""

    def handle_stream_reply(self, now: float, token: int, reply: Message | None) -> list[Effect]:
        """Report the outcome of a `StreamRequest` effect."""

    def next_deadline(self) -> float:
        """The driver time at which `handle_timeout` must next be called (may be inf)."""

    def handle_timeout(self, now: float) -> list[Effect]:
        """Run every timer due at or before *now*."""

    def members(self) -> list[MemberInfo]:
        """Snapshot of every known member, self included."""

    def update_meta(self, now: float, meta: bytes) -> list[Effect]:
        """Replace this node's metadata (gossiped with a new incarnation)."""

    def stats(self) -> MembershipStats:
        """Counters since creation, as a frozen record."""
