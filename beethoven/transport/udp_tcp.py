"""The real transport: a trio UDP socket and a TCP listener on the same port number.

UDP carries SWIM probes and gossip; TCP carries push-pull and SeekChat frames. Both
are bound on one port so a peer needs a single address. The bind address (what the
sockets listen on, e.g. ``0.0.0.0``) and the advertised address (what peers are told)
are configured separately, for NAT and containers.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from beethoven.address import Address
from beethoven.errors import ConfigError, TransportError
from beethoven.transport.base import (
    Datagram,
    StreamHandler,
    TransportCounters,
    TransportStats,
    run_guarded_handler,
)

__all__ = ["UdpTcpTransport", "open_udp_tcp_transport"]

logger = logging.getLogger(__name__)

# How many times a bind on port 0 tries to find a port free for both UDP and TCP.
_PORT_ATTEMPTS = 32
_LISTEN_BACKLOG = 128


def _family(addr: Address) -> int:
    return _stdlib_socket.AF_INET6 if addr.is_ipv6 else _stdlib_socket.AF_INET


def _to_address(sockaddr: object) -> Address:
    # AF_INET gives (host, port); AF_INET6 gives (host, port, flowinfo, scope_id).
    assert isinstance(sockaddr, tuple)
    return Address(str(sockaddr[0]), int(sockaddr[1]))


def _new_socket(addr: Address, kind: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(_family(addr), kind)
    try:
        if addr.is_ipv6:
            # One family per transport: a "::" bind must not also take IPv4 traffic,
            # or peers would show up under v4-mapped addresses.
            sock.setsockopt(_stdlib_socket.IPPROTO_IPV6, _stdlib_socket.IPV6_V6ONLY, 1)
        if kind == _stdlib_socket.SOCK_STREAM:
            # Quick restarts: rebinding while old connections sit in TIME_WAIT.
            sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
    except BaseException:
        sock.close()
        raise
    return sock


async def _bind_pair(bind: Address) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """Bind a UDP and a TCP socket on the same port (choosing one when port is 0)."""
    attempts = _PORT_ATTEMPTS if bind.port == 0 else 1
    last_error: OSError | None = None
    for _ in range(attempts):
        udp = _new_socket(bind, _stdlib_socket.SOCK_DGRAM)
        tcp = _new_socket(bind, _stdlib_socket.SOCK_STREAM)
        port = bind.port
        try:
            await udp.bind(bind.as_tuple())
            port = _to_address(udp.getsockname()).port
            await tcp.bind((bind.host, port))
            tcp.listen(_LISTEN_BACKLOG)
        except OSError as exc:
            udp.close()
            tcp.close()
            last_error = exc
            if bind.port == 0 and exc.errno == errno.EADDRINUSE:
                logger.debug("port %d free for UDP but not TCP on %s; retrying", port, bind.host)
                continue
            break
        return udp, tcp
    raise TransportError(f"cannot bind UDP+TCP on {bind}: {last_error}") from last_error


class UdpTcpTransport:
    """A `Transport` over one UDP socket and one TCP listener sharing a port.

    Create it with `open_udp_tcp_transport`, which binds the sockets and closes them on
    exit. See `beethoven.transport.base.Transport` for the method contracts.
    """

    def __init__(
        self,
        udp: trio.socket.SocketType,
        tcp: trio.socket.SocketType,
        *,
        bind_address: Address,
        advertise: Address,
        max_inbound_streams: int,
        stream_idle_timeout: float,
        stream_max_lifetime: float,
        max_datagram: int,
    ) -> None:
        self._udp = udp
        self._listener = trio.SocketListener(tcp)
        self._bind_address = bind_address
        self._advertise = advertise
        self._max_inbound = max_inbound_streams
        self._idle_timeout = stream_idle_timeout
        self._max_lifetime = stream_max_lifetime
        self._max_datagram = max_datagram
        self._counters = TransportCounters()
        self._active_inbound = 0

    @property
    def local_address(self) -> Address:
        """The advertised address (what peers should send to)."""
        return self._advertise

    @property
    def bound_address(self) -> Address:
        """The address the sockets are actually bound on (real port, never 0)."""
        return self._bind_address

    async def send_datagram(self, data: bytes, to: Address) -> None:
        """Send one UDP datagram; errors are counted and logged at debug, never raised.

        Args:
            data: the payload (at most ``max_datagram`` bytes).
            to: the destination address.
        """
        self._counters.datagrams_sent += 1
        self._counters.bytes_sent += len(data)
        if len(data) > self._max_datagram:
            self._counters.send_errors += 1
            logger.debug("dropping %d-byte datagram to %s: over max_datagram", len(data), to)
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._udp.sendto(data, to.as_tuple())
        except OSError as exc:
            self._counters.send_errors += 1
            logger.debug("datagram to %s not sent: %s", to, exc)

    async def receive_datagram(self) -> Datagram:
        """Wait for the next UDP datagram.

        OS errors on receive (e.g. an ICMP error reported on the socket) are counted
        and skipped.

        Returns:
            ``(payload, source address)``.

        Raises:
            trio.ClosedResourceError: the transport was closed.
        """
        while True:
            try:
                data, source = await self._udp.recvfrom(self._max_datagram)
            except OSError as exc:
                if self._udp.fileno() == -1:
                    raise trio.ClosedResourceError("transport closed") from exc
                self._counters.receive_errors += 1
                logger.debug("UDP receive error on %s: %s", self._bind_address, exc)
                continue
            self._counters.datagrams_received += 1
            self._counters.bytes_received += len(data)
            return data, _to_address(source)

    async def connect(
        self,
        to: Address,
        *,
        timeout: float,  # noqa: ASYNC109 - part of the agreed Transport API
    ) -> trio.abc.Stream:
        """Open a TCP stream to *to*.

        When the transport is bound to a specific host of the same family, the outbound
        socket is bound to that host too, so peers see connections come from it.

        Args:
            to: the peer's address.
            timeout: seconds allowed to establish the connection.

        Returns:
            The connected stream (the caller closes it).

        Raises:
            TransportError: connection refused, unreachable, or not established in time.
        """
        sock = trio.socket.socket(_family(to), _stdlib_socket.SOCK_STREAM)
        try:
            with trio.move_on_after(timeout) as scope:
                if to.is_ipv6 == self._bind_address.is_ipv6 and not _is_wildcard(
                    self._bind_address.host
                ):
                    await sock.bind((self._bind_address.host, 0))
                await sock.connect(to.as_tuple())
            if scope.cancelled_caught:
                raise TransportError(f"connect to {to} timed out after {timeout}s")
        except OSError as exc:
            sock.close()
            self._counters.connect_failures += 1
            if isinstance(exc, TransportError):
                raise
            raise TransportError(f"connect to {to} failed: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        self._counters.streams_opened += 1
        return trio.SocketStream(sock)

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Accept TCP connections forever, one handler task each, within the cap.

        Args:
            handler: ``await handler(stream, peer)``; *peer* is the remote socket
                address (an ephemeral port, not the peer's advertised address).
            task_status: ``started()`` once connections are being accepted.
        """
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    stream = await self._listener.accept()
                except OSError as exc:
                    if self._listener.socket.fileno() == -1:
                        raise trio.ClosedResourceError("transport closed") from exc
                    # EMFILE/ENFILE/ECONNABORTED and friends: count, back off, go on.
                    self._counters.receive_errors += 1
                    logger.debug("accept on %s failed: %s", self._bind_address, exc)
                    await trio.sleep(0.01)
                    continue
                try:
                    peer = _to_address(stream.socket.getpeername())
                except OSError:
                    await trio.aclose_forcefully(stream)
                    continue
                if self._active_inbound >= self._max_inbound:
                    self._counters.streams_refused += 1
                    logger.debug(
                        "refusing stream from %s: %d streams open", peer, self._max_inbound
                    )
                    await trio.aclose_forcefully(stream)
                    continue
                self._active_inbound += 1
                self._counters.streams_accepted += 1
                nursery.start_soon(self._run_handler, handler, stream, peer)

    async def _run_handler(
        self, handler: StreamHandler, stream: trio.SocketStream, peer: Address
    ) -> None:
        try:
            await run_guarded_handler(
                handler,
                stream,
                peer,
                idle_timeout=self._idle_timeout,
                max_lifetime=self._max_lifetime,
                counters=self._counters,
            )
        finally:
            self._active_inbound -= 1

    def stats(self) -> TransportStats:
        """Return a snapshot of this transport's counters."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Close both sockets (idempotent). `open_udp_tcp_transport` does this on exit."""
        self._udp.close()
        self._listener.socket.close()


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")


@asynccontextmanager
async def open_udp_tcp_transport(
    bind: Address,
    *,
    advertise: Address | None = None,
    max_inbound_streams: int = 256,
    stream_idle_timeout: float = 10.0,
    stream_max_lifetime: float = 120.0,
    max_datagram: int = 65507,
) -> AsyncIterator[UdpTcpTransport]:
    """Bind UDP and TCP on the same port and yield the transport; close both on exit.

    Args:
        bind: where to listen. An IPv6 host binds IPv6 sockets (IPv6 only). Port 0
            picks a port free for both UDP and TCP (a bounded number of attempts).
        advertise: the address peers are told; defaults to the bind host and the
            bound port. An advertised port of 0 also means "the bound port". Set it
            when binding a wildcard host.
        max_inbound_streams: inbound streams handled at once; more are closed at once.
        stream_idle_timeout: seconds an inbound stream may stay idle before its
            handler is cancelled.
        stream_max_lifetime: seconds after which an inbound stream's handler is
            cancelled even if bytes keep trickling in (``math.inf`` for no limit).
        max_datagram: largest datagram sent or received, in bytes.

    Yields:
        The bound transport.

    Raises:
        TransportError: the sockets could not be bound.
        ConfigError: an option is out of range.
    """
    if max_inbound_streams < 1:
        raise ConfigError("max_inbound_streams must be at least 1")
    if not stream_idle_timeout > 0 or not stream_max_lifetime > 0:
        raise ConfigError("stream timeouts must be positive")
    if not 1 <= max_datagram <= 65507:
        raise ConfigError("max_datagram must be in 1..65507")
    udp, tcp = await _bind_pair(bind)
    bound = Address(bind.host, _to_address(udp.getsockname()).port)
    if advertise is None:
        advertise = bound
    elif advertise.port == 0:
        advertise = Address(advertise.host, bound.port)
    transport = UdpTcpTransport(
        udp,
        tcp,
        bind_address=bound,
        advertise=advertise,
        max_inbound_streams=max_inbound_streams,
        stream_idle_timeout=stream_idle_timeout,
        stream_max_lifetime=stream_max_lifetime,
        max_datagram=max_datagram,
    )
    logger.debug("transport bound on %s (UDP+TCP), advertising %s", bound, advertise)
    try:
        yield transport
    finally:
        transport.close()
