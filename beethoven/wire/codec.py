"""The message codec: attrs records <-> msgpack arrays, strictly typed.

A message is one msgpack array ``[TYPE, field1, field2, ...]``: the class's small
integer type code first, then every attrs field in declaration order. Nested records
(`Address`, `MemberDigest`, ...) are arrays of their fields without a type code;
``tuple[X, ...]`` is an array of X. A *compound* is several messages concatenated
(one msgpack object after the other, nothing in between). The byte layout and the
compatibility rules are in ``specs/wire.md``.

The codec is a `cattrs.Converter` whose per-class structure and unstructure hooks are
generated from ``attrs.fields`` by hook factories (Python source compiled once per
class, so the hot path is one function call per record). Unlike cattrs' defaults the
generated hooks never coerce: a ``str`` where an ``int`` belongs, a ``bool`` where an
``int`` belongs, a short or long array, a map, an extension type — every mismatch is
a `CodecError`. Encoding is deterministic: equal messages give equal bytes.
"""

from __future__ import annotations

import linecache
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import cattrs
import msgpack

from beethoven.address import Address
from beethoven.errors import CodecError
from beethoven.wire.messages import MESSAGE_TYPES, Message

__all__ = [
    "UnknownMessageType",
    "converter",
    "decode",
    "decode_compound",
    "encode",
    "encode_compound",
    "encoded_size",
]

#: Smallest and largest integer the wire carries (msgpack int64 / uint64).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

#: Extra bounds on particular integer fields, checked both ways.
_INT_BOUNDS: dict[tuple[type, str], tuple[int, int]] = {
    (Address, "port"): (0, 65535),
}

_PRIMITIVES: dict[Any, str] = {int: "int", bool: "bool", str: "str", bytes: "bytes", float: "float"}


class UnknownMessageType(CodecError):
    """The bytes are a well-formed message array whose type code this peer does not know.

    Attributes:
        code: the unknown type code.
    """

    def __init__(self, code: int) -> None:
        super().__init__(f"unknown message type {code}")
        self.code = code


def _bad(where: str, expected: str, value: object) -> CodecError:
    """Build the error for a value of the wrong wire type."""
    return CodecError(f"{where}: expected {expected}, got {type(value).__name__}")


def _bad_int(where: str, value: int, lo: int, hi: int) -> CodecError:
    return CodecError(f"{where}: {value} out of range {lo}..{hi}")


def _bad_len(cls_name: str, got: int, lo: int, hi: int) -> CodecError:
    want = str(hi) if lo == hi else f"{lo}..{hi}"
    return CodecError(f"{cls_name}: expected an array of {want} items, got {got}")


# --- hook generation --------------------------------------------------------------------


class _Gen:
    """Accumulates the source and globals of one generated hook."""

    def __init__(self, converter: cattrs.Converter) -> None:
        self.converter = converter
        self.lines: list[str] = []
        self.globs: dict[str, Any] = {
            "_bad": _bad,
            "_bad_int": _bad_int,
            "_bad_len": _bad_len,
            "CodecError": CodecError,
        }
        self._n = 0

    def name(self, prefix: str, value: Any) -> str:
        self._n += 1
        key = f"_{prefix}{self._n}"
        self.globs[key] = value
        return key

    def check(
        self,
        var: str,
        tp: Any,
        where: str,
        indent: str,
        *,
        decode: bool,
        bounds: tuple[int, int] | None = None,
    ) -> str:
        """Emit checks for *var* of wire type *tp*; return the expression to use for it."""
        origin = typing.get_origin(tp)
        if tp in _PRIMITIVES:
            self.lines.append(f"{indent}if type({var}) is not {tp.__name__}:")
            self.lines.append(f"{indent}    raise _bad({where!r}, {_PRIMITIVES[tp]!r}, {var})")
            if tp is int:
                lo, hi = bounds if bounds is not None else (INT_MIN, INT_MAX)
                if bounds is not None or not decode:
                    # msgpack only ever decodes ints inside int64/uint64, so the default
                    # range needs checking on the way out only.
                    self.lines.append(f"{indent}if not {lo} <= {var} <= {hi}:")
                    self.lines.append(f"{indent}    raise _bad_int({where!r}, {var}, {lo}, {hi})")
            return var
        if attrs.has(tp):
            hook = (
                self.converter.get_structure_hook(tp)
                if decode
                else self.converter.get_unstructure_hook(tp)
            )
            return f"{self.name('h', hook)}({var})"
        if origin is tuple:
            args = typing.get_args(tp)
            if len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"{where}: only tuple[X, ...] is supported, not {tp!r}")
            item = args[0]
            want = "list" if decode else "tuple"
            self.lines.append(f"{indent}if type({var}) is not {want}:")
            self.lines.append(f"{indent}    raise _bad({where!r}, 'array', {var})")
            if item in _PRIMITIVES:
                self.lines.append(f"{indent}for _x in {var}:")
                self.check("_x", item, where + "[]", indent + "    ", decode=decode)
                return f"tuple({var})" if decode else f"list({var})"
            if attrs.has(item):
                hook = (
                    self.converter.get_structure_hook(item)
                    if decode
                    else self.converter.get_unstructure_hook(item)
                )
                fn = self.name("h", hook)
                return (
                    f"tuple([{fn}(_x) for _x in {var}])"
                    if decode
                    else f"[{fn}(_x) for _x in {var}]"
                )
            # Anything else (ints, nested tuples, optionals): a small per-item hook.
            fn = self.name("i", _item_hook(self.converter, item, where + "[]", decode=decode))
            return f"tuple([{fn}(_x) for _x in {var}])" if decode else f"[{fn}(_x) for _x in {var}]"
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1 or len(args) != 2:
                raise TypeError(f"{where}: only X | None unions are supported, not {tp!r}")
            fn = self.name("i", _item_hook(self.converter, rest[0], where, decode=decode))
            return f"(None if {var} is None else {fn}({var}))"
        raise TypeError(f"{where}: the wire codec cannot carry {tp!r}")


def _item_hook(
    converter: cattrs.Converter, tp: Any, where: str, *, decode: bool
) -> Callable[[Any], Any]:
    """Compile a one-value checker/converter for a type nested in a tuple or optional."""
    gen = _Gen(converter)
    gen.lines.append("def _item(v):")
    expr = gen.check("v", tp, where, "    ", decode=decode)
    gen.lines.append(f"    return {expr}")
    return typing.cast(Callable[[Any], Any], _compile(gen, f"item {where}", "_item"))


def _compile(gen: _Gen, label: str, fn_name: str) -> Any:
    source = "\n".join(gen.lines) + "\n"
    filename = f"<beethoven.wire.codec {label}>"
    # Register the source so tracebacks and profilers show the generated lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), gen.globs)
    return gen.globs[fn_name]


def _field_types(cls: type) -> list[tuple[attrs.Attribute[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in attrs.fields(cls)]


def _make_unstructure(cls: type, converter: cattrs.Converter) -> Callable[[Any], Any]:
    """Hook factory: generate ``obj -> [TYPE?, field1, ...]`` for the attrs class *cls*."""
    gen = _Gen(converter)
    code = getattr(cls, "TYPE", None)
    gen.lines.append("def unstructure(o):")
    items: list[str] = [] if code is None else [str(int(code))]
    for i, (f, tp) in enumerate(_field_types(cls)):
        var = f"v{i}"
        gen.lines.append(f"    {var} = o.{f.name}")
        bounds = _INT_BOUNDS.get((cls, f.name))
        items.append(
            gen.check(var, tp, f"{cls.__name__}.{f.name}", "    ", decode=False, bounds=bounds)
        )
    gen.lines.append(f"    return [{', '.join(items)}]")
    return typing.cast(
        Callable[[Any], Any], _compile(gen, f"unstructure {cls.__qualname__}", "unstructure")
    )


def _make_structure(cls: type, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Hook factory: generate ``[TYPE?, field1, ...] -> obj`` for the attrs class *cls*.

    Arrays may omit trailing fields that have a default (a peer that predates an
    appended field); arrays longer than the known fields are refused.
    """
    gen = _Gen(converter)
    code = getattr(cls, "TYPE", None)
    off = 0 if code is None else 1
    fields = _field_types(cls)
    required = 0
    for i, (f, _tp) in enumerate(fields):
        if f.default is attrs.NOTHING:
            if i != required:
                raise TypeError(
                    f"{cls.__name__}.{f.name}: a required field follows a defaulted one"
                )
            required += 1
    lo, hi = off + required, off + len(fields)
    gen.globs["_cls"] = cls
    gen.lines.append("def structure(a, _t=None):")
    gen.lines.append("    if type(a) is not list:")
    gen.lines.append(f"        raise _bad({cls.__name__!r}, 'array', a)")
    gen.lines.append("    n = len(a)")
    gen.lines.append(f"    if n < {lo} or n > {hi}:")
    gen.lines.append(f"        raise _bad_len({cls.__name__!r}, n, {lo}, {hi})")
    if code is not None:
        gen.lines.append(f"    if a[0] != {int(code)} or type(a[0]) is not int:")
        gen.lines.append(f"        raise CodecError('{cls.__name__}: wrong type code')")
    args: list[str] = []
    for i, (f, tp) in enumerate(fields):
        var = f"v{i}"
        where = f"{cls.__name__}.{f.name}"
        bounds = _INT_BOUNDS.get((cls, f.name))
        if i < required:
            gen.lines.append(f"    {var} = a[{off + i}]")
            expr = gen.check(var, tp, where, "    ", decode=True, bounds=bounds)
            if expr != var:
                gen.lines.append(f"    {var} = {expr}")
        else:
            gen.lines.append(f"    if n > {off + i}:")
            gen.lines.append(f"        {var} = a[{off + i}]")
            expr = gen.check(var, tp, where, "        ", decode=True, bounds=bounds)
            if expr != var:
                gen.lines.append(f"        {var} = {expr}")
            gen.lines.append("    else:")
            default: Any = f.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                if default.takes_self:
                    raise TypeError(f"{where}: a Factory(takes_self=True) default cannot be filled")
                fn = gen.name("f", default.factory)
                gen.lines.append(f"        {var} = {fn}()")
            else:
                gen.lines.append(f"        {var} = {gen.name('d', default)}")
        args.append(f"{f.alias}={var}" if f.kw_only else var)
    gen.lines.append(f"    return _cls({', '.join(args)})")
    return typing.cast(
        Callable[[Any, Any], Any], _compile(gen, f"structure {cls.__qualname__}", "structure")
    )


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook_factory(attrs.has, _make_unstructure)
    conv.register_structure_hook_factory(attrs.has, _make_structure)
    return conv


#: The wire converter. ``converter.unstructure(msg)`` gives the msgpack-ready array and
#: ``converter.structure(array, cls)`` checks and rebuilds a record of class *cls*.
converter: cattrs.Converter = _make_converter()

# Hot-path tables: the generated hooks, looked up once.
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    cls: converter.get_unstructure_hook(cls) for cls in MESSAGE_TYPES.values()
}
_DECODERS: dict[int, Callable[[Any, Any], Any]] = {
    code: converter.get_structure_hook(cls) for code, cls in MESSAGE_TYPES.items()
}

_packb = msgpack.Packer(use_bin_type=True, strict_types=True, autoreset=True).pack


# --- public API ------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Encode one message as a msgpack array ``[TYPE, field1, ...]``.

    Args:
        msg: an instance of one of the classes in `MESSAGE_TYPES`.

    Returns:
        The canonical bytes (equal messages always give equal bytes).

    Raises:
        CodecError: *msg* is not a wire message, or a field holds a value of the wrong
            type or out of range.
    """
    hook = _ENCODERS.get(type(msg))
    if hook is None:
        raise CodecError(f"not a wire message: {type(msg).__name__}")
    array = hook(msg)
    try:
        return typing.cast(bytes, _packb(array))
    except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - hooks check first
        raise CodecError(f"cannot encode {type(msg).__name__}: {exc}") from exc


def encoded_size(msg: Message) -> int:
    """Return the number of bytes `encode` produces for *msg*.

    Raises:
        CodecError: as `encode`.
    """
    return len(encode(msg))


def encode_compound(msgs: Iterable[Message]) -> bytes:
    """Encode several messages as one compound: their encodings concatenated.

    Raises:
        CodecError: as `encode`.
    """
    return b"".join([encode(m) for m in msgs])


def _from_array(obj: Any) -> Message:
    if type(obj) is not list or not obj:
        raise _bad("message", "non-empty array", obj)
    code = obj[0]
    if type(code) is not int:
        raise _bad("message type code", "int", code)
    hook = _DECODERS.get(code)
    if hook is None:
        raise UnknownMessageType(code)
    try:
        return typing.cast(Message, hook(obj, None))
    except CodecError:
        raise
    except Exception as exc:  # a validator on a record, or anything unforeseen
        raise CodecError(f"bad message of type {code}: {exc!r}") from exc


def _unpack_one(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData:
        raise CodecError("trailing bytes after the message") from None
    except Exception as exc:
        raise CodecError(f"malformed msgpack: {exc!r}") from None


def decode(data: bytes) -> Message:
    """Decode exactly one message.

    Args:
        data: the bytes of one msgpack array, nothing before or after it.

    Returns:
        The message.

    Raises:
        UnknownMessageType: a well-formed array whose type code is not known here.
        CodecError: anything else wrong: malformed msgpack, trailing bytes, a
            non-array, a short or long array, a value of the wrong type. No other
            exception escapes.
    """
    return _from_array(_unpack_one(data))


def decode_compound(data: bytes) -> tuple[list[Message], int]:
    """Decode a compound (concatenated messages).

    A message of an unknown type is skipped and counted; any other defect rejects
    the whole compound.

    Args:
        data: one or more encoded messages back to back.

    Returns:
        The decoded messages in order, and the number of unknown-type messages skipped.

    Raises:
        CodecError: the compound is empty, truncated or holds a malformed message.
    """
    if not data:
        raise CodecError("empty compound")
    try:
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=True, use_list=True, max_buffer_size=len(data)
        )
        unpacker.feed(data)
        objs = []
        consumed = 0
        for obj in unpacker:
            objs.append(obj)
            # tell() after the loop counts a trailing partial object too; after each
            # complete object it is exactly where that object ends.
            consumed = unpacker.tell()
    except Exception as exc:
        raise CodecError(f"malformed msgpack: {exc!r}") from None
    if consumed != len(data):
        raise CodecError(f"truncated compound: {len(data) - consumed} stray bytes at the end")
    out: list[Message] = []
    skipped = 0
    for obj in objs:
        try:
            out.append(_from_array(obj))
        except UnknownMessageType:
            skipped += 1
    return out, skipped
