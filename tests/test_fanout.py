from __future__ import annotations

import trio
import trio.testing

from beethoven.fanout import Fanout


async def test_every_subscriber_gets_every_item_in_order() -> None:
    fan: Fanout[int] = Fanout()
    async with fan.subscribe() as a, fan.subscribe() as b:
        for i in range(5):
            fan.publish(i)
        with trio.fail_after(1):
            assert [await a.receive() for _ in range(5)] == list(range(5))
            assert [await b.receive() for _ in range(5)] == list(range(5))
    assert fan.stats().delivered == 10


async def test_a_stuck_subscriber_never_blocks_the_publisher_or_others() -> None:
    fan: Fanout[int] = Fanout()
    async with fan.subscribe(maxlen=3) as stuck, fan.subscribe(maxlen=1000) as live:
        for i in range(100):
            fan.publish(i)  # synchronous: cannot block by construction
        assert stuck.dropped == 97
        with trio.fail_after(1):
            # the stuck one keeps the newest items (drop-oldest policy)
            assert [await stuck.receive() for _ in range(3)] == [97, 98, 99]
            assert [await live.receive() for _ in range(100)] == list(range(100))
    stats = fan.stats()
    assert stats.dropped == 97
    assert stats.published == 100
    assert stats.subscribers == 0


async def test_receive_waits_then_wakes(autojump_clock: trio.testing.MockClock) -> None:
    fan: Fanout[str] = Fanout()
    got: list[str] = []
    async with fan.subscribe() as sub:

        async def consume() -> None:
            async for item in sub:
                got.append(item)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.sleep(1)
                fan.publish("x")
                await trio.sleep(1)
                fan.publish("y")
                fan.close()
    assert got == ["x", "y"]


async def test_subscribing_after_close_ends_at_once() -> None:
    fan: Fanout[int] = Fanout()
    fan.close()
    async with fan.subscribe() as sub:
        with trio.fail_after(1):
            assert [item async for item in sub] == []
