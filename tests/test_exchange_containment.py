"""An exception in one per-peer exchange ends that exchange only — never the node.

Before, an exception no handler expected (``IndexError`` from the store's chunk
cutting was the one seen in the field) escaped the store sync client into the
node's nursery, or an inbound stream handler into the transport's, and the node
exited. Now the membership runner contains every inbound stream (push-pull, beacon,
store sync, queries), every datagram handler (store deltas) and every outbound
request, the node its own outgoing store sync: each failure is counted in
``stats().runner.exchange_errors`` (by kind) and logged at WARNING with the peer.

The property at the end plays an insider holding the cluster key: random and
mutated store deltas, sync requests and sync replies, well sealed, into a running
node, which must stay up with a valid store that still replicates.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beethoven.address import Address
from beethoven.membership.runner import EXCHANGE_WARN_INTERVAL
from beethoven.node import Node
from beethoven.testing import Cluster, open_cluster
from beethoven.wire.codec import encode_compound
from beethoven.wire.framing import FrameChannel
from beethoven.wire.messages import (
    BeaconHello,
    Message,
    Query,
    QueryReply,
    StoreDelta,
    StoreSyncReply,
    StoreSyncRequest,
)
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring, generate_key, key_to_string
from beethoven_store import Store, codec, open_store, sync

pytestmark = pytest.mark.timeout(300)

KEY = key_to_string(generate_key())
ROGUE = Address("10.9.9.9", 4000)


class Boom(RuntimeError):
    """The unexpected exception injected into an exchange."""


def boom(*args: Any, **kwargs: Any) -> Any:
    raise Boom("injected")


def errors(node: Node, kind: str) -> int:
    return node.stats().runner.exchange_errors_by_kind.get(kind, 0)


async def still_replicates(cluster: Cluster, target: Node, key: str) -> None:
    """The node is up and healthy: a fresh write elsewhere reaches it, and it answers."""
    cluster.node("n0").kv.put(key, "ok")
    await cluster.wait_for(lambda: target.kv.get(key) == "ok")
    target._store.digest()
    reply = await cluster.node("n0")._runner.request(target.address, Query("status"))
    assert isinstance(reply, QueryReply)


# --------------------------------------------------------------------------- one per exchange


async def test_exception_in_store_sync_server_ends_only_that_exchange(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            target = cluster.node("n1")
            monkeypatch.setattr(target._store, "reconcile", boom)
            with caplog.at_level(logging.WARNING, logger="beethoven.membership.runner"):
                assert not await cluster.node("n0")._store_sync(target.address)
            assert errors(target, "serve StoreSyncRequest") == 1
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "serve StoreSyncRequest" in warnings[0].getMessage()
            assert "Boom" in warnings[0].getMessage()
            monkeypatch.undo()
            await still_replicates(cluster, target, "after-server")


async def test_exception_in_outgoing_store_sync_is_counted_not_fatal(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            target = cluster.node("n1")
            n0 = cluster.node("n0")
            failed = target.stats().store_sync_failed
            monkeypatch.setattr(target._store, "merge", boom)
            n0.kv.put("only-by-sync", b"x" * 3000)  # too big for a datagram: synced
            await cluster.wait_for(lambda: errors(n0, "serve StoreSyncRequest") == 0)
            assert not await target._store_sync(n0.address)
            assert errors(target, "request StoreSyncRequest") >= 1
            assert target.stats().store_sync_failed > failed
            monkeypatch.undo()
            await cluster.wait_for(lambda: target.kv.get("only-by-sync") == b"x" * 3000)
            await still_replicates(cluster, target, "after-client")


async def test_exception_in_store_delta_handler_is_counted_not_fatal(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            target = cluster.node("n1")
            monkeypatch.setattr(target._store, "merge", boom)
            cluster.node("n0").kv.put("small", 1)
            await cluster.wait_for(lambda: errors(target, "datagram StoreDelta") >= 1)
            assert target.stats().runner.core_errors == 0
            monkeypatch.undo()
            await still_replicates(cluster, target, "after-datagram")


async def test_exception_in_query_serving_is_counted_not_fatal(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            target = cluster.node("n1")
            monkeypatch.setattr(target, "describe", boom)
            assert await cluster.node("n0")._runner.request(target.address, Query("status")) is None
            assert errors(target, "serve Query") == 1
            monkeypatch.undo()
            await still_replicates(cluster, target, "after-query")


async def test_exception_in_beacon_handler_is_counted_not_fatal(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            target = cluster.node("n1")
            monkeypatch.setattr(target._beacon, "reply_for", boom)
            hello = BeaconHello(cluster="beethoven", sender="rogue")
            assert await cluster.node("n0")._runner.request(target.address, hello) is None
            assert errors(target, "serve BeaconHello") == 1
            monkeypatch.undo()
            await still_replicates(cluster, target, "after-beacon")


async def test_exception_in_push_pull_is_counted_not_fatal(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inbound (serving a peer's push-pull) and outbound (joining through a peer)."""
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            target, n0 = cluster.node("n1"), cluster.node("n0")
            runner = target._runner
            real_channel = runner._channel

            class SendFails:
                """A channel that reads fine but fails oddly when it sends."""

                def __init__(self, stream: trio.abc.Stream) -> None:
                    self._real = real_channel(stream)

                async def receive(self) -> Message:
                    return await self._real.receive()

                async def send(self, message: Message) -> None:
                    raise Boom("injected")

                async def aclose(self) -> None:
                    await self._real.aclose()

            monkeypatch.setattr(runner, "_channel", SendFails)
            assert await n0._runner.join([target.address]) is False
            kinds = target.stats().runner.exchange_errors_by_kind
            assert sum(v for k, v in kinds.items() if k.startswith("serve Push")) == 1, kinds
            assert await runner.join([n0.address]) is False
            kinds = target.stats().runner.exchange_errors_by_kind
            assert sum(v for k, v in kinds.items() if k.startswith("request Push")) == 1, kinds
            monkeypatch.undo()
            await still_replicates(cluster, target, "after-push-pull")


async def test_repeated_exchange_failures_log_one_warning_per_interval(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(120):
        async with open_cluster(2, keys=(KEY,)) as cluster:
            await cluster.wait_ready()
            target = cluster.node("n1")
            monkeypatch.setattr(target, "describe", boom)
            n0 = cluster.node("n0")
            with caplog.at_level(logging.WARNING, logger="beethoven.membership.runner"):
                for _ in range(5):
                    await n0._runner.request(target.address, Query("status"))
                await trio.sleep(EXCHANGE_WARN_INTERVAL)
                await n0._runner.request(target.address, Query("status"))
            assert errors(target, "serve Query") == 6
            lines = [r.getMessage() for r in caplog.records if "serve Query" in r.getMessage()]
            assert len(lines) == 2
            assert all(str(n0.address.host) in line for line in lines)


# --------------------------------------------------------------------------- insider property


def sample_deltas() -> list[bytes]:
    """Valid deltas and digests an insider could send: writes, deletes, resets, markers."""
    clock = [1000.0]
    rogue = open_store("memory://", owner="rogue", clock=lambda: clock[0])
    out = [rogue.full_state()]
    for i, value in enumerate([1, "text", b"\x00" * 300, [1, {"a": None}], None]):
        clock[0] += 0.01
        out.append(rogue.put(("kv", f"r{i}"), value).payload)
        out.append(rogue.put_own(("own", i), value, volatile=i % 2 == 1).payload)
    out.append(rogue.delete(("kv", "r0")).payload)
    out.append(rogue.delete_own(("own", 0)).payload)
    out.append(rogue.full_state())
    return out


def sample_digests(store: Store) -> list[bytes]:
    return [
        store.digest(),
        store.full_digest(),
        sync.root_digest(store.om, store.lww),
        sync.summary_digest(store.om, store.lww),
        sync.detail_digest(store.om, store.lww, stage=1),
        sync.detail_digest(store.om, store.lww, scope=[0, 1, 2], stage=1),
    ]


_ROGUE_STORE = open_store("memory://", owner="rogue2", clock=lambda: 1000.0)
_ROGUE_STORE.put(("kv", "x"), 1)
DELTAS = sample_deltas()
DIGESTS = sample_digests(_ROGUE_STORE)

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.binary(max_size=16),
    st.sampled_from(["rogue", "n0", "n1", "kv", ""]),
)


def mutate_structure(obj: Any, data: st.DataObject) -> Any:
    """Replace, drop or duplicate one random node of a decoded msgpack tree."""
    if isinstance(obj, tuple | list) and obj and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(obj) - 1))
        items = list(obj)
        action = data.draw(st.sampled_from(["dive", "replace", "drop", "dup"]))
        if action == "dive":
            items[i] = mutate_structure(items[i], data)
        elif action == "replace":
            items[i] = data.draw(leaf)
        elif action == "drop":
            del items[i]
        else:
            items.insert(i, items[i])
        return tuple(items)
    return data.draw(leaf)


def mutated(base: list[bytes], data: st.DataObject) -> bytes:
    raw = data.draw(st.sampled_from(base))
    how = data.draw(st.sampled_from(["as is", "structure", "bytes", "truncate", "random"]))
    if how == "as is":
        return raw
    if how == "structure":
        try:
            tree = codec.unpack(raw)
        except Exception:
            return raw
        packed: bytes = msgpack.packb(mutate_structure(tree, data), use_bin_type=True)
        return packed
    if how == "bytes" and raw:
        b = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        return bytes(b)
    if how == "truncate" and raw:
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    return data.draw(st.binary(max_size=64))


Action = tuple[str, bytes, bytes]


def actions(data: st.DataObject, digests: list[bytes]) -> list[Action]:
    out: list[Action] = []
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["delta", "request", "reply"]))
        out.append((kind, mutated(DELTAS, data), mutated(digests, data)))
    return out


async def feed(cluster: Cluster, target: Node, plan: list[Action]) -> None:
    keyring = Keyring.from_strings([KEY])
    packets = PacketCodec(keyring)
    async with cluster.network.attach(ROGUE) as rogue:
        replies: list[Action] = [a for a in plan if a[0] == "reply"]

        async def serve(stream: trio.abc.Stream, peer: Address) -> None:
            # The rogue answers the target's own store sync with mutated replies.
            channel = FrameChannel(stream, keyring, read_timeout=5)
            try:
                with trio.move_on_after(5):
                    await channel.receive()
                    for _, delta, digest in replies or [("reply", b"", b"")]:
                        await channel.send(StoreSyncReply(delta, digest, False))
                        await channel.receive()
            except Exception:  # the target may hang up at any point
                pass
            finally:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

        async with trio.open_nursery() as nursery:
            await nursery.start(rogue.serve_streams, serve)
            for kind, delta, digest in plan:
                if kind == "delta":
                    body = encode_compound([StoreDelta(delta[:1000])])
                    await rogue.send_datagram(packets.seal(body), target.address)
                elif kind == "request":
                    stream = await rogue.connect(target.address, timeout=5)
                    channel = FrameChannel(stream, keyring, read_timeout=5)
                    try:
                        with trio.move_on_after(5):
                            await channel.send(StoreSyncRequest(digest))
                            await channel.receive()
                            await channel.send(StoreSyncReply(delta, digest, True))
                            await channel.receive()
                    except Exception:  # the target may hang up at any point
                        pass
                    finally:
                        with trio.CancelScope(shield=True):
                            await channel.aclose()
                else:
                    await target._store_sync(ROGUE)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()


def store_is_valid(store: Store) -> None:
    sync.decode_digest(store.digest())
    sync.root_hash(store.om, store.lww)
    store.full_state()
    store.stats()
    other = open_store("memory://", owner="checker")
    other.merge(store.full_state())
    assert dict(other.shared_items()) == dict(store.shared_items())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_insider_deltas_and_sync_messages_never_take_a_node_down(data: st.DataObject) -> None:
    async def main() -> None:
        with trio.fail_after(300):
            async with open_cluster(2, keys=(KEY,)) as cluster:
                await cluster.wait_ready()
                await cluster.wait_for(cluster.converged)
                target = cluster.node("n1")
                # Replayed digests of the target from before a write (small, or larger
                # than the sync budget) make it answer with what it holds since.
                stale = [target._store.full_digest(), target._store.digest()]
                size = data.draw(st.sampled_from([0, 100, 70_000]))
                if size:
                    cluster.node("n0").kv.put("big", b"b" * size)
                    await cluster.wait_for(lambda: target.kv.get("big") == b"b" * size)
                plan = actions(data, DIGESTS + stale)
                await feed(cluster, target, plan)
                assert "n1" in cluster.running()
                store_is_valid(target._store)
                await still_replicates(cluster, target, "after-insider")
                store_is_valid(target._store)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
