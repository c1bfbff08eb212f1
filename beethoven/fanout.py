"""Publish/subscribe for trio tasks where publishing never blocks.

The protocol core publishes member events from inside its processing loop; a slow
or stuck subscriber must never delay it nor the other subscribers. Each subscriber
therefore gets its own bounded buffer. When a buffer is full the **oldest** queued
item is dropped (the subscriber keeps the most recent view of the world) and the
subscriber's ``dropped`` counter goes up; the counters are in `Fanout.stats`.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import attrs
import trio

__all__ = ["Fanout", "FanoutStats", "Subscription"]

T = TypeVar("T")


@attrs.frozen
class FanoutStats:
    """Counters of a `Fanout`."""

    subscribers: int
    published: int
    delivered: int
    dropped: int


class Subscription(Generic[T]):
    """One subscriber's bounded buffer; iterate it with ``async for``."""

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._maxlen = maxlen
        self._wakeup = trio.Event()
        self._closed = False
        self.dropped = 0
        self.delivered = 0

    def _push(self, item: T) -> None:
        if len(self._items) >= self._maxlen:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def receive(self) -> T:
        """Wait for and return the next item.

        Raises:
            trio.EndOfChannel: the fan-out was closed and the buffer is drained.
        """
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        self.delivered += 1
        return self._items.popleft()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Fanout(Generic[T]):
    """Deliver every published item to every current subscriber, never blocking."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription[T]] = []
        self._published = 0
        self._gone_delivered = 0
        self._gone_dropped = 0
        self._closed = False

    def publish(self, item: T) -> None:
        """Queue *item* for every subscriber; drop their oldest item if full."""
        self._published += 1
        for sub in self._subscribers:
            sub._push(item)

    @asynccontextmanager
    async def subscribe(self, maxlen: int = 1024) -> AsyncIterator[Subscription[T]]:
        """Subscribe for the duration of the ``async with`` block.

        Args:
            maxlen: buffer size; past it the oldest undelivered item is dropped.
        """
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        sub: Subscription[T] = Subscription(maxlen)
        if self._closed:
            sub._close()
        self._subscribers.append(sub)
        try:
            yield sub
        finally:
            self._subscribers.remove(sub)
            self._gone_delivered += sub.delivered
            self._gone_dropped += sub.dropped

    def close(self) -> None:
        """End every subscription once its buffer is drained."""
        self._closed = True
        for sub in self._subscribers:
            sub._close()

    def stats(self) -> FanoutStats:
        """Current counters, including those of past subscribers."""
        return FanoutStats(
            subscribers=len(self._subscribers),
            published=self._published,
            delivered=self._gone_delivered + sum(s.delivered for s in self._subscribers),
            dropped=self._gone_dropped + sum(s.dropped for s in self._subscribers),
        )
