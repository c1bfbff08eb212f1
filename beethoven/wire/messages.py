"""Every message Beethoven puts on the wire, as frozen attrs classes.

Each class has a small integer ``TYPE`` code. The list is append-only: a code is
never reused or renumbered, a field is never removed or reordered, and new fields
are only ever appended with a default (old peers then ignore nothing they need,
new peers fill the default). The byte layout is in ``specs/wire.md``; the codec is
``beethoven.wire.codec``.

Field types are limited to what the codec encodes strictly: ``int``, ``bool``,
``str``, ``bytes``, ``float``, `Address`, other records defined here, and
``tuple[X, ...]`` of those.

Integer timestamps are HLC values (``wall_ms << 16 | logical``); the wire never
carries float seconds.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from beethoven.address import Address

__all__ = [
    "MESSAGE_TYPES",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "Ack",
    "Address",
    "Alive",
    "BeaconHello",
    "BeaconMember",
    "BeaconReply",
    "Dead",
    "ErrorReply",
    "IndirectPing",
    "Leave",
    "MemberDigest",
    "MemberState",
    "MemberStatus",
    "Message",
    "Nack",
    "Ping",
    "PushPullReply",
    "PushPullRequest",
    "Query",
    "QueryReply",
    "StoreDelta",
    "StoreSyncReply",
    "StoreSyncRequest",
    "Suspect",
    "UserMessage",
]

#: Lowest and highest protocol version this implementation speaks.
PROTOCOL_MIN = 1
PROTOCOL_MAX = 1


class MemberStatus:
    """Member states as small integers, in precedence rank order (higher wins)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# --- records nested inside messages -------------------------------------------------


@attrs.frozen
class MemberDigest:
    """What one side knows about one member, without the bulky parts."""

    name: str
    generation: int
    incarnation: int
    status: int


@attrs.frozen
class MemberState:
    """Everything one side knows about one member (push-pull entries)."""

    name: str
    addr: Address
    generation: int
    incarnation: int
    status: int
    meta: bytes = b""
    last_change: int = 0
    vmin: int = PROTOCOL_MIN
    vmax: int = PROTOCOL_MAX


@attrs.frozen
class BeaconMember:
    """A live member a beacon offers to join through."""

    name: str
    addr: Address


# --- messages -------------------------------------------------------------------------


@attrs.frozen
class Ping:
    """Direct probe. *target* names the intended node so a misdirected ping is ignored."""

    TYPE: ClassVar[int] = 1
    seq: int
    target: str
    source: str


@attrs.frozen
class Ack:
    """Answer to a `Ping` (or relayed answer to an `IndirectPing`) with the same *seq*."""

    TYPE: ClassVar[int] = 2
    seq: int
    source: str


@attrs.frozen
class Nack:
    """A relay's word that the target of an `IndirectPing` did not answer in time."""

    TYPE: ClassVar[int] = 3
    seq: int
    source: str


@attrs.frozen
class IndirectPing:
    """Ask a relay to probe *target* at *target_addr* and relay the ack (SWIM ping-req)."""

    TYPE: ClassVar[int] = 4
    seq: int
    target: str
    target_addr: Address
    source: str
    want_nack: bool = True


@attrs.frozen
class Alive:
    """A member is alive at this (generation, incarnation); carries its address and metadata."""

    TYPE: ClassVar[int] = 5
    name: str
    generation: int
    incarnation: int
    addr: Address
    meta: bytes = b""
    vmin: int = PROTOCOL_MIN
    vmax: int = PROTOCOL_MAX


@attrs.frozen
class Suspect:
    """*accuser* suspects member *name* at this (generation, incarnation)."""

    TYPE: ClassVar[int] = 6
    name: str
    generation: int
    incarnation: int
    accuser: str


@attrs.frozen
class Dead:
    """*accuser* declares member *name* dead at this (generation, incarnation)."""

    TYPE: ClassVar[int] = 7
    name: str
    generation: int
    incarnation: int
    accuser: str


@attrs.frozen
class Leave:
    """Member *name* leaves the cluster gracefully (distinct from dead)."""

    TYPE: ClassVar[int] = 8
    name: str
    generation: int
    incarnation: int


@attrs.frozen
class PushPullRequest:
    """Anti-entropy / join opener over TCP: the sender's digest first.

    *digest* may be empty with *root* set: the peer then answers with its own root
    and, only when the roots differ, the exchange continues with full digests.
    In the second round *digest* lists the entries the sender wants and *members*
    carries the entries the peer lacks (always including the sender's own state);
    a join carries just the joiner's own state in *members*.
    """

    TYPE: ClassVar[int] = 9
    cluster: str
    sender: str
    join: bool
    root: bytes
    digest: tuple[MemberDigest, ...] = ()
    store_digest: bytes = b""
    members: tuple[MemberState, ...] = ()


@attrs.frozen
class PushPullReply:
    """Answer to `PushPullRequest`: entries the requester lacks, and the replier's digest."""

    TYPE: ClassVar[int] = 10
    cluster: str
    sender: str
    root: bytes
    digest: tuple[MemberDigest, ...] = ()
    members: tuple[MemberState, ...] = ()
    store_digest: bytes = b""
    store_delta: bytes = b""


@attrs.frozen
class StoreDelta:
    """A store delta (encoded by ``beethoven_store``) riding on gossip."""

    TYPE: ClassVar[int] = 11
    payload: bytes


@attrs.frozen
class UserMessage:
    """Opaque application payload sent to one member or gossiped."""

    TYPE: ClassVar[int] = 12
    payload: bytes


@attrs.frozen
class BeaconHello:
    """SeekChat opener sent by a Locator to a beacon (TCP, first frame)."""

    TYPE: ClassVar[int] = 13
    cluster: str
    sender: str
    vmin: int = PROTOCOL_MIN
    vmax: int = PROTOCOL_MAX


@attrs.frozen
class BeaconReply:
    """A beacon's answer: its identity and a few live members to join through."""

    TYPE: ClassVar[int] = 14
    cluster: str
    name: str
    addr: Address
    members: tuple[BeaconMember, ...] = ()
    vmin: int = PROTOCOL_MIN
    vmax: int = PROTOCOL_MAX


@attrs.frozen
class ErrorReply:
    """A refusal with a machine-readable *code* and a short human *reason*."""

    TYPE: ClassVar[int] = 15
    code: int
    reason: str


@attrs.frozen
class StoreSyncRequest:
    """Store anti-entropy opener over TCP: the requester's store digest."""

    TYPE: ClassVar[int] = 16
    digest: bytes


@attrs.frozen
class StoreSyncReply:
    """Store anti-entropy answer: a delta for the requester and the replier's digest."""

    TYPE: ClassVar[int] = 17
    delta: bytes
    digest: bytes = b""
    more: bool = False


@attrs.frozen
class Query:
    """An operator's question to a running node (CLI): *kind* is members, roles or status."""

    TYPE: ClassVar[int] = 18
    kind: str


@attrs.frozen
class QueryReply:
    """The answer to a `Query`: a UTF-8 JSON document."""

    TYPE: ClassVar[int] = 19
    body: bytes


Message = (
    Ping
    | Ack
    | Nack
    | IndirectPing
    | Alive
    | Suspect
    | Dead
    | Leave
    | PushPullRequest
    | PushPullReply
    | StoreDelta
    | UserMessage
    | BeaconHello
    | BeaconReply
    | ErrorReply
    | StoreSyncRequest
    | StoreSyncReply
    | Query
    | QueryReply
)

#: Type code -> message class. Append-only; see the module docstring.
MESSAGE_TYPES: dict[int, type] = {
    cls.TYPE: cls
    for cls in (
        Ping,
        Ack,
        Nack,
        IndirectPing,
        Alive,
        Suspect,
        Dead,
        Leave,
        PushPullRequest,
        PushPullReply,
        StoreDelta,
        UserMessage,
        BeaconHello,
        BeaconReply,
        ErrorReply,
        StoreSyncRequest,
        StoreSyncReply,
        Query,
        QueryReply,
    )
}
