"""TCP frames over memory streams: caps, deadlines, tampering and replay across connections."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from beethoven.errors import CodecError, SecurityError
from beethoven.wire.framing import (
    FRAME_SEALED_HEADER_SIZE,
    FrameChannel,
    FrameError,
    FrameTimeoutError,
)
from beethoven.wire.messages import Ack, Message, Ping, StoreSyncReply
from beethoven.wire.packet import MAGIC
from beethoven.wire.security import Keyring, generate_key

KEY = bytes(range(32))
NOW = 1_700_000_000_000


def ping(seq: int = 1) -> Ping:
    return Ping(seq=seq, target="b", source="a")


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def channels(
    keyring_a: Keyring | None, keyring_b: Keyring | None, **kwargs: object
) -> tuple[FrameChannel, FrameChannel]:
    a, b = trio.testing.memory_stream_pair()
    return FrameChannel(a, keyring_a, **kwargs), FrameChannel(b, keyring_b, **kwargs)  # type: ignore[arg-type]


async def raw_frame(msg: Message, keyring: Keyring | None, **kwargs: object) -> bytes:
    """The bytes of *msg* sent as the first frame of a fresh channel."""
    a, b = trio.testing.memory_stream_pair()
    await FrameChannel(a, keyring, **kwargs).send(msg)  # type: ignore[arg-type]
    return bytes(await b.receive_some())


async def receive_raw(data: bytes, keyring: Keyring | None, **kwargs: object) -> Message:
    """Feed *data* to a fresh receiving channel and return what it yields."""
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(data)
    return await FrameChannel(b, keyring, **kwargs).receive()  # type: ignore[arg-type]


@pytest.mark.parametrize("sealed", [False, True], ids=["open", "sealed"])
async def test_conversation_round_trips(sealed: bool) -> None:
    with trio.fail_after(5):
        ring = Keyring(KEY) if sealed else None
        a, b = channels(ring, ring)
        big = StoreSyncReply(delta=bytes(300_000), digest=b"d", more=True)
        await a.send(ping(1))
        assert await b.receive() == ping(1)
        for i in range(3):
            await b.send(Ack(seq=i, source="b"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, big)
            assert await b.receive() == big
        for i in range(3):
            assert await a.receive() == Ack(seq=i, source="b")
        await a.send(ping(2))
        assert await b.receive() == ping(2)
        assert a.stats().frames_out == 3
        assert b.stats().frames_in == 3
        assert a.stats().bytes_out == b.stats().bytes_in


async def test_clean_eof_between_frames_is_end_of_channel() -> None:
    with trio.fail_after(5):
        a, b = channels(None, None)
        await a.send(ping())
        await a.aclose()
        assert await b.receive() == ping()
        with pytest.raises(trio.EndOfChannel):
            await b.receive()


@pytest.mark.parametrize("cut", [2, 6, 12])
async def test_eof_inside_a_frame_is_a_frame_error(cut: int) -> None:
    with trio.fail_after(5):
        frame = await raw_frame(ping(), None)
        a, b = trio.testing.memory_stream_pair()
        await a.send_all(frame[:cut])
        await a.aclose()
        with pytest.raises(FrameError):
            await FrameChannel(b, None).receive()


async def test_oversized_frame_refused_before_reading_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        a, b = trio.testing.memory_stream_pair()
        # Only the length field arrives: were the body awaited, this would time out.
        await a.send_all(struct.pack(">I", 2**30))
        channel = FrameChannel(b, Keyring(KEY), max_frame=1024)
        start = trio.current_time()
        with pytest.raises(FrameError, match="exceeds") as info:
            await channel.receive()
        assert trio.current_time() == start
        assert not isinstance(info.value, FrameTimeoutError)


async def test_sending_an_oversized_frame_is_refused() -> None:
    with trio.fail_after(5):
        a, _ = channels(Keyring(KEY), Keyring(KEY), max_frame=1024)
        with pytest.raises(FrameError):
            await a.send(StoreSyncReply(delta=bytes(2000)))


@pytest.mark.parametrize("partial", [b"", b"\x00\x00", b"\x00\x00\x00\x40" + MAGIC])
async def test_stalled_peer_times_out(
    autojump_clock: trio.testing.MockClock, partial: bytes
) -> None:
    with trio.fail_after(60):
        a, b = trio.testing.memory_stream_pair()
        await a.send_all(partial)
        channel = FrameChannel(b, None, read_timeout=5.0)
        start = trio.current_time()
        with pytest.raises(FrameTimeoutError) as info:
            await channel.receive()
        assert isinstance(info.value, trio.TooSlowError)
        assert trio.current_time() - start == pytest.approx(5.0)
        with pytest.raises(FrameError, match="broken"):
            await channel.receive()


async def test_tampered_frame_is_refused() -> None:
    with trio.fail_after(5):
        frame = bytearray(await raw_frame(ping(), Keyring(KEY)))
        for pos in (6, 10, 30, FRAME_SEALED_HEADER_SIZE + 2, len(frame) - 1):
            tampered = bytearray(frame)
            tampered[pos] ^= 0x01
            with pytest.raises((SecurityError, FrameError)):
                await receive_raw(bytes(tampered), Keyring(KEY))
        assert await receive_raw(bytes(frame), Keyring(KEY)) == ping()


async def test_frame_under_a_wrong_key_is_refused() -> None:
    with trio.fail_after(5):
        frame = await raw_frame(ping(), Keyring(generate_key()))
        with pytest.raises(SecurityError, match="unknown key"):
            await receive_raw(frame, Keyring(KEY))


async def test_open_and_sealed_frames_are_refused_in_the_wrong_mode() -> None:
    with trio.fail_after(5):
        with pytest.raises(SecurityError):
            await receive_raw(await raw_frame(ping(), None), Keyring(KEY))
        with pytest.raises(SecurityError):
            await receive_raw(await raw_frame(ping(), Keyring(KEY)), None)


async def test_stale_frame_is_refused() -> None:
    with trio.fail_after(5):
        frame = await raw_frame(ping(), Keyring(KEY), clock=Clock(NOW))
        with pytest.raises(SecurityError, match="stale"):
            await receive_raw(frame, Keyring(KEY), clock=Clock(NOW + 30_001))


def split_frames(data: bytes) -> list[bytes]:
    frames = []
    while data:
        end = 4 + struct.unpack(">I", data[:4])[0]
        frames.append(data[:end])
        data = data[end:]
    return frames


async def test_frame_replayed_inside_a_connection_is_refused() -> None:
    with trio.fail_after(5):
        a, b = trio.testing.memory_stream_pair()
        sender = FrameChannel(a, Keyring(KEY))
        await sender.send(ping(1))
        await sender.send(ping(2))
        first, second = split_frames(bytes(await b.receive_some()))
        c, d = trio.testing.memory_stream_pair()
        await c.send_all(first + second + second)
        receiver = FrameChannel(d, Keyring(KEY))
        assert await receiver.receive() == ping(1)
        assert await receiver.receive() == ping(2)
        with pytest.raises(SecurityError, match="replayed or out-of-order"):
            await receiver.receive()


async def test_frames_out_of_order_are_refused() -> None:
    with trio.fail_after(5):
        a, b = trio.testing.memory_stream_pair()
        sender = FrameChannel(a, Keyring(KEY))
        for i in range(3):
            await sender.send(ping(i))
        first, _, third = split_frames(bytes(await b.receive_some()))
        with pytest.raises(SecurityError):
            await receive_raw(third, Keyring(KEY))  # not a first frame (counter 2)
        c, d = trio.testing.memory_stream_pair()
        await c.send_all(first + third)
        receiver = FrameChannel(d, Keyring(KEY))
        assert await receiver.receive() == ping(0)
        with pytest.raises(SecurityError):
            await receiver.receive()


async def test_first_frame_replayed_on_another_connection_is_refused() -> None:
    with trio.fail_after(5):
        ring = Keyring(KEY)  # the receiving node's keyring, shared by its channels
        frame = await raw_frame(ping(), Keyring(KEY))
        assert await receive_raw(frame, ring) == ping()
        with pytest.raises(SecurityError, match="replayed stream"):
            await receive_raw(frame, ring)


def tapped_channel(
    keyring: Keyring,
) -> tuple[FrameChannel, trio.abc.SendStream, trio.abc.ReceiveStream]:
    """A channel whose outgoing bytes we read and whose incoming bytes we write."""
    out_send, out_recv = trio.testing.memory_stream_one_way_pair()
    in_send, in_recv = trio.testing.memory_stream_one_way_pair()
    return FrameChannel(trio.StapledStream(out_send, in_recv), keyring), in_send, out_recv


async def test_reply_replayed_to_another_opener_is_refused() -> None:
    with trio.fail_after(5):
        opener, to_opener, from_opener = tapped_channel(Keyring(KEY))
        responder, to_responder, from_responder = tapped_channel(Keyring(KEY))
        await opener.send(ping(1))
        await to_responder.send_all(await from_opener.receive_some())
        assert await responder.receive() == ping(1)
        await responder.send(Ack(seq=1, source="b"))
        reply = bytes(await from_responder.receive_some())

        # Another opener (another connection, its own fresh salt) refuses the reply...
        other, to_other, _ = tapped_channel(Keyring(KEY))
        await other.send(ping(2))
        await to_other.send_all(reply)
        with pytest.raises(SecurityError, match="bound to another connection"):
            await other.receive()
        # ...and an opener that has not sent anything refuses it too.
        silent, to_silent, _ = tapped_channel(Keyring(KEY))
        await to_silent.send_all(reply)
        with pytest.raises(SecurityError):
            await silent.receive()
        # The genuine opener accepts it.
        await to_opener.send_all(reply)
        assert await opener.receive() == Ack(seq=1, source="b")


async def test_unknown_message_type_frames_are_skipped_and_counted() -> None:
    with trio.fail_after(5):
        body = b"\x92\xcc\xfa\x01"  # [250, 1]
        unknown = struct.pack(">I", 4 + len(body)) + MAGIC + b"\x01\x00" + body
        a, b = trio.testing.memory_stream_pair()
        await a.send_all(unknown + await raw_frame(ping(), None))
        channel = FrameChannel(b, None)
        assert await channel.receive() == ping()
        assert channel.stats().unknown_type == 1


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">I", 6) + b"\x00\x00\x01\x00\x01\x02",
        struct.pack(">I", 6) + MAGIC + b"\x07\x00\x01\x02",
        struct.pack(">I", 6) + MAGIC + b"\x01\x40\x01\x02",
        struct.pack(">I", 5) + MAGIC + b"\x01\x00\xc1",
        struct.pack(">I", 2) + MAGIC,
    ],
    ids=["magic", "version", "flags", "garbage", "short"],
)
async def test_malformed_frames_are_frame_errors(frame: bytes) -> None:
    with trio.fail_after(5), pytest.raises(FrameError):
        await receive_raw(frame, None)


async def test_frame_errors_are_codec_errors() -> None:
    assert issubclass(FrameError, CodecError)
