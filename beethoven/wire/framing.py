"""TCP frames: one message per length-prefixed frame, sealed when a keyring is set.

Layout (``specs/wire.md`` §3)::

    length(4, u32 BE: bytes after this field) | magic(2) version(1) flags(1)
    open:   | message
    sealed: | key id(4) salt(16) echo(16) counter(8) ts_ms(8) | ciphertext | tag(16)

The length is checked against ``max_frame`` before a single body byte is waited
for. A sealed frame's associated data is everything before the ciphertext, length
included.

Replay protection without a handshake: each channel seals under its own random
salt with counters 0, 1, 2, ... and every frame *echoes* the salt of the peer as
last received (zeros before that). A receiver pins the peer's salt on the first
frame and then wants exactly the next counter, so frames cannot be replayed,
dropped or reordered inside a connection. A first frame that echoes the receiver's
own fresh salt is bound to this connection; a first frame that echoes zeros (the
opener of a connection) must have a timestamp within the age limit and a salt not
seen before by this node (`StreamGuard`, shared through the `Keyring`). So a frame
recorded on one connection is refused on any other.

Errors raised by `FrameChannel.receive`:

* `trio.EndOfChannel`: the peer closed cleanly between frames;
* `FrameTimeoutError` (a `FrameError` and a `trio.TooSlowError`): a frame did not
  arrive whole within ``read_timeout``;
* `FrameError` (a `CodecError`): EOF inside a frame, an oversized or undersized
  length, bad magic/version/flags, or an undecodable message;
* `SecurityError`: open frame while a key is required, sealed frame without a
  keyring, unknown key id, bad tag, stale timestamp, replayed or out-of-order frame;
* whatever the stream raises (``trio.BrokenResourceError``, ...).

After any of these except the first the channel is broken: later calls raise
`FrameError` at once. Messages of an unknown type are skipped (counted in
`FrameStats`), not errors.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

import attrs
import trio
from cryptography.exceptions import InvalidTag

from beethoven.errors import ClockSkewError, CodecError, SecurityError
from beethoven.wire.codec import UnknownMessageType, decode, encode
from beethoven.wire.messages import PROTOCOL_MAX, PROTOCOL_MIN, Message
from beethoven.wire.packet import FLAG_SEALED, MAGIC, wall_clock_ms
from beethoven.wire.security import (
    DEFAULT_MAX_AGE_MS,
    FRAME_INFO,
    SALT_SIZE,
    TAG_SIZE,
    DerivedKeys,
    Keyring,
    Sealer,
    nonce,
    verifies,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FRAME_OPEN_HEADER_SIZE",
    "FRAME_SEALED_HEADER_SIZE",
    "FrameChannel",
    "FrameError",
    "FrameStats",
    "FrameTimeoutError",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = 20 * 2**20
"""Default largest frame (bytes after the length field)."""
FRAME_OPEN_HEADER_SIZE = 8
"""Length field plus magic, version and flags."""
FRAME_SEALED_HEADER_SIZE = 60
"""Header of a sealed frame, length field included (its associated data)."""

_LENGTH = struct.Struct(">I")
_SEALED_FIELDS = struct.Struct(">4s16s16sQQ")  # key id, salt, echo, counter, timestamp
_NO_SALT = bytes(SALT_SIZE)
_READ_CHUNK = 1 << 20


class FrameError(CodecError):
    """A TCP frame was malformed, oversized, truncated or undecodable."""


class FrameTimeoutError(FrameError, trio.TooSlowError):
    """A whole frame did not arrive within the channel's read timeout."""


@attrs.frozen
class FrameStats:
    """Counters of one `FrameChannel`.

    Attributes:
        frames_out: frames sent.
        bytes_out: bytes sent, length fields included.
        frames_in: frames received and accepted (unknown types included).
        bytes_in: bytes of accepted frames.
        unknown_type: frames skipped because their message type is unknown here.
    """

    frames_out: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    unknown_type: int = 0


class FrameChannel:
    """Messages over one TCP stream, one length-prefixed (sealed) frame each.

    Not for concurrent receivers; concurrent senders are serialised.

    Args:
        stream: the byte stream (a ``trio.SocketStream``, a memory stream in tests).
        keyring: the cluster keys; ``None`` sends and accepts only open frames.
        max_frame: largest frame accepted or sent (bytes after the length field).
        read_timeout: seconds one `receive` may take to get one whole frame.
        max_age_ms: largest accepted |our clock - sender timestamp| of a sealed frame.
        clock: wall clock in milliseconds since the epoch.
        salt: fixed sending salt, for test vectors only.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        keyring: Keyring | None,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        read_timeout: float = 5.0,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
        clock: Callable[[], int] = wall_clock_ms,
        salt: bytes | None = None,
    ) -> None:
        self._stream = stream
        self._keyring = keyring
        self._max_frame = max_frame
        self._read_timeout = read_timeout
        self._max_age = max_age_ms
        self._clock = clock
        self._sealer = Sealer(FRAME_INFO, salt=salt)
        self._opened = DerivedKeys(FRAME_INFO, size=4)
        self._buf = bytearray()
        self._peer_salt: bytes | None = None
        self._peer_bound = False  # the peer has echoed our salt: zeros no longer allowed
        self._expected = 0
        self._send_lock = trio.StrictFIFOLock()
        self._broken: str | None = None
        self._n: dict[str, int] = dict.fromkeys(attrs.fields_dict(FrameStats), 0)

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream."""
        return self._stream

    def stats(self) -> FrameStats:
        """Return a snapshot of the counters."""
        return FrameStats(**self._n)

    # --- sending ----------------------------------------------------------------------

    def _frame(self, body: bytes, version: int) -> bytes:
        keyring = self._keyring
        if keyring is None:
            length = 4 + len(body)
            if length > self._max_frame:
                raise FrameError(f"frame of {length} bytes exceeds the {self._max_frame}-byte cap")
            return _LENGTH.pack(length) + MAGIC + bytes((version, 0)) + body
        length = FRAME_SEALED_HEADER_SIZE - 4 + len(body) + TAG_SIZE
        if length > self._max_frame:
            raise FrameError(f"frame of {length} bytes exceeds the {self._max_frame}-byte cap")
        counter, aead = self._sealer.next(keyring.primary)
        header = (
            _LENGTH.pack(length)
            + MAGIC
            + bytes((version, FLAG_SEALED))
            + _SEALED_FIELDS.pack(
                keyring.primary_id,
                self._sealer.salt,
                self._peer_salt or _NO_SALT,
                counter,
                self._clock(),
            )
        )
        return header + aead.encrypt(nonce(counter), body, header)

    async def send(self, msg: Message, *, version: int = PROTOCOL_MIN) -> None:
        """Send *msg* as one frame.

        Args:
            msg: the message.
            version: the protocol version byte to write.

        Raises:
            CodecError: *msg* cannot be encoded.
            FrameError: the frame would exceed ``max_frame``, or the channel is broken.
        """
        if not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
            raise CodecError(f"cannot write protocol version {version}")
        body = encode(msg)
        async with self._send_lock:
            if self._broken is not None:
                raise FrameError(f"channel broken: {self._broken}")
            frame = self._frame(body, version)
            try:
                await self._stream.send_all(frame)
            except BaseException:
                # A partial frame may be on the wire: nothing sent after it would parse.
                self._broken = "a send failed part-way"
                raise
        self._n["frames_out"] += 1
        self._n["bytes_out"] += len(frame)

    # --- receiving --------------------------------------------------------------------

    async def _fill(self, n: int) -> bool:
        """Buffer at least *n* bytes; False on EOF (with fewer buffered)."""
        buf = self._buf
        while len(buf) < n:
            chunk = await self._stream.receive_some(min(max(n - len(buf), 65536), _READ_CHUNK))
            if not chunk:
                return False
            buf += chunk
        return True

    async def receive(self) -> Message:
        """Receive the next message, skipping (and counting) frames of unknown type.

        Returns:
            The message.

        Raises:
            trio.EndOfChannel: the peer closed the stream between frames.
            FrameTimeoutError: no whole frame within ``read_timeout`` seconds.
            FrameError: a malformed, oversized or truncated frame, or a broken channel.
            SecurityError: a frame that fails authentication or the replay checks.
        """
        if self._broken is not None:
            raise FrameError(f"channel broken: {self._broken}")
        try:
            with trio.fail_after(self._read_timeout):
                while True:
                    msg = await self._receive_one()
                    if msg is not None:
                        return msg
        except trio.TooSlowError:
            self._broken = "read timeout"
            raise FrameTimeoutError(f"no whole frame within {self._read_timeout} s") from None
        except (CodecError, SecurityError) as exc:
            self._broken = str(exc)
            raise

    async def _receive_one(self) -> Message | None:
        buf = self._buf
        if not await self._fill(4):
            if buf:
                raise FrameError("stream ended inside a frame length")
            raise trio.EndOfChannel
        (length,) = _LENGTH.unpack_from(buf)
        if length > self._max_frame:
            raise FrameError(f"frame of {length} bytes exceeds the {self._max_frame}-byte cap")
        if length < 4:
            raise FrameError(f"frame of {length} bytes is shorter than its header")
        if not await self._fill(4 + length):
            raise FrameError(f"stream ended inside a {length}-byte frame")
        frame = bytes(buf[: 4 + length])
        del buf[: 4 + length]
        body = self._open(frame)
        self._n["frames_in"] += 1
        self._n["bytes_in"] += len(frame)
        try:
            return decode(body)
        except UnknownMessageType as exc:
            self._n["unknown_type"] += 1
            logger.debug("skipped frame with unknown message type %d", exc.code)
            return None
        except CodecError as exc:
            raise FrameError(f"undecodable message: {exc}") from None

    def _open(self, frame: bytes) -> bytes:
        if frame[4:6] != MAGIC:
            raise FrameError("bad magic")
        version = frame[6]
        if not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
            raise FrameError(f"protocol version {version} outside {PROTOCOL_MIN}..{PROTOCOL_MAX}")
        flags = frame[7]
        if flags & ~FLAG_SEALED:
            raise FrameError(f"unknown flags {flags:#04x}")
        keyring = self._keyring
        if not flags & FLAG_SEALED:
            if keyring is not None:
                raise SecurityError("open frame refused: a cluster key is required")
            return frame[FRAME_OPEN_HEADER_SIZE:]
        if keyring is None:
            raise SecurityError("sealed frame refused: no cluster key configured")
        if len(frame) < FRAME_SEALED_HEADER_SIZE + TAG_SIZE:
            raise FrameError("sealed frame shorter than its header and tag")
        kid, salt, echo, counter, ts = _SEALED_FIELDS.unpack_from(frame, FRAME_OPEN_HEADER_SIZE)
        key = keyring.get(kid)
        if key is None:
            raise SecurityError(f"frame sealed under unknown key id {kid.hex()}")
        now = self._clock()
        if abs(now - ts) > self._max_age:
            notice = keyring.skew_notice
            if notice.due(now) and verifies(
                self._opened.get(key, salt), counter, frame, FRAME_SEALED_HEADER_SIZE
            ):
                notice.tell(now)
                raise ClockSkewError(
                    f"stale sealed frame refused: it is authentic, but the sender's clock is "
                    f"{(ts - now) / 1000:+.1f} s off this node's, beyond the "
                    f"{self._max_age / 1000:.0f} s limit; fix the clocks (NTP)",
                    offset_ms=ts - now,
                )
            raise SecurityError(f"stale frame: timestamp {ts}, now {now}")
        own = self._sealer.salt
        if echo != _NO_SALT and echo != own:
            raise SecurityError("frame bound to another connection")
        if self._peer_bound and echo != own:
            raise SecurityError("frame lost its binding to this connection")
        first = self._peer_salt is None
        guard = keyring.stream_guard
        if first:
            if counter != 0:
                raise SecurityError(f"first frame has counter {counter}, not 0")
            if echo == _NO_SALT and salt in guard:
                raise SecurityError("replayed stream: session salt already seen")
        elif salt != self._peer_salt or counter != self._expected:
            raise SecurityError(f"replayed or out-of-order frame (counter {counter})")
        try:
            body = self._opened.get(key, salt).decrypt(
                nonce(counter), frame[FRAME_SEALED_HEADER_SIZE:], frame[:FRAME_SEALED_HEADER_SIZE]
            )
        except InvalidTag:
            raise SecurityError("frame failed authentication (bad tag)") from None
        if first:
            if echo == _NO_SALT:
                guard.admit(salt, max(ts, now) + self._max_age, now)
            self._peer_salt = salt
        if echo == own:
            self._peer_bound = True
        self._expected = counter + 1
        return body

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self._stream.aclose()
