"""The test vectors in specs/vectors/: decode, and re-encode byte for byte.

When a message class changes (a field appended), regenerate them with
``python specs/vectors/generate.py``; ``test_vector_files_are_up_to_date`` says so.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing

from beethoven.address import Address
from beethoven.errors import CodecError
from beethoven.wire.codec import (
    UnknownMessageType,
    decode,
    decode_compound,
    encode,
    encode_compound,
)
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import MESSAGE_TYPES
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring, key_from_string, key_id

VECTORS = Path(__file__).resolve().parents[2] / "specs" / "vectors"
PEER = Address("10.0.0.9", 33000)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("beethoven_wire_vectors", VECTORS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


MESSAGES = load("messages.json")
PACKETS = load("packets.json")
FRAMES = load("frames.json")


def test_vector_files_are_up_to_date() -> None:
    assert gen.main(["--check"]) == 0, "run: python specs/vectors/generate.py"


def test_every_message_type_has_a_vector() -> None:
    assert {v["type"] for v in MESSAGES["vectors"]} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("vector", MESSAGES["vectors"], ids=lambda v: v["name"])
def test_message_vector(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["hex"])
    expected = gen.message_from_entry(vector)
    decoded = decode(wire)
    assert decoded == expected
    assert type(decoded).__name__ == vector["class"]
    assert gen.to_json(decoded) == vector["value"]
    assert encode(expected) == wire


def test_compound_vector() -> None:
    compound = MESSAGES["compound"]
    wire = bytes.fromhex(compound["hex"])
    expected = [gen.message_from_entry(e) for e in compound["messages"]]
    assert decode_compound(wire) == (expected, 0)
    assert encode_compound(expected) == wire


@pytest.mark.parametrize("vector", MESSAGES["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["hex"])
    with pytest.raises(CodecError) as info:
        decode(wire)
    assert isinstance(info.value, UnknownMessageType) == (vector["expect"] == "unknown")


def test_packet_vector_key_material() -> None:
    key = bytes.fromhex(PACKETS["key"])
    assert key_from_string(PACKETS["key_string"]) == key
    assert key_id(key).hex() == PACKETS["key_id"]


@pytest.mark.parametrize("vector", PACKETS["vectors"], ids=lambda v: v["name"])
def test_packet_vector(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["hex"])
    expected = [gen.message_from_entry(e) for e in vector["messages"]]
    keyring = Keyring(bytes.fromhex(PACKETS["key"])) if vector["sealed"] else None
    now = PACKETS["timestamp_ms"]

    receiver = PacketCodec(keyring, clock=lambda: now + 1234)
    assert receiver.unpack(wire, PEER) == expected
    assert receiver.stats().dropped == 0

    sender = PacketCodec(
        keyring,
        clock=lambda: now,
        salt=bytes.fromhex(PACKETS["salt"]),
        counter=PACKETS["counter"],
    )
    assert sender.pack(expected) == [wire]


def tapped(
    keyring: Keyring | None, salt: bytes
) -> tuple[FrameChannel, trio.abc.SendStream, trio.abc.ReceiveStream]:
    """A channel at a fixed clock and salt; we write what it reads and read what it writes."""
    out_send, out_recv = trio.testing.memory_stream_one_way_pair()
    in_send, in_recv = trio.testing.memory_stream_one_way_pair()
    now = FRAMES["timestamp_ms"]
    channel = FrameChannel(
        trio.StapledStream(out_send, in_recv), keyring, clock=lambda: now, salt=salt
    )
    return channel, in_send, out_recv


@pytest.mark.parametrize("kind", ["open", "sealed"])
async def test_frame_vectors(kind: str) -> None:
    """Replay the opener/responder exchange; every byte sent must match the vectors."""
    with trio.fail_after(5):
        keyring = Keyring(bytes.fromhex(FRAMES["key"])) if kind == "sealed" else None
        vectors = {v["name"]: v for v in FRAMES["vectors"]}
        first = vectors[f"{kind}-opener-ping"]
        second = vectors[f"{kind}-responder-alive"]
        first_wire, second_wire = bytes.fromhex(first["hex"]), bytes.fromhex(second["hex"])

        opener, to_opener, from_opener = tapped(keyring, bytes.fromhex(FRAMES["salt"]))
        responder, to_responder, from_responder = tapped(
            keyring, bytes.fromhex(FRAMES["peer_salt"])
        )
        await opener.send(gen.message_from_entry(first["message"]))
        assert await from_opener.receive_some() == first_wire
        await to_responder.send_all(first_wire)
        assert await responder.receive() == gen.message_from_entry(first["message"])
        await responder.send(gen.message_from_entry(second["message"]))
        assert await from_responder.receive_some() == second_wire
        await to_opener.send_all(second_wire)
        assert await opener.receive() == gen.message_from_entry(second["message"])
