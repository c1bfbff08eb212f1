"""Regenerate the wire test vectors in this directory.

    python specs/vectors/generate.py          # rewrite the JSON files
    python specs/vectors/generate.py --check  # exit 1 when they are out of date

Sample messages are built generically from the attrs fields of every class in
``MESSAGE_TYPES`` (deterministic values derived from the field position and type), so
appending a field to a message only needs a re-run. The tests import this file for
its JSON helpers (`to_json`, `from_json`) and the sample messages.

JSON form of a value: ints, bools, strings and floats as themselves, ``bytes`` as
``{"bytes": "<hex>"}``, a record (nested or message) as an object of its fields in
field order, a tuple as an array, ``None`` as null. A message additionally carries
``"class"`` and ``"type"`` next to ``"value"`` in a vector entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from beethoven.address import Address
from beethoven.wire import codec
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import MESSAGE_TYPES, Alive, Message, Ping
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring, key_id, key_to_string

HERE = Path(__file__).resolve().parent

#: The fixed test key, salts, counter and clock of the sealed vectors. Test use only.
TEST_KEY = bytes(range(32))
TEST_SALT = bytes(range(0x10, 0x20))
TEST_PEER_SALT = bytes(range(0x20, 0x30))
TEST_COUNTER = 7
TEST_TIME_MS = 1_700_000_000_000

CLASSES: dict[str, type] = {cls.__name__: cls for cls in MESSAGE_TYPES.values()}


# --- JSON form ------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Return the JSON form of a wire value (see the module docstring)."""
    if value is None or type(value) in (bool, int, str, float):
        return value
    if type(value) is bytes:
        return {"bytes": value.hex()}
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    if attrs.has(type(value)):
        return {f.name: to_json(getattr(value, f.name)) for f in attrs.fields(type(value))}
    raise TypeError(f"no JSON form for {type(value).__name__}")


def from_json(tp: Any, obj: Any) -> Any:
    """Rebuild a value of wire type *tp* from its JSON form."""
    origin = typing.get_origin(tp)
    if tp is bytes:
        return bytes.fromhex(obj["bytes"])
    if tp in (bool, int, str, float):
        return obj
    if attrs.has(tp):
        hints = typing.get_type_hints(tp)
        return tp(
            **{
                f.name: from_json(hints[f.name], obj[f.name])
                for f in attrs.fields(tp)
                if f.name in obj
            }
        )
    if origin is tuple:
        return tuple(from_json(typing.get_args(tp)[0], v) for v in obj)
    if origin in (typing.Union, __import__("types").UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return None if obj is None else from_json(inner, obj)
    raise TypeError(f"no JSON form for {tp!r}")


def message_from_entry(entry: dict[str, Any]) -> Message:
    """Rebuild the message of a vector entry (``{"class", "type", "value"}``)."""
    cls = CLASSES[entry["class"]]
    return typing.cast(Message, from_json(cls, entry["value"]))


def message_entry(msg: Message) -> dict[str, Any]:
    """Return ``{"class", "type", "value"}`` for *msg*."""
    return {"class": type(msg).__name__, "type": msg.TYPE, "value": to_json(msg)}


# --- sample messages --------------------------------------------------------------------


def _sample(tp: Any, name: str, seed: int) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        return seed % 2 == 1
    if tp is int:
        if name == "port":
            return 33000 + seed
        return [7, 300, 70_000, 2**33 + 5, 111_411_200_000_000_000][seed % 5]
    if tp is str:
        if name == "host":
            return f"10.0.0.{seed % 250 + 1}"
        if name in {"cluster"}:
            return "prod"
        return f"node-{seed % 26 + 1:02d}"
    if tp is bytes:
        return bytes((seed + i) % 256 for i in range(seed % 5))
    if tp is float:
        return seed + 0.5
    if attrs.has(tp):
        hints = typing.get_type_hints(tp)
        return tp(
            **{
                f.name: _sample(hints[f.name], f.name, seed + i)
                for i, f in enumerate(attrs.fields(tp))
            }
        )
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_sample(item, name, seed + 3 * i) for i in range(2))
    if origin is not None:  # X | None
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return _sample(inner, name, seed)
    raise TypeError(f"no sample for {tp!r}")


def sample_messages() -> list[Message]:
    """One deterministic instance of every message type, in type-code order."""
    out: list[Message] = []
    for code in sorted(MESSAGE_TYPES):
        out.append(typing.cast(Message, _sample(MESSAGE_TYPES[code], "", code)))
    return out


def ping() -> Ping:
    """The ping of the packet and frame vectors."""
    return Ping(seq=4242, target="10.0.0.2:33000", source="10.0.0.1:33000")


def alive() -> Alive:
    """The alive of the packet vectors."""
    return Alive(
        name="10.0.0.1:33000",
        generation=111_411_200_000_000_000,
        incarnation=3,
        addr=Address("10.0.0.1", 33000),
    )


def edge_messages() -> list[tuple[str, Message]]:
    """Hand-picked values at the edges of the msgpack encodings."""
    return [
        ("ping-zero", Ping(seq=0, target="", source="")),
        ("ping-u64-max", Ping(seq=2**64 - 1, target="b", source="a")),
        ("ping-i64-min", Ping(seq=-(2**63), target="b", source="a")),
        ("ping-unicode", Ping(seq=127, target="nœud-β", source="ノード")),
        ("ping-fixint-edge", Ping(seq=128, target="x" * 31, source="y" * 32)),
    ]


#: Bytes every decoder must refuse, with why (``unknown`` = skipped as an unknown type).
INVALID: list[tuple[str, str, str]] = [
    ("not msgpack", "c1", "error"),
    ("empty", "", "error"),
    ("map instead of array", "81a16101", "error"),
    ("empty array", "90", "error"),
    ("bool as type code", "94c3cd1092a162a161", "error"),
    ("ping with bool seq", "94" + "01" + "c3" + "a162a161", "error"),
    ("ping with str seq", "94" + "01" + "a131" + "a162a161", "error"),
    ("ping with bin target", "94" + "01" + "01" + "c40162" + "a161", "error"),
    ("ping short", "93" + "01" + "01" + "a162", "error"),
    ("ping long", "95" + "01" + "01" + "a162" + "a161" + "c0", "error"),
    ("ping then trailing byte", "94" + "01" + "01" + "a162" + "a161" + "00", "error"),
    ("truncated str", "94" + "01" + "01" + "a362", "error"),
    ("invalid utf-8", "94" + "01" + "01" + "a1ff" + "a161", "error"),
    ("ping with ext seq", "94" + "01" + "d40101" + "a162a161", "error"),
    (
        "alive with port out of range",
        "97" + "05" + "a161" + "01" + "01" + "92a131ce00010000",
        "error",
    ),
    ("unknown type 200", "92" + "ccc8" + "01", "unknown"),
    ("unknown type -1", "92" + "ff" + "01", "unknown"),
]


# --- builders ---------------------------------------------------------------------------


def messages_file() -> dict[str, Any]:
    """The content of ``messages.json``."""
    vectors = []
    for msg in sample_messages():
        vectors.append(
            {"name": type(msg).__name__, **message_entry(msg), "hex": codec.encode(msg).hex()}
        )
    for name, msg in edge_messages():
        vectors.append({"name": name, **message_entry(msg), "hex": codec.encode(msg).hex()})
    compound = [ping(), alive()]
    return {
        "description": "One message per vector: decode(hex) == value and encode(value) == hex.",
        "vectors": vectors,
        "compound": {
            "messages": [message_entry(m) for m in compound],
            "hex": codec.encode_compound(compound).hex(),
        },
        "invalid": [{"name": n, "hex": h, "expect": e} for n, h, e in INVALID],
    }


def packets_file() -> dict[str, Any]:
    """The content of ``packets.json``."""
    keyring = Keyring(TEST_KEY)
    vectors = []
    for name, sealed, msgs in [
        ("open-ping", False, [ping()]),
        ("open-ping-alive", False, [ping(), alive()]),
        ("sealed-ping", True, [ping()]),
        ("sealed-ping-alive", True, [ping(), alive()]),
    ]:
        pc = PacketCodec(
            keyring if sealed else None,
            salt=TEST_SALT,
            counter=TEST_COUNTER,
            clock=lambda: TEST_TIME_MS,
        )
        (datagram,) = pc.pack(msgs)
        vectors.append(
            {
                "name": name,
                "sealed": sealed,
                "messages": [message_entry(m) for m in msgs],
                "hex": datagram.hex(),
            }
        )
    return {
        "description": (
            "Datagrams. Sealed ones use the key, salt, counter and timestamp below; "
            "a receiver must use a clock within max_age of timestamp_ms to accept them."
        ),
        "key": TEST_KEY.hex(),
        "key_string": key_to_string(TEST_KEY),
        "key_id": key_id(TEST_KEY).hex(),
        "salt": TEST_SALT.hex(),
        "counter": TEST_COUNTER,
        "timestamp_ms": TEST_TIME_MS,
        "vectors": vectors,
    }


class _Recorder(trio.abc.Stream):
    """A stream wrapper that keeps a copy of every chunk sent through it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _frames(keyring: Keyring | None) -> tuple[bytes, bytes]:
    """The first frame of an opener (a ping) and the responder's answer (an alive)."""
    left, right = trio.testing.memory_stream_pair()
    left_rec, right_rec = _Recorder(left), _Recorder(right)
    opener = FrameChannel(left_rec, keyring, salt=TEST_SALT, clock=lambda: TEST_TIME_MS)
    responder = FrameChannel(right_rec, keyring, salt=TEST_PEER_SALT, clock=lambda: TEST_TIME_MS)
    await opener.send(ping())
    await responder.receive()
    await responder.send(alive())
    await opener.receive()
    return left_rec.sent[0], right_rec.sent[0]


def frames_file() -> dict[str, Any]:
    """The content of ``frames.json``."""
    vectors = []
    for sealed in (False, True):
        first, second = trio.run(_frames, Keyring(TEST_KEY) if sealed else None)
        kind = "sealed" if sealed else "open"
        vectors.append(
            {
                "name": f"{kind}-opener-ping",
                "sealed": sealed,
                "message": message_entry(ping()),
                "hex": first.hex(),
            }
        )
        vectors.append(
            {
                "name": f"{kind}-responder-alive",
                "sealed": sealed,
                "message": message_entry(alive()),
                "hex": second.hex(),
            }
        )
    return {
        "description": (
            "TCP frames: an opener (salt) sends a ping as its first frame, the responder "
            "(peer_salt) answers with an alive that echoes the opener's salt."
        ),
        "key": TEST_KEY.hex(),
        "salt": TEST_SALT.hex(),
        "peer_salt": TEST_PEER_SALT.hex(),
        "timestamp_ms": TEST_TIME_MS,
        "vectors": vectors,
    }


FILES = {
    "messages.json": messages_file,
    "packets.json": packets_file,
    "frames.json": frames_file,
}


def render(content: dict[str, Any]) -> str:
    """Serialise one vector file (stable formatting)."""
    return json.dumps(content, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, compare) every vector file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for name, build in FILES.items():
        text = render(build())
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        sys.stderr.write(
            f"out of date: {', '.join(stale)} (run python specs/vectors/generate.py)\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
