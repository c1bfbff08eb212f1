"""Real sockets on 127.0.0.0/8: a /24 sweep and five nodes starting at once.

Several nodes on one host each bind their own 127.0.0.x with the same (free) port, as
the issue asks. Nothing outside 127.0.0.0/8 is ever contacted.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from beethoven.address import Address
from beethoven.discovery.beacon import BeaconServer
from beethoven.discovery.locator import Locator, LocatorSettings, LocatorStatus
from beethoven.errors import TransportError
from beethoven.transport.udp_tcp import UdpTcpTransport, open_udp_tcp_transport
from beethoven.wire.messages import BeaconMember
from beethoven.wire.security import Keyring, generate_key

KEY = generate_key()


@asynccontextmanager
async def transports_on(hosts: Sequence[str]) -> AsyncIterator[list[UdpTcpTransport]]:
    """Bind every host on one common free port (retrying on a rare collision)."""
    for _attempt in range(10):
        async with AsyncExitStack() as stack:
            try:
                first = await stack.enter_async_context(
                    open_udp_tcp_transport(Address(hosts[0], 0))
                )
                port = first.local_address.port
                rest = [
                    await stack.enter_async_context(open_udp_tcp_transport(Address(h, port)))
                    for h in hosts[1:]
                ]
            except TransportError:
                continue
            yield [first, *rest]
            return
    raise RuntimeError("could not find a common free port")


def beacon_for(
    transport: UdpTcpTransport, *, cluster: str = "c1", keyring: Keyring | None
) -> BeaconServer:
    host = transport.local_address.host
    return BeaconServer(
        cluster=cluster,
        name=f"node-{host}",
        addr=transport.local_address,
        members=lambda: [BeaconMember(f"node-{host}", transport.local_address)],
        keyring=keyring,
        read_timeout=1.0,
    )


async def test_sweep_of_a_loopback_slash_24_finds_exactly_our_beacons() -> None:
    keyring = Keyring(KEY)
    ours = ["127.0.0.2", "127.0.0.50", "127.0.0.200"]
    other_cluster = "127.0.0.77"
    other_key = "127.0.0.99"
    with trio.fail_after(20):
        async with (
            transports_on(["127.0.0.1", *ours, other_cluster, other_key]) as ts,
            trio.open_nursery() as nursery,
        ):
            me, *beacon_ts = ts
            for t in beacon_ts:
                host = t.local_address.host
                if host == other_cluster:
                    server = beacon_for(t, cluster="c2", keyring=keyring)
                elif host == other_key:
                    server = beacon_for(t, keyring=Keyring(generate_key()))
                else:
                    server = beacon_for(t, keyring=keyring)
                await nursery.start(server.run, t)
            joined: list[Sequence[Address]] = []

            async def join(addrs: Sequence[Address]) -> bool:
                joined.append(addrs)
                return True

            port = me.local_address.port
            locator = Locator(
                LocatorSettings(cluster_net="127.0.0.0/24", port=port),
                transport=me,
                cluster="c1",
                name="me",
                join=join,
                members=lambda: (),
                keyring=keyring,
                rng=random.Random(1),
            )
            first_found: list[float] = []
            start = trio.current_time()
            result = await locator.sweep(
                on_found=lambda f: first_found.append(trio.current_time() - start)
            )
            assert {f.addr for f in result.found} == {Address(h, port) for h in ours}
            assert result.contacted == 253  # 254 hosts minus our own 127.0.0.1
            assert result.duration < 2.5  # target 1.5 s on an idle machine
            assert first_found
            assert first_found[0] < 1.0
            outcomes = dict(result.outcomes)
            assert outcomes["beacon"] == 3
            assert outcomes["refused"] == 1  # the other cluster
            assert outcomes.get("closed", 0) + outcomes.get("bad_reply", 0) == 1  # other key
            assert await locator.bootstrap() == LocatorStatus.CLUSTERED
            assert set(joined[0]) <= {Address(h, port) for h in ours}
            nursery.cancel_scope.cancel()


async def test_five_loopback_nodes_started_together_form_one_cluster() -> None:
    hosts = [f"127.0.0.{i}" for i in range(17, 22)]  # inside 127.0.0.16/29
    edges: set[frozenset[str]] = set()
    views: dict[Address, set[str]] = {}
    names: dict[Address, str] = {}
    changed = trio.Event()

    def connected() -> bool:
        seen = {hosts[0]}
        grew = True
        while grew:
            grew = False
            for edge in edges:
                if edge & seen and not edge <= seen:
                    seen |= edge
                    grew = True
        return seen == set(hosts)

    with trio.fail_after(20):
        async with transports_on(hosts) as ts, trio.open_nursery() as nursery:
            port = ts[0].local_address.port
            for t in ts:
                views[t.local_address] = {t.local_address.host}
                names[t.local_address] = t.local_address.host

            async def start(t: UdpTcpTransport, seed: int) -> None:
                me = t.local_address

                async def join(addrs: Sequence[Address]) -> bool:
                    nonlocal changed
                    for addr in addrs:
                        merged = views[me] | views[addr]
                        views[me] = set(merged)
                        views[addr] = set(merged)
                        edges.add(frozenset({me.host, addr.host}))
                    changed.set()
                    return bool(addrs)

                server = BeaconServer(
                    cluster="c1",
                    name=me.host,
                    addr=me,
                    members=lambda: [BeaconMember(n, Address(n, port)) for n in views[me]],
                )
                await nursery.start(server.run, t)
                locator = Locator(
                    LocatorSettings(cluster_net="127.0.0.16/29", port=port, resweep_interval=0.5),
                    transport=t,
                    cluster="c1",
                    name=me.host,
                    join=join,
                    members=lambda: views[me] - {me.host},
                    rng=random.Random(seed),
                )
                await locator.run()

            for i, t in enumerate(ts):
                nursery.start_soon(start, t, i)
            t0 = trio.current_time()
            while not connected():
                changed = trio.Event()
                await changed.wait()
            assert trio.current_time() - t0 < 5.0
            nursery.cancel_scope.cancel()
