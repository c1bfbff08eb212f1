"""Which addresses a sweep may contact: parsing ``cluster_net`` and enumerating its hosts.

Pure code, no I/O. The Locator asks this module for the ordered list of hosts to sweep
and never contacts anything else, so every rule about *where* discovery may knock lives
here and is unit-tested on its own:

* a network is given as CIDR text (IPv4 or IPv6); host bits are masked off, so
  ``10.1.2.3/24`` means ``10.1.2.0/24``;
* IPv4 networks up to ``/30`` skip the network and broadcast addresses; a ``/31`` has
  two usable hosts (RFC 3021) and a ``/32`` one;
* IPv6 networks up to ``/126`` skip the subnet-router anycast address (the all-zero
  host); a ``/127`` has two hosts (RFC 6164) and a ``/128`` one;
* multicast and unspecified networks are refused, and the unspecified address is
  never a host;
* the total is capped by ``max_sweep_hosts`` *before* anything is enumerated, so a
  mistyped ``/8`` fails at start with a `ConfigError` naming both keys instead of
  sweeping for hours;
* hosts are yielded network by network in configuration order, ascending inside each
  network, duplicates (overlapping networks) once, and the node's own addresses never.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence

import attrs

from beethoven.errors import ConfigError

__all__ = [
    "IPNetwork",
    "SweepPlan",
    "count_hosts",
    "iter_hosts",
    "parse_networks",
    "plan_sweep",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
"""A parsed ``cluster_net`` entry."""

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(
    specs: Sequence[str] | str, *, key: str = "cluster_net"
) -> tuple[IPNetwork, ...]:
    """Parse CIDR text into networks, masking host bits.

    Args:
        specs: one CIDR string or a sequence of them, e.g. ``"10.0.0.0/24"``,
            ``"10.0.0.7/24"`` (masked to ``10.0.0.0/24``), ``"fd00::/120"``. A bare
            address means a single host (``/32`` or ``/128``).
        key: the configuration key named in errors.

    Returns:
        The networks, in the given order, duplicates removed.

    Raises:
        ConfigError: no network given, a malformed entry, or a multicast or
            unspecified network (nothing there can answer a TCP connect).
    """
    if isinstance(specs, str):
        specs = (specs,)
    if not specs:
        raise ConfigError(f"{key}: at least one network is required")
    networks: list[IPNetwork] = []
    for spec in specs:
        if not isinstance(spec, str):
            raise ConfigError(f"{key}: expected CIDR text, got {spec!r}")
        try:
            net = ipaddress.ip_network(spec.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{key}: {spec!r} is not a CIDR network") from None
        if net.is_multicast:
            raise ConfigError(f"{key}: {spec!r} is a multicast network; it cannot be swept")
        if net.network_address.is_unspecified and net.prefixlen == net.max_prefixlen:
            raise ConfigError(f"{key}: {spec!r} is the unspecified address; it cannot be swept")
        if net not in networks:
            networks.append(net)
    return tuple(networks)


def _host_range(net: IPNetwork) -> tuple[int, int]:
    """First and last (inclusive) integer host address of *net* under the rules above."""
    first = int(net.network_address)
    last = int(net.broadcast_address)
    host_bits = net.max_prefixlen - net.prefixlen
    if host_bits <= 1:  # /31 /32, /127 /128: every address is a host
        return first, last
    if net.version == 4:
        return first + 1, last - 1  # no network, no broadcast
    return first + 1, last  # IPv6: no subnet-router anycast; there is no broadcast


def count_hosts(networks: Iterable[IPNetwork]) -> int:
    """Number of host addresses in *networks* (overlaps counted twice), without enumerating.

    Args:
        networks: parsed networks.

    Returns:
        The sum of each network's host count.
    """
    total = 0
    for net in networks:
        first, last = _host_range(net)
        total += last - first + 1
    return total


def iter_hosts(networks: Iterable[IPNetwork], *, exclude: Iterable[str] = ()) -> Iterator[str]:
    """Yield the host addresses to sweep, in sweep order, as normalised text.

    Networks in the given order, ascending inside each, each address once, never an
    excluded address nor the unspecified address. Callers must cap the size first
    (see `plan_sweep`); this generator is lazy and would happily walk a ``/64``.

    Args:
        networks: parsed networks.
        exclude: addresses never to yield (the node's own); unparsable entries are ignored.

    Yields:
        Address text as `ipaddress` prints it (``"10.0.0.1"``, ``"fd00::1"``).
    """
    skip: set[_IPAddress] = set()
    for text in exclude:
        try:
            skip.add(ipaddress.ip_address(text))
        except ValueError:
            continue
    seen: set[_IPAddress] = set()
    for net in networks:
        first, last = _host_range(net)
        factory = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        for value in range(first, last + 1):
            addr = factory(value)
            if addr in skip or addr in seen or addr.is_unspecified:
                continue
            seen.add(addr)
            yield str(addr)


@attrs.frozen
class SweepPlan:
    """The validated result of `plan_sweep`: what one sweep contacts, in order.

    Attributes:
        networks: the parsed, masked networks.
        hosts: host addresses to contact, in sweep order, own addresses removed.
        skipped_own: how many of the node's own addresses fell inside the networks.
    """

    networks: tuple[IPNetwork, ...]
    hosts: tuple[str, ...]
    skipped_own: int = 0

    def allows(self, host: str) -> bool:
        """True when *host* is inside one of the planned networks.

        Args:
            host: an IP address literal.

        Returns:
            Whether the address belongs to a configured network (own addresses included).
        """
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr.version == net.version and addr in net for net in self.networks)


def plan_sweep(
    cluster_net: Sequence[str] | str,
    *,
    max_sweep_hosts: int,
    own_addresses: Iterable[str] = (),
) -> SweepPlan:
    """Validate ``cluster_net`` against the host cap and list the hosts to sweep.

    Args:
        cluster_net: CIDR text, one or several (see `parse_networks`).
        max_sweep_hosts: the largest number of hosts the networks may hold together.
        own_addresses: this node's addresses, never swept.

    Returns:
        The sweep plan.

    Raises:
        ConfigError: a malformed network, or more hosts than ``max_sweep_hosts``; the
            message names ``cluster_net`` and ``max_sweep_hosts``.
    """
    if isinstance(max_sweep_hosts, bool) or not isinstance(max_sweep_hosts, int):
        raise ConfigError(f"max_sweep_hosts: expected a whole number, got {max_sweep_hosts!r}")
    if max_sweep_hosts < 1:
        raise ConfigError(f"max_sweep_hosts: must be at least 1, got {max_sweep_hosts}")
    networks = parse_networks(cluster_net)
    total = count_hosts(networks)
    if total > max_sweep_hosts:
        shown = ", ".join(str(net) for net in networks)
        raise ConfigError(
            f"cluster_net: {shown} holds {total} hosts to sweep, more than "
            f"max_sweep_hosts = {max_sweep_hosts}; narrow cluster_net, use seeds, "
            f"or raise max_sweep_hosts"
        )
    own = tuple(own_addresses)
    hosts = tuple(iter_hosts(networks, exclude=own))
    all_hosts = sum(1 for _ in iter_hosts(networks))
    return SweepPlan(networks=networks, hosts=hosts, skipped_own=all_hosts - len(hosts))
