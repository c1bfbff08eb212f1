"""The transmit-limited broadcast queue that feeds piggybacking and gossip.

Each queued fact is keyed by the member it is about: queueing a newer fact about a
member replaces the older one (it is never sent again). Facts are handed out
fewest-transmits first and, among equals, newest first, packed greedily into the
byte budget of one datagram; a fact is dropped once it has been sent *limit* times,
where the limit (``retransmit_mult·ceil(log10(N+1))``) is passed by the caller at
each take so that it follows the cluster size.

Cost: ``queue`` and ``invalidate`` are O(1); ``take`` is O(facts taken + buckets
visited), never O(queue length), so the queue can hold one fact per member of a
10 000-node cluster while piggybacking stays cheap.
"""

from __future__ import annotations

from beethoven.wire.messages import Message

__all__ = ["BroadcastQueue"]

#: Smallest useful remainder of a datagram budget: below it, stop looking.
_MIN_FACT = 16


class _Item:
    __slots__ = ("key", "message", "size", "transmits")

    def __init__(self, key: str, message: Message, size: int) -> None:
        self.key = key
        self.message = message
        self.size = size
        self.transmits = 0


class BroadcastQueue:
    """Facts waiting to be piggybacked, bucketed by how often they were sent."""

    __slots__ = ("_buckets", "_by_key")

    def __init__(self) -> None:
        self._buckets: list[dict[str, _Item]] = [{}]
        self._by_key: dict[str, _Item] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def queue(self, key: str, message: Message, size: int) -> None:
        """Queue *message* (encoded *size* bytes) as the latest fact about *key*."""
        old = self._by_key.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][key]
        item = _Item(key, message, size)
        self._by_key[key] = item
        self._buckets[0][key] = item

    def invalidate(self, key: str) -> None:
        """Forget any queued fact about *key*."""
        old = self._by_key.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][key]

    def pending(self, key: str) -> Message | None:
        """The queued fact about *key*, if any."""
        item = self._by_key.get(key)
        return None if item is None else item.message

    def take(self, budget: int, limit: int) -> tuple[list[Message], list[int]]:
        """Take facts fitting in *budget* bytes; count one transmit for each.

        Args:
            budget: bytes available in the datagram.
            limit: transmits after which a fact is dropped.

        Returns:
            The messages taken and their sizes.
        """
        if not self._by_key or budget < _MIN_FACT:
            return [], []
        taken: list[_Item] = []
        expired: list[_Item] = []
        remaining = budget
        buckets = self._buckets
        for tx, bucket in enumerate(buckets):
            if not bucket:
                continue
            if tx >= limit:
                expired.extend(bucket.values())
                continue
            for key in reversed(bucket):
                item = bucket[key]
                if item.size <= remaining:
                    taken.append(item)
                    remaining -= item.size
                    if remaining < _MIN_FACT:
                        break
            if remaining < _MIN_FACT:
                break
        for item in expired:
            del buckets[item.transmits][item.key]
            del self._by_key[item.key]
        out: list[Message] = []
        sizes: list[int] = []
        for item in taken:
            del buckets[item.transmits][item.key]
            item.transmits += 1
            out.append(item.message)
            sizes.append(item.size)
            if item.transmits >= limit:
                del self._by_key[item.key]
                continue
            if item.transmits == len(buckets):
                buckets.append({})
            buckets[item.transmits][item.key] = item
        return out, sizes
