"""Fixtures shared by the discovery tests."""

from __future__ import annotations

import pickle
import struct

import pytest
import trio

from beethoven.discovery.seekchat import ChannelFactory, MessageChannel
from beethoven.errors import CodecError
from beethoven.wire.messages import Message


class FakeChannel:
    """Length-prefixed pickle frames: stands in for FrameChannel until it lands."""

    def __init__(self, stream: trio.abc.Stream, max_frame: int, read_timeout: float) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self.read_timeout = read_timeout
        self.buf = b""

    async def send(self, msg: Message) -> None:
        data = pickle.dumps(msg)
        await self.stream.send_all(struct.pack(">I", len(data)) + data)

    async def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise trio.EndOfChannel
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def receive(self) -> Message:
        with trio.fail_after(self.read_timeout):
            (size,) = struct.unpack(">I", await self._read(4))
            if size > self.max_frame:
                raise CodecError("oversize")
            try:
                msg: Message = pickle.loads(await self._read(size))
            except Exception as exc:
                raise CodecError("garbage") from exc
            return msg

    async def aclose(self) -> None:
        await self.stream.aclose()


def _fake_factory(
    stream: trio.abc.Stream, keyring: object, max_frame: int, read_timeout: float
) -> MessageChannel:
    return FakeChannel(stream, max_frame, read_timeout)


@pytest.fixture
def channel_factory() -> ChannelFactory | None:
    """The channel factory the memory-network tests use (None = the real FrameChannel)."""
    return _fake_factory
