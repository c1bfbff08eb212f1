"""The real UDP+TCP transport: same port, port 0, advertise vs bind, restarts, IPv6.

Only 127.0.0.0/8 and ::1 are ever used. Every test is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import socket

import pytest
import trio

from beethoven.address import Address
from beethoven.errors import ConfigError, TransportError
from beethoven.transport.udp_tcp import UdpTcpTransport, open_udp_tcp_transport

LIMIT = 10.0


def _ipv6_loopback_reason() -> str | None:
    """Why ::1 cannot be used here, or None when it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"cannot bind ::1 on this machine ({exc})"
    return None


IPV6_SKIP = _ipv6_loopback_reason()


def udp_and_tcp_ports(transport: UdpTcpTransport) -> tuple[int, int]:
    return (
        transport._udp.getsockname()[1],
        transport._listener.socket.getsockname()[1],
    )


async def echo(stream: trio.abc.Stream, peer: Address) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def test_bind_port_zero_binds_udp_and_tcp_on_the_same_port() -> None:
    with trio.fail_after(LIMIT):
        async with open_udp_tcp_transport(Address("127.0.0.2", 0)) as t:
            udp_port, tcp_port = udp_and_tcp_ports(t)
            assert udp_port == tcp_port == t.local_address.port != 0
            assert t.local_address == t.bound_address == Address("127.0.0.2", udp_port)


async def test_several_transports_share_a_port_on_different_loopback_hosts() -> None:
    with trio.fail_after(LIMIT):
        async with open_udp_tcp_transport(Address("127.0.0.2", 0)) as first:
            port = first.local_address.port
            try:
                async with (
                    open_udp_tcp_transport(Address("127.0.0.3", port)) as second,
                    open_udp_tcp_transport(Address("127.0.0.5", port)) as third,
                ):
                    for sender, receiver in [(first, third), (third, second), (second, first)]:
                        await sender.send_datagram(b"hop", receiver.local_address)
                        assert await receiver.receive_datagram() == (b"hop", sender.local_address)
            except TransportError as exc:  # pragma: no cover - port taken by someone else
                pytest.skip(f"port {port} busy on 127.0.0.3/5: {exc}")


async def test_advertise_differs_from_bind() -> None:
    with trio.fail_after(LIMIT):
        async with open_udp_tcp_transport(
            Address("127.0.0.2", 0), advertise=Address("127.0.0.9", 0)
        ) as t:
            bound = t.bound_address
            assert bound.host == "127.0.0.2"
            # Port 0 in the advertised address means "the bound port".
            assert t.local_address == Address("127.0.0.9", bound.port)
        async with open_udp_tcp_transport(
            Address("127.0.0.2", 0), advertise=Address("127.0.0.9", 4242)
        ) as t:
            assert t.local_address == Address("127.0.0.9", 4242)
            assert t.bound_address.host == "127.0.0.2"


async def test_streams_come_from_the_bound_host() -> None:
    peers: list[Address] = []

    async def record(stream: trio.abc.Stream, peer: Address) -> None:
        peers.append(peer)
        await stream.send_all(b"hello")

    with trio.fail_after(LIMIT):
        async with (
            open_udp_tcp_transport(Address("127.0.0.2", 0)) as a,
            open_udp_tcp_transport(Address("127.0.0.3", 0)) as b,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(b.serve_streams, record)
            async with await a.connect(b.local_address, timeout=5) as stream:
                assert await stream.receive_some() == b"hello"
            assert peers[0].host == "127.0.0.2"
            nursery.cancel_scope.cancel()


async def test_binding_a_taken_address_raises_transport_error() -> None:
    with trio.fail_after(LIMIT):
        async with open_udp_tcp_transport(Address("127.0.0.2", 0)) as t:
            with pytest.raises(TransportError):
                async with open_udp_tcp_transport(t.bound_address):
                    pass  # pragma: no cover


async def test_quick_restart_rebinds_the_same_port() -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_udp_tcp_transport(Address("127.0.0.2", 0)) as server,
            trio.open_nursery() as nursery,
        ):
            port = server.local_address.port
            await nursery.start(server.serve_streams, echo)
            async with (
                open_udp_tcp_transport(Address("127.0.0.3", 0)) as client,
                await client.connect(server.local_address, timeout=5) as stream,
            ):
                await stream.send_all(b"x")
                assert await stream.receive_some() == b"x"
            nursery.cancel_scope.cancel()
        # A connection just closed on this port may linger in TIME_WAIT;
        # SO_REUSEADDR lets a restarted node rebind the port anyway.
        async with open_udp_tcp_transport(Address("127.0.0.2", port)) as again:
            assert again.local_address.port == port


async def test_send_to_an_unreachable_port_does_not_raise() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.2", 0))
        dead_port = probe.getsockname()[1]
    with trio.fail_after(LIMIT):
        async with (
            open_udp_tcp_transport(Address("127.0.0.2", 0)) as a,
            open_udp_tcp_transport(Address("127.0.0.3", 0)) as b,
        ):
            for _ in range(5):
                await a.send_datagram(b"nobody home", Address("127.0.0.2", dead_port))
            await a.send_datagram(b"after", b.local_address)
            assert (await b.receive_datagram())[0] == b"after"
            # An IPv6 destination from an IPv4 socket cannot be sent: counted, not raised.
            await a.send_datagram(b"wrong family", Address("::1", dead_port))
            assert a.stats().send_errors == 1


async def test_connect_timeout_raises_transport_error() -> None:
    # A listener whose backlog is full never completes the handshake... which is
    # kernel-dependent, so test the timeout path with a zero timeout instead.
    with trio.fail_after(LIMIT):
        async with (
            open_udp_tcp_transport(Address("127.0.0.2", 0)) as a,
            open_udp_tcp_transport(Address("127.0.0.3", 0)) as b,
        ):
            with pytest.raises(TransportError, match="timed out"):
                await a.connect(b.local_address, timeout=0)


async def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        async with open_udp_tcp_transport(Address("127.0.0.2", 0), max_inbound_streams=0):
            pass  # pragma: no cover
    with pytest.raises(ConfigError):
        async with open_udp_tcp_transport(Address("127.0.0.2", 0), max_datagram=70_000):
            pass  # pragma: no cover


@pytest.mark.skipif(IPV6_SKIP is not None, reason=IPV6_SKIP or "")
async def test_ipv6_loopback_datagrams_and_streams() -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_udp_tcp_transport(Address("::1", 0)) as a,
            open_udp_tcp_transport(Address("::1", 0)) as b,
            trio.open_nursery() as nursery,
        ):
            assert udp_and_tcp_ports(a)[0] == udp_and_tcp_ports(a)[1]
            await a.send_datagram(b"v6", b.local_address)
            assert await b.receive_datagram() == (b"v6", a.local_address)
            await nursery.start(b.serve_streams, echo)
            async with await a.connect(b.local_address, timeout=5) as stream:
                await stream.send_all(b"ping6")
                assert await stream.receive_some() == b"ping6"
            nursery.cancel_scope.cancel()


async def test_receive_after_close_raises_instead_of_spinning() -> None:
    with trio.fail_after(LIMIT):
        async with open_udp_tcp_transport(Address("127.0.0.2", 0)) as t:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await t.receive_datagram()
