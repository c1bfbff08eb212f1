"""Anti-entropy: hierarchical digests and byte-budgeted ``delta_since``.

A digest describes what a replica holds without the data:

* an *item* per owner ``(generation, gc, cover)`` (or its removal marker) and per
  LWW writer ``(cover)``;
* items fall into 1 024 buckets by a hash of their name; a bucket hash is the XOR
  of its items' 64-bit hashes, and the root hash covers all bucket hashes.

Three digest kinds, from small to large:

* **root** — the 8-byte root hash: all a quiet cluster exchanges;
* **summary** — 16 bits per bucket (2 KiB): enough to find the differing buckets
  (a collision is caught by the root, which then widens the scope to all buckets);
* **detail** — the items of a set of buckets (or all). A *partial* detail lists
  only the items that differ from the peer's previous detail (an item the sender
  lacks is listed as generation 0 / empty cover); unlisted items in scope are equal.

``delta_since(detail, budget)`` returns, per owner and writer, what the peer
lacks, cut at ``budget`` bytes so that the cut delta is still a valid prefix (it
never makes the receiver delete anything it holds). Only a reset (an owner's
whole state, sent when the peer is behind our GC point) is atomic and may exceed
the budget when it is the first part of a reply.

All functions here are pure (no I/O).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import msgpack

from beethoven.errors import CodecError
from beethoven_store import codec
from beethoven_store.crdt import (
    Cover,
    LWWMap,
    OwnerChunk,
    OwnerMap,
    WriterChunk,
    cover_clip,
)

__all__ = [
    "BUCKETS",
    "SMALL_DIGEST_ITEMS",
    "Detail",
    "Root",
    "Summary",
    "SyncReply",
    "bucket_hashes",
    "bucket_of",
    "decode_digest",
    "delta_since",
    "detail_digest",
    "differing_buckets",
    "full_state",
    "item_count",
    "partial_detail_digest",
    "root_digest",
    "root_hash",
    "summary_digest",
]

logger = logging.getLogger(__name__)

#: Number of digest buckets.
BUCKETS = 1024
#: Up to this many items a replica opens with a detail digest straight away.
SMALL_DIGEST_ITEMS = 64

_KIND_SUMMARY = 0
_KIND_DETAIL = 1
_KIND_ROOT = 2
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack

_bucket_cache: dict[tuple[int, str], int] = {}

OwnerItem = tuple[int, int, Cover, bool]


def bucket_of(space: int, name: str) -> int:
    """Return the digest bucket of an owner (space 0) or writer (space 1)."""
    b = _bucket_cache.get((space, name))
    if b is None:
        h = hashlib.blake2b(bytes((space,)) + name.encode(), digest_size=2).digest()
        b = int.from_bytes(h, "big") % BUCKETS
        if len(_bucket_cache) < 100_000:
            _bucket_cache[(space, name)] = b
    return b


@attrs.frozen
class SyncReply:
    """One anti-entropy answer, field for field a ``StoreSyncReply`` wire message.

    Attributes:
        delta: Encoded delta for the peer (``b""`` when none).
        digest: A digest the peer should answer with ``Store.reconcile`` (``b""``: done).
        more: Whether the delta was cut at the budget (run another round soon).
    """

    delta: bytes = b""
    digest: bytes = b""
    more: bool = False


@attrs.frozen
class Root:
    """A decoded root digest."""

    root: bytes


@attrs.frozen
class Summary:
    """A decoded summary digest: the root and 16 bits per bucket."""

    root: bytes
    buckets: bytes


@attrs.frozen
class Detail:
    """A decoded detail digest.

    Attributes:
        stage: 1 = "answer with a delta and your partial detail", 2 = "answer with a delta".
        partial: Unlisted items in scope are equal to the receiver's.
        scope: Bucket numbers described, or ``None`` for all.
        owners: ``owner → (generation, gc, cover, removed)``.
        writers: ``writer → cover``.
    """

    stage: int
    partial: bool
    scope: frozenset[int] | None
    owners: dict[str, OwnerItem]
    writers: dict[str, Cover]

    def in_scope(self, space: int, name: str) -> bool:
        """Whether an item falls in this digest's buckets."""
        return self.scope is None or bucket_of(space, name) in self.scope


def _owner_items(om: OwnerMap) -> Iterable[tuple[str, OwnerItem]]:
    for o, st in om.owners.items():
        yield o, (st.generation, st.gc, st.cover, False)
    for o, mk in om.markers.items():
        if o not in om.owners:
            yield o, (mk.generation, 0, (), True)


def _item_bytes_owner(name: str, item: OwnerItem) -> Any:
    return (name, item[0], item[1], codec.encode_cover(item[2]), item[3])


def _hash(b: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "big")


def bucket_hashes(om: OwnerMap, lww: LWWMap) -> list[int]:
    """Return the 64-bit bucket hashes of a replica."""
    out = [0] * BUCKETS
    for o, item in _owner_items(om):
        out[bucket_of(0, o)] ^= _hash(b"\x00" + _pack(_item_bytes_owner(o, item)))
    for w, cov in lww.covers.items():
        out[bucket_of(1, w)] ^= _hash(b"\x01" + _pack((w, codec.encode_cover(cov))))
    return out


def _root(hashes: list[int]) -> bytes:
    blob = b"".join(h.to_bytes(8, "big") for h in hashes)
    return hashlib.blake2b(blob, digest_size=8).digest()


def item_count(om: OwnerMap, lww: LWWMap) -> int:
    """Return the number of digest items (owners, markers, writers)."""
    return sum(1 for _ in _owner_items(om)) + len(lww.covers)


def root_hash(om: OwnerMap, lww: LWWMap) -> bytes:
    """Return the 8-byte root hash of a replica."""
    return _root(bucket_hashes(om, lww))


def root_digest(om: OwnerMap, lww: LWWMap) -> bytes:
    """Encode a root digest ``[1, 2, root]``."""
    return _pack((codec.FORMAT_VERSION, _KIND_ROOT, _root(bucket_hashes(om, lww))))  # type: ignore[no-any-return]


def summary_digest(om: OwnerMap, lww: LWWMap) -> bytes:
    """Encode a summary digest ``[1, 0, root, 16-bit bucket hashes]``."""
    hashes = bucket_hashes(om, lww)
    blob = b"".join((h & 0xFFFF).to_bytes(2, "big") for h in hashes)
    return _pack((codec.FORMAT_VERSION, _KIND_SUMMARY, _root(hashes), blob))  # type: ignore[no-any-return]


def _bitmap(scope: frozenset[int] | None) -> bytes | None:
    if scope is None:
        return None
    bits = bytearray(BUCKETS // 8)
    for b in scope:
        bits[b >> 3] |= 1 << (b & 7)
    return bytes(bits)


def detail_digest(
    om: OwnerMap, lww: LWWMap, *, scope: Iterable[int] | None = None, stage: int = 2
) -> bytes:
    """Encode a detail digest of the given buckets (all if ``scope`` is ``None``).

    Layout: ``[1, 1, stage, partial, scope_bitmap | nil, [[owner, gen, gc, cover,
    removed]...], [[writer, cover]...]]``, items sorted by name.
    """
    sc = None if scope is None else frozenset(scope)
    owners = sorted(
        _item_bytes_owner(o, item)
        for o, item in _owner_items(om)
        if sc is None or bucket_of(0, o) in sc
    )
    writers = sorted(
        (w, codec.encode_cover(cov))
        for w, cov in lww.covers.items()
        if sc is None or bucket_of(1, w) in sc
    )
    return _pack(  # type: ignore[no-any-return]
        (codec.FORMAT_VERSION, _KIND_DETAIL, stage, False, _bitmap(sc), owners, writers)
    )


def partial_detail_digest(om: OwnerMap, lww: LWWMap, peer: Detail) -> bytes:
    """Encode a stage-2 partial detail answering ``peer``: only the items that differ.

    Items the peer listed and we lack are sent as generation 0 / empty cover.
    """
    mine = dict(_owner_items(om))
    owners = []
    for o, item in mine.items():
        if peer.in_scope(0, o) and peer.owners.get(o) != item:
            owners.append(_item_bytes_owner(o, item))
    for o in peer.owners:
        if o not in mine:
            owners.append(_item_bytes_owner(o, (0, 0, (), False)))
    writers = []
    for w, cov in lww.covers.items():
        if peer.in_scope(1, w) and peer.writers.get(w) != cov:
            writers.append((w, codec.encode_cover(cov)))
    for w in peer.writers:
        if w not in lww.covers:
            writers.append((w, []))
    owners.sort()
    writers.sort()
    return _pack(  # type: ignore[no-any-return]
        (codec.FORMAT_VERSION, _KIND_DETAIL, 2, True, _bitmap(peer.scope), owners, writers)
    )


def decode_digest(data: bytes) -> Root | Summary | Detail:
    """Decode a digest of any kind.

    Raises:
        CodecError: If malformed.
    """
    top = codec.unpack(data)
    if type(top) is not tuple or len(top) < 3 or top[0] != codec.FORMAT_VERSION:
        raise CodecError("malformed digest")
    if top[1] == _KIND_ROOT:
        if len(top) != 3 or type(top[2]) is not bytes or len(top[2]) != 8:
            raise CodecError("malformed root digest")
        return Root(top[2])
    if top[1] == _KIND_SUMMARY:
        if len(top) != 4 or type(top[2]) is not bytes or type(top[3]) is not bytes:
            raise CodecError("malformed summary digest")
        if len(top[2]) != 8 or len(top[3]) != 2 * BUCKETS:
            raise CodecError("malformed summary digest sizes")
        return Summary(top[2], top[3])
    if top[1] != _KIND_DETAIL or len(top) != 7:
        raise CodecError("malformed detail digest")
    _, _, stage, partial, bitmap, owners, writers = top
    if stage not in (1, 2) or type(partial) is not bool:
        raise CodecError("malformed digest stage")
    scope: frozenset[int] | None = None
    if bitmap is not None:
        if type(bitmap) is not bytes or len(bitmap) != BUCKETS // 8:
            raise CodecError("malformed digest scope")
        scope = frozenset(i for i in range(BUCKETS) if bitmap[i >> 3] >> (i & 7) & 1)
    od: dict[str, OwnerItem] = {}
    if type(owners) is not tuple or type(writers) is not tuple:
        raise CodecError("malformed digest items")
    for it in owners:
        if type(it) is not tuple or len(it) != 5:
            raise CodecError("malformed owner digest item")
        name, gen, gc, cov, removed = it
        if type(name) is not str or type(gen) is not int or type(gc) is not int:
            raise CodecError("malformed owner digest item")
        if type(removed) is not bool or gen < 0 or gc < 0:
            raise CodecError("malformed owner digest item")
        od[name] = (gen, gc, codec.decode_cover(cov), removed)
    wd: dict[str, Cover] = {}
    for it in writers:
        if type(it) is not tuple or len(it) != 2 or type(it[0]) is not str:
            raise CodecError("malformed writer digest item")
        wd[it[0]] = codec.decode_cover(it[1])
    return Detail(stage, partial, scope, od, wd)


def differing_buckets(mine: list[int], summary: Summary) -> list[int]:
    """Return the buckets whose 16-bit hashes differ from a peer's summary.

    When the roots differ but no bucket does (a 16-bit collision), every bucket
    is returned.
    """
    blob = summary.buckets
    diff = [
        i
        for i in range(BUCKETS)
        if (mine[i] & 0xFFFF).to_bytes(2, "big") != blob[2 * i : 2 * i + 2]
    ]
    if not diff and _root(mine) != summary.root:
        return list(range(BUCKETS))
    return diff


class _Budget:
    __slots__ = ("left", "used_any")

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.used_any = False

    def take(self, n: int, force: bool = False) -> bool:
        if n <= self.left or (force and not self.used_any):
            self.spend(n)
            return True
        return False

    def spend(self, n: int) -> None:
        """Account for *n* bytes sent whatever is left (an overshoot ends the reply)."""
        self.left -= n
        self.used_any = True


def _fitting_prefix(head_len: int, packed: list[bytes], budget: _Budget) -> int:
    """How many leading entries of a chunk to send from what is left of *budget*.

    The budget is soft: entries are taken while some of it is left, and the entry
    that crosses it is still taken; so is the first entry of a reply. An entry
    larger than the whole budget is thus sent (alone, or after what fitted before
    it) rather than never: every reply makes progress, and a reply exceeds the
    budget by at most one entry and its chunk head.
    """
    n = 0
    size = head_len + 5
    for p in packed:
        if size >= budget.left and (n or budget.used_any):
            break
        size += len(p)
        n += 1
    return n


def _cut(
    cover: Cover,
    head_of: Callable[[Cover], bytes],
    numbers: list[int],
    packed: list[bytes],
    budget: _Budget,
) -> tuple[bytes | None, bool]:
    """Send a whole chunk if it fits, else the prefix `_fitting_prefix` allows.

    ``numbers`` are the entries' versions (owner) or seqs (writer), ascending. A
    cut chunk claims ``cover`` only below the first entry left out, so every
    claimed number's entry is included and the receiver skips nothing.
    """
    head = head_of(cover)
    whole = head + codec._array(packed, len(packed))
    if budget.take(len(whole)):
        return whole, False
    n = _fitting_prefix(len(head), packed, budget)
    if n == len(packed) and (n or not budget.used_any):
        # Every entry is in (the last one crossed the budget): nothing is left out.
        budget.spend(len(whole))
        budget.left = min(budget.left, 0)
        return whole, False
    if n == 0:
        return None, True
    enc = head_of(cover_clip(cover, numbers[n] - 1)) + codec._array(packed[:n], n)
    budget.spend(len(enc))
    budget.left = min(budget.left, 0)
    return enc, True


def _cut_owner_chunk(c: OwnerChunk, budget: _Budget) -> tuple[bytes | None, bool]:
    """Encode as much of ``c`` as the budget allows; return ``(bytes or None, truncated)``."""
    if c.reset:
        enc = codec.encode_owner_chunk(c)
        if budget.take(len(enc), force=True):
            return enc, False
        return None, True
    return _cut(
        c.cover,
        lambda cover: codec.owner_chunk_head(c, cover),
        [e.version for e in c.entries],
        [codec.pack_entry(e) for e in c.entries],
        budget,
    )


def _cut_writer_chunk(c: WriterChunk, budget: _Budget) -> tuple[bytes | None, bool]:
    """Encode as much of ``c`` as the budget allows; return ``(bytes or None, truncated)``."""
    return _cut(
        c.cover,
        lambda cover: codec.writer_chunk_head(c, cover),
        [e.seq for e in c.entries],
        [codec.pack_lww_entry(e) for e in c.entries],
        budget,
    )


def delta_since(
    om: OwnerMap, lww: LWWMap, peer: Detail | None, budget_bytes: int | None
) -> tuple[bytes, bool]:
    """Return ``(delta, truncated)``: what a peer described by ``peer`` lacks.

    Args:
        om: Our owner map.
        lww: Our LWW map.
        peer: The peer's detail digest; ``None`` means "the peer has nothing"
            (the full state).
        budget_bytes: Soft cap on the delta size (``None``: unlimited). At least
            one entry (or one reset) is always included so progress is certain.

    Returns:
        The encoded delta (``b""`` if the peer lacks nothing) and whether it was cut.
    """
    budget = _Budget(budget_bytes if budget_bytes is not None else 1 << 62)
    truncated = False
    marker_parts: list[bytes] = []
    for o, mk in sorted(om.markers.items()):
        if peer is not None:
            if not peer.in_scope(0, o):
                continue
            item = peer.owners.get(o)
            if item is None and peer.partial:
                continue  # unlisted in a partial detail: equal
            if item is not None and item[3] and item[0] >= mk.generation:
                continue
        menc = codec.encode_marker(o, mk)
        if budget.take(len(menc), force=True):
            marker_parts.append(menc)
        else:
            truncated = True
    owner_parts: list[bytes] = []
    for o in sorted(om.owners):
        if truncated:
            break
        if peer is None:
            chunk = om.chunk_for(o, None)
        else:
            if not peer.in_scope(0, o):
                continue
            item = peer.owners.get(o)
            if item is None and peer.partial:
                continue  # unlisted in a partial detail: equal
            if item is not None and item[3]:
                if item[0] >= om.owners[o].generation:
                    continue  # the peer removed this generation; it will tell us
                chunk = om.chunk_for(o, None)
            else:
                chunk = om.chunk_for(o, None if item is None else item[:3])
        if chunk is None:
            continue
        enc, cut = _cut_owner_chunk(chunk, budget)
        if enc is not None:
            owner_parts.append(enc)
        truncated = truncated or cut
    writer_parts: list[bytes] = []
    if not truncated:
        if peer is None:
            wchunks = lww.writer_chunks(None)
        else:
            wchunks = [
                c
                for c in lww.writer_chunks(dict(peer.writers))
                if peer.in_scope(1, c.writer) and (c.writer in peer.writers or not peer.partial)
            ]
        for wc in wchunks:
            enc, cut = _cut_writer_chunk(wc, budget)
            if enc is not None:
                writer_parts.append(enc)
            if cut:
                truncated = True
                break
    if not (marker_parts or owner_parts or writer_parts):
        return b"", truncated
    return codec.assemble_delta(owner_parts, marker_parts, writer_parts, truncated), truncated


def full_state(om: OwnerMap, lww: LWWMap) -> bytes:
    """Return the deterministic encoding of a whole replica (a delta from nothing)."""
    return delta_since(om, lww, None, None)[0] or codec.assemble_delta([], [], [], False)
