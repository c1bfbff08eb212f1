"""The message codec: round trips of every type, strictness, determinism, fuzzing.

Everything here is generic over ``MESSAGE_TYPES`` and the attrs fields, so a field
appended to a message is covered without touching this file.
"""

from __future__ import annotations

import contextlib
import types
import typing
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.address import Address
from beethoven.errors import CodecError
from beethoven.wire import codec
from beethoven.wire.codec import (
    INT_MAX,
    INT_MIN,
    UnknownMessageType,
    decode,
    decode_compound,
    encode,
    encode_compound,
    encoded_size,
)
from beethoven.wire.messages import MESSAGE_TYPES, Message, Ping

CODES = sorted(MESSAGE_TYPES)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for any value of wire type *tp* (drawn from the attrs field types)."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(INT_MIN, INT_MAX)
    if tp is str:
        return st.text(max_size=24)
    if tp is bytes:
        return st.binary(max_size=24)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is Address:
        return st.builds(Address, st.text(max_size=16), st.integers(0, 65535))
    if attrs.has(tp):
        hints = typing.get_type_hints(tp)
        return st.builds(tp, **{f.name: strategy_for(hints[f.name]) for f in attrs.fields(tp)})
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(tp)[0]), max_size=4).map(tuple)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return st.none() | strategy_for(inner)
    raise TypeError(f"no strategy for {tp!r}")


def simplest(tp: Any) -> Any:
    """The simplest valid value of wire type *tp*."""
    if tp in (bool, int, str, bytes, float):
        return tp()
    if attrs.has(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: simplest(hints[f.name]) for f in attrs.fields(tp)})
    if typing.get_origin(tp) is tuple:
        return ()
    return None


def message_strategy(code: int) -> st.SearchStrategy[Message]:
    return typing.cast(st.SearchStrategy[Message], strategy_for(MESSAGE_TYPES[code]))


any_message: st.SearchStrategy[Message] = st.sampled_from(CODES).flatmap(message_strategy)


@pytest.mark.parametrize("code", CODES, ids=[MESSAGE_TYPES[c].__name__ for c in CODES])
@given(data=st.data())
def test_every_message_type_round_trips(code: int, data: st.DataObject) -> None:
    msg = data.draw(message_strategy(code))
    wire = encode(msg)
    assert decode(wire) == msg
    assert encode(decode(wire)) == wire  # canonical: re-encoding gives the same bytes
    assert encoded_size(msg) == len(wire)
    array = msgpack.unpackb(wire)
    assert array[0] == code
    assert len(array) == 1 + len(attrs.fields(type(msg)))


@given(msgs=st.lists(any_message, min_size=1, max_size=8))
def test_compound_round_trips(msgs: list[Message]) -> None:
    wire = encode_compound(msgs)
    assert wire == b"".join(encode(m) for m in msgs)
    assert decode_compound(wire) == (msgs, 0)


@given(msg=any_message)
def test_equal_messages_encode_to_equal_bytes(msg: Message) -> None:
    copy = attrs.evolve(msg)
    assert copy is not msg
    assert encode(copy) == encode(msg)


def _wrong_values(tp: Any) -> list[Any]:
    """Values of the wrong wire type for a field of type *tp* (as decoded msgpack)."""
    if tp is bool:
        return [0, 1, "true", None]
    if tp is int:
        return [True, False, "12", 1.0, None, b"\x01", [1]]
    if tp is str:
        return [b"x", 1, None, ["x"]]
    if tp is bytes:
        return ["x", 1, None, [1]]
    if tp is float:
        return [1, "1.0", None, True]
    if attrs.has(tp):
        return [1, "x", None, {}, [], [None] * (len(attrs.fields(tp)) + 1)]
    if typing.get_origin(tp) is tuple:
        return [1, "x", None, {}, [None]]
    return [object()]


def _field_cases() -> list[tuple[int, int, Any]]:
    cases = []
    for code in CODES:
        hints = typing.get_type_hints(MESSAGE_TYPES[code])
        for i, f in enumerate(attrs.fields(MESSAGE_TYPES[code])):
            for bad in _wrong_values(hints[f.name]):
                cases.append((code, i, bad))
    return cases


@pytest.mark.parametrize(("code", "index", "bad"), _field_cases())
def test_a_value_of_the_wrong_type_is_refused(code: int, index: int, bad: Any) -> None:
    msg = typing.cast(Message, simplest(MESSAGE_TYPES[code]))
    array = codec.converter.unstructure(msg)
    array[1 + index] = bad
    wire = msgpack.packb(array, use_bin_type=True)
    with pytest.raises(CodecError) as info:
        decode(wire)
    assert not isinstance(info.value, UnknownMessageType)


@given(data=st.data())
def test_short_and_long_arrays_are_refused(data: st.DataObject) -> None:
    msg = data.draw(any_message)
    fields = attrs.fields(type(msg))
    required = sum(1 for f in fields if f.default is attrs.NOTHING)
    array = codec.converter.unstructure(msg)
    for bad in (array[: 1 + required - 1], [*array, None], [*array, 0, 0]):
        if len(bad) == 0:
            continue
        with pytest.raises(CodecError):
            decode(msgpack.packb(bad, use_bin_type=True))


@given(data=st.data())
def test_omitted_trailing_defaults_are_filled(data: st.DataObject) -> None:
    """A peer that predates an appended field sends a shorter array: new peers fill the default."""
    msg = data.draw(any_message)
    fields = attrs.fields(type(msg))
    required = sum(1 for f in fields if f.default is attrs.NOTHING)
    array = codec.converter.unstructure(msg)[: 1 + required]
    decoded = decode(msgpack.packb(array, use_bin_type=True))
    expected = type(msg)(*[getattr(msg, f.name) for f in fields[:required]])
    assert decoded == expected


def test_unknown_type_code_is_its_own_error() -> None:
    with pytest.raises(UnknownMessageType) as info:
        decode(msgpack.packb([250, 1, "x"]))
    assert info.value.code == 250
    assert isinstance(info.value, CodecError)


def test_unknown_type_in_a_compound_is_skipped_and_counted() -> None:
    ping = Ping(seq=1, target="b", source="a")
    wire = encode(ping) + msgpack.packb([250, {"future": True}]) + encode(ping)
    assert decode_compound(wire) == ([ping, ping], 1)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2, "a", "b"]) + b"\x00",  # trailing byte
        msgpack.packb([1, 2, "a", "b"])[:-1],  # truncated
        msgpack.packb(True),
        msgpack.packb([True, 2, "a", "b"]),  # bool is not a type code
    ],
)
def test_malformed_compounds_are_refused(wire: bytes) -> None:
    with pytest.raises(CodecError):
        decode_compound(wire)


@pytest.mark.parametrize(
    "msg",
    [
        Ping(seq=True, target="b", source="a"),
        Ping(seq="1", target="b", source="a"),  # type: ignore[arg-type]
        Ping(seq=2**64, target="b", source="a"),
        Ping(seq=-(2**63) - 1, target="b", source="a"),
        Ping(seq=1, target=b"b", source="a"),  # type: ignore[arg-type]
    ],
)
def test_encode_refuses_values_of_the_wrong_type(msg: Message) -> None:
    with pytest.raises(CodecError):
        encode(msg)


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(CodecError):
        encode(Address("127.0.0.1", 1))  # type: ignore[arg-type]


def test_address_port_is_range_checked_both_ways() -> None:
    with pytest.raises(CodecError):
        codec.converter.unstructure(Address("::1", 70000))
    with pytest.raises(CodecError):
        codec.converter.structure(["::1", 70000], Address)
    assert codec.converter.structure(["::1", 65535], Address) == Address("::1", 65535)


def test_converter_hooks_are_strict_through_cattrs_too() -> None:
    assert codec.converter.structure([1, 5, "b", "a"], Ping) == Ping(5, "b", "a")
    with pytest.raises(CodecError):
        codec.converter.structure([1, "5", "b", "a"], Ping)
    with pytest.raises(CodecError):
        codec.converter.structure([2, 5, "b", "a"], Ping)  # wrong type code


@given(st.binary(max_size=200))
def test_decoding_random_bytes_raises_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)
    with contextlib.suppress(CodecError):
        decode_compound(data)


@given(msg=any_message, data=st.data())
def test_decoding_mutated_messages_raises_only_codec_errors(
    msg: Message, data: st.DataObject
) -> None:
    wire = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    for candidate in (bytes(wire), bytes(wire[:cut])):
        try:
            decoded = decode(candidate)
        except CodecError:
            continue
        assert type(decoded) in MESSAGE_TYPES.values()
