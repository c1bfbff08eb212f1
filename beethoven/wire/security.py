"""Cluster keys and the AEAD construction shared by UDP packets and TCP frames.

What this module owns (the full construction, with the nonce arithmetic, is in
``specs/wire.md`` §5):

* `Keyring`: one primary key (seals) and any number of secondary keys (open), each a
  32-byte secret named on the wire by a 4-byte key id derived from it. Rotation is
  ``install`` everywhere, then ``use`` everywhere, then ``remove`` everywhere.
* `Sealer`: one sender session. It draws a random 16-byte *salt* once; the AEAD key
  of its packets is ``HKDF-SHA256(cluster key, salt, info)`` and the 96-bit nonce is a
  counter, so a nonce never repeats under a derived key by construction.
* `DerivedKeys`: a bounded LRU of derived ChaCha20-Poly1305 contexts.
* `ReplayWindow` / `SessionTable`: per-sender sliding 1024-counter window in a
  bounded table, plus a floor that keeps eviction from reopening a replay.
* `StreamGuard`: the salts of recently opened TCP streams, so a first frame replayed
  on another connection is refused.

Keys are secrets: nothing here logs them or puts them in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from beethoven.errors import ConfigError, SecurityError

__all__ = [
    "COUNTER_LIMIT",
    "DEFAULT_MAX_AGE_MS",
    "FRAME_INFO",
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "PACKET_INFO",
    "SALT_SIZE",
    "TAG_SIZE",
    "WINDOW_SIZE",
    "DerivedKeys",
    "Keyring",
    "ReplayWindow",
    "Sealer",
    "SessionTable",
    "StreamGuard",
    "derive_key",
    "generate_key",
    "key_from_string",
    "key_id",
    "key_to_string",
    "nonce",
]

KEY_SIZE = 32
"""Length of a cluster key in bytes."""
KEY_ID_SIZE = 4
"""Length of a key id on the wire."""
SALT_SIZE = 16
"""Length of a sender session salt."""
TAG_SIZE = 16
"""Length of the Poly1305 tag."""
WINDOW_SIZE = 1024
"""Counters a receiver remembers behind the highest one seen per sender session."""
COUNTER_LIMIT = 2**64
"""Counters are u64 on the wire; a session that reaches this picks a new salt."""
DEFAULT_MAX_AGE_MS = 30_000
"""Default largest accepted |receiver clock - sender timestamp|, milliseconds."""

SKEW_NOTICE_INTERVAL_MS = 60_000
"""Milliseconds between two WARNINGs about authentic sealed packets from a far clock."""

PACKET_INFO = b"beethoven/1 packet"
"""HKDF info string for UDP packet keys."""
FRAME_INFO = b"beethoven/1 frame"
"""HKDF info string for TCP frame keys (distinct, so a packet never opens as a frame)."""

_KEY_ID_LABEL = b"beethoven/1 key id\x00"
_NONCE_PAD = b"\x00\x00\x00\x00"
_U64 = struct.Struct(">Q")


def generate_key() -> bytes:
    """Return a fresh random 32-byte cluster key (from the OS CSPRNG)."""
    return secrets.token_bytes(KEY_SIZE)


def key_id(key: bytes) -> bytes:
    """Return the 4-byte wire id of *key*: the first 4 bytes of SHA-256(label || key).

    The label is the 19 bytes ``beethoven/1 key id`` followed by one zero byte.
    """
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_SIZE]


def key_to_string(key: bytes) -> str:
    """Return the text form of *key* (standard base64, 44 characters) for config files.

    Raises:
        ConfigError: *key* is not 32 bytes.
    """
    _check_key(key)
    return base64.b64encode(key).decode("ascii")


def key_from_string(text: str) -> bytes:
    """Parse the text form of a key (standard base64 of 32 bytes; whitespace ignored).

    Raises:
        ConfigError: the text is not base64 or does not hold exactly 32 bytes.
    """
    cleaned = "".join(text.split())
    try:
        key = base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigError("cluster key: not valid base64 text") from None
    if len(key) != KEY_SIZE:
        raise ConfigError(f"cluster key: expected {KEY_SIZE} bytes, got {len(key)}")
    return key


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ConfigError(f"cluster key: expected {KEY_SIZE} bytes, got {size}")
    return key


def derive_key(key: bytes, salt: bytes, info: bytes) -> bytes:
    """Return ``HKDF-SHA256(ikm=key, salt=salt, info=info, length=32)``."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(key)


def nonce(counter: int) -> bytes:
    """Return the 96-bit nonce for *counter*: four zero bytes, then the u64 big-endian."""
    return _NONCE_PAD + _U64.pack(counter)


def verifies(aead: ChaCha20Poly1305, counter: int, sealed: bytes, header_size: int) -> bool:
    """Whether *sealed* (header, then ciphertext and tag) authenticates under *aead*.

    For checks that must not change any replay state (see `SkewNotice`).
    """
    try:
        aead.decrypt(nonce(counter), sealed[header_size:], sealed[:header_size])
    except InvalidTag:
        return False
    return True


class Keyring:
    """The cluster keys of one node: a primary that seals, secondaries that only open.

    One `Keyring` is shared by a node's packet codec and all its frame channels, so a
    rotation step applies to all of them at once. Keys are named on the wire by
    `key_id`; two installed keys never share an id.

    Rotation without loss: ``install(new)`` on every node, then ``use(new)`` on every
    node, then ``remove(old)`` on every node. At every moment every node can open what
    any other node seals.

    Args:
        primary: the 32-byte key that seals everything this node sends.
        secondaries: further 32-byte keys accepted when opening.

    Raises:
        ConfigError: a key is not 32 bytes, or two keys share a key id.
    """

    def __init__(self, primary: bytes, secondaries: Sequence[bytes] = ()) -> None:
        self._keys: dict[bytes, bytes] = {}
        self._primary = b""
        self._primary_id = b""
        self._stream_guard: StreamGuard | None = None
        self._skew_notice: SkewNotice | None = None
        self.install(primary)
        self._set_primary(primary)
        for key in secondaries:
            self.install(key)

    @classmethod
    def from_strings(cls, keys: str | Sequence[str]) -> Keyring:
        """Build a keyring from text keys (`key_to_string` form); the first is primary.

        Args:
            keys: one key, or a non-empty sequence of keys (primary first), as in the
                ``keys`` configuration option.

        Raises:
            ConfigError: no key, or a key that does not parse.
        """
        texts = [keys] if isinstance(keys, str) else list(keys)
        if not texts:
            raise ConfigError("cluster key: at least one key is needed")
        parsed = [key_from_string(t) for t in texts]
        return cls(parsed[0], parsed[1:])

    def _set_primary(self, key: bytes) -> None:
        self._primary = key
        self._primary_id = key_id(key)

    @property
    def primary(self) -> bytes:
        """The key that seals outgoing packets and frames."""
        return self._primary

    @property
    def primary_id(self) -> bytes:
        """The 4-byte wire id of the primary key."""
        return self._primary_id

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every installed key, primary first."""
        return (self._primary, *(k for k in self._keys.values() if k != self._primary))

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """The wire ids of `keys`, in the same order."""
        return tuple(key_id(k) for k in self.keys)

    def get(self, kid: bytes) -> bytes | None:
        """Return the installed key with wire id *kid*, or ``None``."""
        return self._keys.get(kid)

    def install(self, key: bytes) -> None:
        """Accept *key* for opening (no-op when already installed).

        Raises:
            ConfigError: *key* is not 32 bytes or its id collides with another key.
        """
        _check_key(key)
        kid = key_id(key)
        other = self._keys.get(kid)
        if other is not None and other != key:
            raise ConfigError("cluster key: key id collides with an installed key")
        self._keys[kid] = key

    def use(self, key: bytes) -> None:
        """Make the installed *key* the primary: everything sent from now is sealed with it.

        Raises:
            ConfigError: *key* is not installed (install it on every node first).
        """
        _check_key(key)
        if self._keys.get(key_id(key)) != key:
            raise ConfigError("cluster key: use() of a key that is not installed")
        self._set_primary(key)

    def remove(self, key: bytes) -> None:
        """Stop accepting *key* (no-op when not installed).

        Raises:
            ConfigError: *key* is the primary (``use`` another key first).
        """
        _check_key(key)
        if key == self._primary:
            raise ConfigError("cluster key: cannot remove the primary key")
        kid = key_id(key)
        if self._keys.get(kid) == key:
            del self._keys[kid]

    @property
    def stream_guard(self) -> StreamGuard:
        """The node-wide memory of recently opened TCP stream sessions (see `StreamGuard`)."""
        if self._stream_guard is None:
            self._stream_guard = StreamGuard()
        return self._stream_guard

    @property
    def skew_notice(self) -> SkewNotice:
        """The node-wide rate limit of clock-skew warnings (see `SkewNotice`)."""
        if self._skew_notice is None:
            self._skew_notice = SkewNotice()
        return self._skew_notice

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._keys.get(key_id(key)) == key

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys)

    def __repr__(self) -> str:
        ids = ", ".join(kid.hex() for kid in self.key_ids)
        return f"Keyring(primary={self._primary_id.hex()}, ids=[{ids}])"


class DerivedKeys:
    """A bounded LRU of AEAD contexts for (cluster key, salt) under one HKDF info.

    Args:
        info: the HKDF info string (`PACKET_INFO` or `FRAME_INFO`).
        size: how many contexts to keep.
    """

    def __init__(self, info: bytes, *, size: int = 4096) -> None:
        self._info = info
        self._size = size
        self._cache: OrderedDict[tuple[bytes, bytes], ChaCha20Poly1305] = OrderedDict()

    def get(self, key: bytes, salt: bytes) -> ChaCha20Poly1305:
        """Return the AEAD for ``HKDF(key, salt, info)``, deriving it on a miss."""
        index = (key, salt)
        aead = self._cache.get(index)
        if aead is None:
            aead = ChaCha20Poly1305(derive_key(key, salt, self._info))
            self._cache[index] = aead
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return aead

    def __len__(self) -> int:
        return len(self._cache)


class Sealer:
    """One sender session: a random salt and a counter that never repeats under it.

    Args:
        info: the HKDF info string (`PACKET_INFO` or `FRAME_INFO`).
        salt: a fixed 16-byte salt, for test vectors only (never reuse a salt with the
            same key in production); random when ``None``.
        counter: the first counter value (test vectors only).
    """

    def __init__(self, info: bytes, *, salt: bytes | None = None, counter: int = 0) -> None:
        if salt is not None and len(salt) != SALT_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes")
        if not 0 <= counter < COUNTER_LIMIT:
            raise ValueError("counter out of range")
        self._info = info
        self.salt = salt if salt is not None else secrets.token_bytes(SALT_SIZE)
        self.counter = counter
        self._aead: ChaCha20Poly1305 | None = None
        self._aead_key = b""

    def next(self, key: bytes) -> tuple[int, ChaCha20Poly1305]:
        """Take the next counter value and the AEAD to seal with under *key*."""
        if self.counter >= COUNTER_LIMIT:
            # 2**64 packets never happen in practice; if they did, a fresh salt gives a
            # fresh derived key, so counters may start again at zero.
            self.salt = secrets.token_bytes(SALT_SIZE)
            self.counter = 0
            self._aead = None
        if self._aead is None or key is not self._aead_key:
            self._aead = ChaCha20Poly1305(derive_key(key, self.salt, self._info))
            self._aead_key = key
        counter = self.counter
        self.counter = counter + 1
        return counter, self._aead


class ReplayWindow:
    """Which of the last `WINDOW_SIZE` counters of one sender session were accepted.

    Bit *i* of ``bits`` is set when counter ``highest - i`` was accepted.
    """

    __slots__ = ("bits", "highest", "max_ts")

    def __init__(self) -> None:
        self.highest = -1
        self.bits = 0
        self.max_ts = 0

    def fresh(self, counter: int) -> bool:
        """True when *counter* is ahead of the window or inside it and not yet seen."""
        if counter > self.highest:
            return True
        behind = self.highest - counter
        return behind < WINDOW_SIZE and not (self.bits >> behind) & 1

    def commit(self, counter: int, ts: int) -> None:
        """Mark *counter* as accepted (call only after the AEAD opened the packet)."""
        if counter > self.highest:
            shift = counter - self.highest
            self.bits = ((self.bits << shift) | 1) & ((1 << WINDOW_SIZE) - 1)
            self.highest = counter
        else:
            self.bits |= 1 << (self.highest - counter)
        if ts > self.max_ts:
            self.max_ts = ts


class SessionTable:
    """Replay windows of the sender sessions a receiver has heard from, bounded (LRU).

    When a session is evicted, the *floor* rises to the largest timestamp it ever
    accepted; a packet of a session not in the table is then refused unless its
    timestamp is above the floor, so an eviction never reopens a replay.

    Args:
        size: the most sessions kept.
    """

    def __init__(self, *, size: int = 16384) -> None:
        self._size = size
        self._sessions: OrderedDict[bytes, ReplayWindow] = OrderedDict()
        self.floor = 0

    def check(self, salt: bytes, counter: int, ts: int) -> str | None:
        """Say whether (session *salt*, *counter*, timestamp *ts*) may be a fresh packet.

        Returns:
            ``None`` when it may be fresh; ``"replay"`` when the session's window has
            seen *counter* or left it behind; ``"stale"`` when the session is unknown
            and *ts* is not above the eviction floor.
        """
        window = self._sessions.get(salt)
        if window is None:
            return None if ts > self.floor else "stale"
        return None if window.fresh(counter) else "replay"

    def commit(self, salt: bytes, counter: int, ts: int) -> None:
        """Record an authenticated packet."""
        window = self._sessions.get(salt)
        if window is None:
            window = ReplayWindow()
            self._sessions[salt] = window
            if len(self._sessions) > self._size:
                _, evicted = self._sessions.popitem(last=False)
                self.floor = max(self.floor, evicted.max_ts)
        else:
            self._sessions.move_to_end(salt)
        window.commit(counter, ts)

    def __len__(self) -> int:
        return len(self._sessions)


class StreamGuard:
    """Salts of TCP stream sessions opened recently, so a replayed first frame is refused.

    An entry lives until the sender timestamp of its first frame is older than the
    receivers' age limit; after that the timestamp check refuses the replay anyway.
    When full of live entries, new streams are refused (never an eviction that
    would reopen a replay).

    Args:
        size: the most live stream sessions remembered.
    """

    def __init__(self, *, size: int = 65536) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def admit(self, salt: bytes, expires_ms: int, now_ms: int) -> None:
        """Remember *salt* until *expires_ms*.

        Raises:
            SecurityError: *salt* was seen already (a replay), or the table is full.
        """
        seen = self._seen
        while seen:
            first_salt, first_exp = next(iter(seen.items()))
            if first_exp >= now_ms:
                break
            del seen[first_salt]
        if salt in seen:
            raise SecurityError("replayed stream: session salt already seen")
        if len(seen) >= self._size:
            raise SecurityError("too many new streams: replay memory full")
        seen[salt] = expires_ms

    def __contains__(self, salt: object) -> bool:
        return salt in self._seen

    def __len__(self) -> int:
        return len(self._seen)


class SkewNotice:
    """When to check a stale sealed packet or frame for authenticity, to tell of a far clock.

    A sealed packet whose timestamp is beyond the age limit is refused before its tag
    is checked. Refused silently, a peer whose clock is far off could never join and
    nobody would know why. So the receiver checks the tag of such a packet now and
    then and, when it is authentic (a key holder sent it, so the timestamp is that
    sender's clock), logs one WARNING with the offset. At most one tag check every
    *check_ms*, so a stranger's stale garbage costs next to nothing, and after a
    warning none for *warn_ms*, so the log is not flooded.

    Args:
        check_ms: milliseconds between two tag checks of stale packets.
        warn_ms: milliseconds after a warning before the next check.
    """

    def __init__(self, check_ms: int = 1_000, warn_ms: int = SKEW_NOTICE_INTERVAL_MS) -> None:
        self._check_ms = check_ms
        self._warn_ms = warn_ms
        self._next_check: int | None = None
        self._next_warn: int | None = None
        self.told = 0  #: warnings given (authentic stale packets or frames found)

    def due(self, now_ms: int) -> bool:
        """Whether a stale packet arriving at *now_ms* should have its tag checked."""
        for t in (self._next_check, self._next_warn):
            if t is not None and now_ms < t:
                return False
        self._next_check = now_ms + self._check_ms
        return True

    def tell(self, now_ms: int) -> None:
        """An authentic stale packet was found at *now_ms*: its warning is being logged."""
        self.told += 1
        self._next_warn = now_ms + self._warn_ms
