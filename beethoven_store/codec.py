"""Deterministic msgpack encoding of values, keys, deltas (= states) and digests.

Values are canonicalised before encoding (dict keys sorted, tuples as arrays), so
equal values give equal bytes and equal states give equal delta encodings — the
digest hashes rely on that. Each value is encoded once, at write time, and carried
as an opaque ``bin`` inside deltas and backend rows.

Every decode failure raises :class:`beethoven.errors.CodecError` and nothing else.
The byte layout is normative in ``specs/store.md`` §7.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgpack

from beethoven.errors import CodecError, StoreError
from beethoven_store.crdt import (
    Cover,
    DeltaParts,
    Entry,
    Key,
    LwwEntry,
    Marker,
    OwnerChunk,
    Value,
    WriterChunk,
)

__all__ = [
    "FORMAT_VERSION",
    "canonical_value",
    "decode_cover",
    "decode_delta",
    "decode_key",
    "decode_value",
    "encode_cover",
    "encode_delta",
    "encode_key",
    "encode_value",
    "pack_entry",
    "pack_lww_entry",
    "unpack",
    "validate_key",
]

logger = logging.getLogger(__name__)

#: First element of every encoded delta and digest.
FORMAT_VERSION = 1
#: Largest accepted input (a TCP frame cap bounds it much lower in practice).
MAX_INPUT = 64 * 1024 * 1024

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_pack = _packer.pack


def _ext_hook(code: int, data: bytes) -> Any:
    raise CodecError(f"unexpected msgpack extension type {code}")


def unpack(data: bytes, *, use_list: bool = False) -> Any:
    """Decode msgpack bytes strictly (no extensions, bounded sizes).

    Raises:
        CodecError: On any malformed input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_INPUT:
        raise CodecError(f"input of {len(data)} bytes exceeds {MAX_INPUT}")
    try:
        return msgpack.unpackb(
            data,
            use_list=use_list,
            raw=False,
            strict_map_key=True,
            ext_hook=_ext_hook,
            timestamp=0,
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises a zoo of ValueError/TypeError/...
        raise CodecError(f"malformed msgpack: {exc}") from None


# --------------------------------------------------------------------------- values


def canonical_value(value: Value) -> Value:
    """Validate a value and return its canonical form (dict keys sorted, tuples → lists).

    Raises:
        StoreError: If the value contains anything but None, bool, int (64-bit),
            float, str, bytes, lists/tuples and dicts with str keys.
    """
    t = type(value)
    if value is None or t is bool or t is float or t is str or t is bytes:
        return value
    if t is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise StoreError(f"integer {value} does not fit in 64 bits")
        return value
    if t is list or t is tuple:
        return [canonical_value(v) for v in value]
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise StoreError(f"dict keys must be str, got {type(k).__name__}")
        return {k: canonical_value(value[k]) for k in sorted(value)}
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise StoreError(f"unsupported value type {t.__name__}")


def encode_value(value: Value) -> bytes:
    """Validate and encode a value canonically.

    Raises:
        StoreError: If the value is not plain msgpack-able data.
    """
    return _pack(canonical_value(value))  # type: ignore[no-any-return]


def _check_value(v: Any) -> None:
    t = type(v)
    if t is list:
        for x in v:
            _check_value(x)
    elif t is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise CodecError("value dict keys must be str")
            _check_value(x)


def decode_value(raw: bytes) -> Value:
    """Decode a value encoded by :func:`encode_value`.

    Raises:
        CodecError: If ``raw`` is not a valid encoded value.
    """
    v = unpack(raw, use_list=True)
    t = type(v)
    if t is list or t is dict:
        _check_value(v)
    return v


# --------------------------------------------------------------------------- keys


def validate_key(key: object) -> Key:
    """Check that ``key`` is a non-empty tuple of str and int parts.

    Raises:
        StoreError: Otherwise.
    """
    if type(key) is not tuple or not key:
        raise StoreError(f"a key is a non-empty tuple of str/int, got {key!r}")
    for part in key:
        tp = type(part)
        if tp is not str and tp is not int:
            raise StoreError(f"key parts must be str or int, got {part!r}")
        if tp is int and not _INT_MIN <= part <= _INT_MAX:
            raise StoreError(f"key part {part} does not fit in 64 bits")
    return key


def _decode_key(obj: Any) -> Key:
    if type(obj) is not tuple or not obj:
        raise CodecError(f"malformed key {obj!r}")
    for part in obj:
        tp = type(part)
        if tp is not str and tp is not int:
            raise CodecError(f"malformed key part {part!r}")
    key: Key = obj
    return key


def encode_key(key: Key) -> bytes:
    """Encode a key (a msgpack array) for backend rows."""
    return _pack(key)  # type: ignore[no-any-return]


def decode_key(data: bytes) -> Key:
    """Decode a key encoded by :func:`encode_key`.

    Raises:
        CodecError: If malformed.
    """
    return _decode_key(unpack(data))


# --------------------------------------------------------------------------- covers


def encode_cover(cover: Cover) -> list[int]:
    """Flatten a cover to ``[lo1, hi1, lo2, hi2, ...]``."""
    return [x for iv in cover for x in iv]


def decode_cover(obj: Any) -> Cover:
    """Rebuild and validate a cover from its flat form.

    Raises:
        CodecError: If not sorted, disjoint, non-adjacent, positive intervals.
    """
    if type(obj) is not tuple or len(obj) % 2:
        raise CodecError("malformed cover")
    out: list[tuple[int, int]] = []
    prev = 0
    for i in range(0, len(obj), 2):
        lo, hi = obj[i], obj[i + 1]
        if type(lo) is not int or type(hi) is not int or lo < 1 or hi < lo:
            raise CodecError("malformed cover interval")
        if out and lo <= prev + 1:
            raise CodecError("malformed cover interval")
        out.append((lo, hi))
        prev = hi
    return tuple(out)


# --------------------------------------------------------------------------- entries


def pack_entry(e: Entry) -> bytes:
    """Return (and cache) the bytes of an owner entry ``[key, version, hlc, raw, volatile]``."""
    p = e.packed
    if p is None:
        p = e.packed = bytes(_pack((e.key, e.version, e.hlc, e.raw, e.volatile)))
    return p


def pack_lww_entry(e: LwwEntry) -> bytes:
    """Return (and cache) the msgpack bytes of an LWW entry: ``[key, hlc, seq, raw]``."""
    p = e.packed
    if p is None:
        p = e.packed = bytes(_pack((e.key, e.hlc, e.seq, e.raw)))
    return p


def _array(items: Iterable[bytes], n: int) -> bytes:
    return _packer.pack_array_header(n) + b"".join(items)  # type: ignore[no-any-return]


def owner_chunk_head(c: OwnerChunk, cover: Cover | None = None) -> bytes:
    """Return the bytes of an owner chunk up to (excluding) its entries array."""
    return _packer.pack_array_header(6) + b"".join(  # type: ignore[no-any-return]
        (
            _pack(c.owner),
            _pack(c.generation),
            _pack(c.gc),
            _pack(c.reset),
            _pack(encode_cover(c.cover if cover is None else cover)),
        )
    )


def writer_chunk_head(c: WriterChunk, cover: Cover | None = None) -> bytes:
    """Return the bytes of a writer chunk up to (excluding) its entries array."""
    return _packer.pack_array_header(3) + b"".join(  # type: ignore[no-any-return]
        (_pack(c.writer), _pack(encode_cover(c.cover if cover is None else cover)))
    )


def encode_owner_chunk(c: OwnerChunk) -> bytes:
    """Encode one owner chunk."""
    return owner_chunk_head(c) + _array((pack_entry(e) for e in c.entries), len(c.entries))


def encode_writer_chunk(c: WriterChunk) -> bytes:
    """Encode one writer chunk."""
    return writer_chunk_head(c) + _array((pack_lww_entry(e) for e in c.entries), len(c.entries))


def encode_marker(owner: str, mk: Marker) -> bytes:
    """Encode one removal marker ``[owner, generation, removed_hlc]``."""
    return _pack((owner, mk.generation, mk.removed_hlc))  # type: ignore[no-any-return]


def assemble_delta(
    owners: list[bytes], markers: list[bytes], writers: list[bytes], truncated: bool
) -> bytes:
    """Assemble pre-encoded parts into a delta ``[1, truncated, owners, markers, writers]``."""
    return b"".join(
        (
            _packer.pack_array_header(5),
            _pack(FORMAT_VERSION),
            _pack(truncated),
            _array(owners, len(owners)),
            _array(markers, len(markers)),
            _array(writers, len(writers)),
        )
    )


def encode_delta(parts: DeltaParts) -> bytes:
    """Encode a delta (or a full state) deterministically."""
    return assemble_delta(
        [encode_owner_chunk(c) for c in parts.owners],
        [encode_marker(o, mk) for o, mk in parts.markers],
        [encode_writer_chunk(c) for c in parts.writers],
        parts.truncated,
    )


def _int(x: Any, what: str) -> int:
    if type(x) is not int or x < 0:
        raise CodecError(f"malformed {what}: {x!r}")
    return x


def _str(x: Any, what: str) -> str:
    if type(x) is not str:
        raise CodecError(f"malformed {what}: {x!r}")
    return x


def _tuple(x: Any, n: int | None, what: str) -> tuple[Any, ...]:
    if type(x) is not tuple or (n is not None and len(x) != n):
        raise CodecError(f"malformed {what}")
    return x


def _raw(x: Any) -> tuple[bytes | None, Value]:
    if x is None:
        return None, None
    if type(x) is not bytes:
        raise CodecError("malformed value bytes")
    return x, decode_value(x)


def decode_delta(data: bytes) -> DeltaParts:
    """Decode and validate a delta produced by :func:`encode_delta` or a store.

    Raises:
        CodecError: On any malformed input (and only that).
    """
    top = _tuple(unpack(data), 5, "delta")
    if top[0] != FORMAT_VERSION:
        raise CodecError(f"unsupported delta format {top[0]!r}")
    if type(top[1]) is not bool:
        raise CodecError("malformed delta flags")
    owners: list[OwnerChunk] = []
    for oc in _tuple(top[2], None, "owner chunks"):
        name, gen, gc, reset, cov, ents = _tuple(oc, 6, "owner chunk")
        if type(reset) is not bool:
            raise CodecError("malformed reset flag")
        entries = []
        for ent in _tuple(ents, None, "owner entries"):
            key, version, hlc, raw, volatile = _tuple(ent, 5, "owner entry")
            if type(volatile) is not bool:
                raise CodecError("malformed volatile flag")
            r, v = _raw(raw)
            entries.append(
                Entry(
                    _decode_key(key),
                    _int(version, "version"),
                    _int(hlc, "hlc"),
                    r,
                    v,
                    volatile,
                )
            )
        owners.append(
            OwnerChunk(
                _str(name, "owner"),
                _int(gen, "generation"),
                _int(gc, "gc"),
                reset,
                decode_cover(cov),
                tuple(entries),
            )
        )
    markers: list[tuple[str, Marker]] = []
    for mk in _tuple(top[3], None, "markers"):
        name, gen, when = _tuple(mk, 3, "marker")
        markers.append((_str(name, "owner"), Marker(_int(gen, "generation"), _int(when, "hlc"))))
    writers: list[WriterChunk] = []
    for wc in _tuple(top[4], None, "writer chunks"):
        wname, cov, ents = _tuple(wc, 3, "writer chunk")
        w = _str(wname, "writer")
        lentries = []
        for ent in _tuple(ents, None, "lww entries"):
            key, hlc, seq, raw = _tuple(ent, 4, "lww entry")
            r, v = _raw(raw)
            lentries.append(LwwEntry(_decode_key(key), _int(hlc, "hlc"), w, _int(seq, "seq"), r, v))
        writers.append(WriterChunk(w, decode_cover(cov), tuple(lentries)))
    return DeltaParts(tuple(owners), tuple(markers), tuple(writers), top[1])
