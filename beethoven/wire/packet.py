"""UDP datagrams: messages packed into compounds, sealed, and checked on the way in.

`PacketCodec` is sans-I/O: ``pack`` turns messages into datagrams of at most
``max_payload`` bytes, ``unpack`` turns one received datagram into messages and
never raises — every defect is dropped, counted by reason in `WireStats` and logged
at DEBUG with the peer address. Layout (``specs/wire.md`` §2)::

    open:    magic(2) version(1) flags(1)=0 | compound
    sealed:  magic(2) version(1) flags(1)=1 | key id(4) salt(16) counter(8) ts_ms(8)
             | ChaCha20-Poly1305(compound) | tag(16)

A sealed datagram's header (the first 40 bytes) is the AEAD associated data.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence

import attrs
from cryptography.exceptions import InvalidTag

from beethoven.address import Address
from beethoven.errors import CodecError
from beethoven.wire.codec import decode_compound, encode
from beethoven.wire.messages import PROTOCOL_MAX, PROTOCOL_MIN, Message
from beethoven.wire.security import (
    DEFAULT_MAX_AGE_MS,
    PACKET_INFO,
    TAG_SIZE,
    DerivedKeys,
    Keyring,
    Sealer,
    SessionTable,
    nonce,
    verifies,
)

__all__ = [
    "FLAG_SEALED",
    "MAGIC",
    "OPEN_HEADER_SIZE",
    "SEALED_HEADER_SIZE",
    "SEALED_OVERHEAD",
    "PacketCodec",
    "WireStats",
    "wall_clock_ms",
]

logger = logging.getLogger(__name__)

MAGIC = b"\xbe\xe7"
"""First two bytes of every datagram and frame body."""
FLAG_SEALED = 0x01
"""Flags bit 0: the rest is sealed (key id, salt, counter, timestamp, ciphertext, tag)."""
OPEN_HEADER_SIZE = 4
"""Header bytes of an open (unsealed) datagram."""
SEALED_HEADER_SIZE = 40
"""Header bytes of a sealed datagram (also its associated data)."""
SEALED_OVERHEAD = SEALED_HEADER_SIZE + TAG_SIZE
"""Bytes a sealed datagram adds around its compound."""

_SEALED_FIELDS = struct.Struct(">4s16sQQ")  # key id, salt, counter, timestamp


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch (the sender timestamp in sealed headers)."""
    return time.time_ns() // 1_000_000


@attrs.frozen
class WireStats:
    """Counters of one `PacketCodec` (monotonic since it was made).

    Outbound: ``packets_out``, ``messages_out``, ``bytes_out``, and
    ``oversized_out`` (messages too big for one datagram, dropped by `pack`).
    Inbound accepted: ``packets_in``, ``messages_in``, ``bytes_in``.
    Inbound datagrams dropped, one counter per reason (see ``specs/wire.md`` §4):
    ``truncated``, ``oversized``, ``bad_magic``, ``bad_version``, ``bad_flags``,
    ``unsealed`` (open datagram while a key is required), ``sealed_no_key`` (sealed
    datagram while no keyring is configured), ``unknown_key``, ``bad_tag``,
    ``stale`` (timestamp outside the age limit, or at/below the eviction floor),
    ``replay``, ``decode_error``, ``internal``. ``unknown_type`` counts *messages*
    of an unknown type skipped inside otherwise accepted datagrams.
    """

    packets_out: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    oversized_out: int = 0
    packets_in: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    truncated: int = 0
    oversized: int = 0
    bad_magic: int = 0
    bad_version: int = 0
    bad_flags: int = 0
    unsealed: int = 0
    sealed_no_key: int = 0
    unknown_key: int = 0
    bad_tag: int = 0
    stale: int = 0
    replay: int = 0
    decode_error: int = 0
    internal: int = 0
    unknown_type: int = 0

    @property
    def dropped(self) -> int:
        """Inbound datagrams dropped, all reasons together."""
        return sum(getattr(self, name) for name in DROP_REASONS)


#: The `WireStats` fields that count dropped inbound datagrams.
DROP_REASONS: tuple[str, ...] = (
    "truncated",
    "oversized",
    "bad_magic",
    "bad_version",
    "bad_flags",
    "unsealed",
    "sealed_no_key",
    "unknown_key",
    "bad_tag",
    "stale",
    "replay",
    "decode_error",
    "internal",
)


class PacketCodec:
    """Packs messages into (sealed) datagrams and checks datagrams coming in.

    One instance per node: it holds the sender session (salt and counter) and the
    replay windows of the peers it hears from.

    Args:
        keyring: the cluster keys; ``None`` runs an open cluster (no authentication,
            no encryption; a WARNING is logged once here).
        max_payload: the largest datagram in bytes, both ways; larger ones are dropped
            as ``oversized``.
        clock: wall clock in milliseconds since the epoch (sender timestamps and the
            age check).
        max_age_ms: largest accepted |our clock - sender timestamp| of a sealed
            datagram; must exceed clock skew plus transit time.
        salt: fixed sender salt, for test vectors only.
        counter: first sender counter, for test vectors only.
        sessions: the most peer sessions whose replay windows are kept.
    """

    def __init__(
        self,
        keyring: Keyring | None,
        *,
        max_payload: int = 1400,
        clock: Callable[[], int] = wall_clock_ms,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
        salt: bytes | None = None,
        counter: int = 0,
        sessions: int = 16384,
    ) -> None:
        overhead = SEALED_OVERHEAD if keyring is not None else OPEN_HEADER_SIZE
        if max_payload <= overhead:
            raise ValueError(f"max_payload must exceed the {overhead}-byte packet overhead")
        self._keyring = keyring
        self._max_payload = max_payload
        self._budget = max_payload - overhead
        self._clock = clock
        self._max_age = max_age_ms
        self._sealer = Sealer(PACKET_INFO, salt=salt, counter=counter)
        self._opened = DerivedKeys(PACKET_INFO)
        self._sessions = SessionTable(size=sessions)
        self._skew: int | None = None  # offset of an authentic stale datagram, for open()
        self._n: dict[str, int] = dict.fromkeys(attrs.fields_dict(WireStats), 0)
        if keyring is None:
            logger.warning(
                "no cluster key configured: UDP packets are neither authenticated nor "
                "encrypted, anyone who can reach this port can join (open cluster)"
            )

    @property
    def keyring(self) -> Keyring | None:
        """The keyring in use (``None`` for an open cluster)."""
        return self._keyring

    @property
    def max_payload(self) -> int:
        """The largest datagram in bytes."""
        return self._max_payload

    @property
    def budget(self) -> int:
        """Bytes of compound (encoded messages) that fit in one datagram."""
        return self._budget

    def stats(self) -> WireStats:
        """Return a snapshot of the counters."""
        return WireStats(**self._n)

    # --- outbound ---------------------------------------------------------------------

    def pack(self, messages: Sequence[Message], *, version: int = PROTOCOL_MIN) -> list[bytes]:
        """Pack *messages* into as few datagrams as first-fit allows, in order.

        Each message goes into the first datagram with room for it, so messages keep
        their relative order inside a datagram. A message that cannot fit even in an
        empty datagram is dropped, counted (``oversized_out``) and logged at DEBUG.

        Args:
            messages: the messages to send to one peer.
            version: the protocol version to write (the highest both sides speak).

        Returns:
            Datagrams, each at most ``max_payload`` bytes.

        Raises:
            CodecError: a message cannot be encoded (a field of the wrong type), or
                *version* is outside what this implementation speaks.
        """
        if not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
            raise CodecError(f"cannot write protocol version {version}")
        budget = self._budget
        bins: list[list[bytes]] = []
        room: list[int] = []
        for msg in messages:
            data = encode(msg)
            size = len(data)
            if size > budget:
                self._n["oversized_out"] += 1
                logger.debug(
                    "dropped outbound %s: %d bytes exceed the %d-byte datagram budget",
                    type(msg).__name__,
                    size,
                    budget,
                )
                continue
            for i, free in enumerate(room):
                if size <= free:
                    bins[i].append(data)
                    room[i] = free - size
                    break
            else:
                bins.append([data])
                room.append(budget - size)
        out = [self.seal(b"".join(parts), version=version) for parts in bins]
        self._n["messages_out"] += sum(len(parts) for parts in bins)
        return out

    def seal(self, body: bytes, *, version: int = PROTOCOL_MIN) -> bytes:
        """Wrap one compound into a datagram (sealed when a keyring is set).

        Args:
            body: an encoded compound, at most `budget` bytes.
            version: the protocol version byte to write.

        Returns:
            The datagram.

        Raises:
            CodecError: *body* exceeds the budget.
        """
        if len(body) > self._budget:
            raise CodecError(
                f"compound of {len(body)} bytes exceeds the {self._budget}-byte budget"
            )
        keyring = self._keyring
        if keyring is None:
            datagram = MAGIC + bytes((version, 0)) + body
        else:
            key = keyring.primary
            counter, aead = self._sealer.next(key)
            header = (
                MAGIC
                + bytes((version, FLAG_SEALED))
                + _SEALED_FIELDS.pack(keyring.primary_id, self._sealer.salt, counter, self._clock())
            )
            datagram = header + aead.encrypt(nonce(counter), body, header)
        self._n["packets_out"] += 1
        self._n["bytes_out"] += len(datagram)
        return datagram

    # --- inbound ----------------------------------------------------------------------

    def unpack(self, data: bytes, source: Address) -> list[Message]:
        """Check and decode one received datagram. Never raises.

        Args:
            data: the datagram as received.
            source: the peer address it came from (for the debug log).

        Returns:
            The messages it carries (unknown types skipped and counted); an empty list
            when the datagram was dropped.
        """
        try:
            reason, detail, messages = self._unpack(data)
        except Exception:  # a bug here must not kill the receive loop
            self._n["internal"] += 1
            logger.debug("dropped datagram from %s: internal error", source, exc_info=True)
            return []
        if reason is not None:
            self._n[reason] += 1
            logger.debug(
                "dropped datagram from %s (%d bytes): %s%s",
                source,
                len(data),
                reason,
                detail,
            )
            skew, self._skew = self._skew, None
            if skew is not None:
                logger.warning(
                    "sealed datagrams from %s are refused: they are authentic, but the "
                    "sender's clock is %+.1f s off this node's, beyond the %.0f s limit; "
                    "fix the clocks (NTP)",
                    source,
                    skew / 1000,
                    self._max_age / 1000,
                )
            return []
        return messages

    def _unpack(self, data: bytes) -> tuple[str | None, str, list[Message]]:
        size = len(data)
        if size > self._max_payload:
            return "oversized", f" > {self._max_payload}", []
        if size < OPEN_HEADER_SIZE:
            return "truncated", "", []
        if data[:2] != MAGIC:
            return "bad_magic", "", []
        version = data[2]
        if not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
            return "bad_version", f" {version} outside {PROTOCOL_MIN}..{PROTOCOL_MAX}", []
        flags = data[3]
        if flags & ~FLAG_SEALED:
            return "bad_flags", f" {flags:#04x}", []
        keyring = self._keyring
        if flags & FLAG_SEALED:
            if keyring is None:
                return "sealed_no_key", "", []
            if size <= SEALED_OVERHEAD:
                return "truncated", "", []
            kid, salt, counter, ts = _SEALED_FIELDS.unpack_from(data, OPEN_HEADER_SIZE)
            key = keyring.get(kid)
            if key is None:
                return "unknown_key", f" {kid.hex()}", []
            now = self._clock()
            if abs(now - ts) > self._max_age:
                if keyring.skew_notice.due(now) and verifies(
                    self._opened.get(key, salt), counter, data, SEALED_HEADER_SIZE
                ):
                    keyring.skew_notice.tell(now)
                    self._skew = ts - now
                return "stale", f" timestamp {ts}", []
            sessions = self._sessions
            refused = sessions.check(salt, counter, ts)
            if refused is not None:
                return refused, f" counter {counter} timestamp {ts}", []
            try:
                body = self._opened.get(key, salt).decrypt(
                    nonce(counter), data[SEALED_HEADER_SIZE:], data[:SEALED_HEADER_SIZE]
                )
            except InvalidTag:
                return "bad_tag", "", []
            sessions.commit(salt, counter, ts)
        else:
            if keyring is not None:
                return "unsealed", "", []
            body = data[OPEN_HEADER_SIZE:]
        try:
            messages, skipped = decode_compound(body)
        except CodecError as exc:
            return "decode_error", f" {exc}", []
        n = self._n
        if skipped:
            n["unknown_type"] += skipped
            logger.debug("skipped %d message(s) of unknown type", skipped)
        n["packets_in"] += 1
        n["messages_in"] += len(messages)
        n["bytes_in"] += size
        return None, "", messages
