"""Pure tests of the sweep plan: masking, host rules, the cap, own addresses, order."""

from __future__ import annotations

import ipaddress

import pytest

from beethoven.discovery.netplan import count_hosts, iter_hosts, parse_networks, plan_sweep
from beethoven.errors import ConfigError


def hosts(net: str | list[str], own: tuple[str, ...] = (), cap: int = 4096) -> list[str]:
    return list(plan_sweep(net, max_sweep_hosts=cap, own_addresses=own).hosts)


def test_slash_32_is_the_single_host_and_does_not_hang() -> None:
    assert hosts("10.1.2.3/32") == ["10.1.2.3"]
    assert hosts("10.1.2.3") == ["10.1.2.3"]  # a bare address is a /32


def test_slash_32_that_is_our_own_address_sweeps_nothing() -> None:
    plan = plan_sweep("10.1.2.3/32", max_sweep_hosts=10, own_addresses=["10.1.2.3"])
    assert plan.hosts == ()
    assert plan.skipped_own == 1


def test_slash_31_has_two_hosts_and_the_peer_is_swept() -> None:
    # The original always ended standalone on a /31: it skipped both "network" and
    # "broadcast". RFC 3021: both addresses are hosts.
    assert hosts("10.0.0.0/31") == ["10.0.0.0", "10.0.0.1"]
    assert hosts("10.0.0.1/31", own=("10.0.0.0",)) == ["10.0.0.1"]


def test_slash_29_skips_network_and_broadcast() -> None:
    assert hosts("127.0.0.0/29") == [f"127.0.0.{i}" for i in range(1, 7)]


def test_host_bits_are_masked() -> None:
    assert parse_networks("192.168.7.77/24") == (ipaddress.ip_network("192.168.7.0/24"),)
    assert hosts("192.168.7.77/24")[0] == "192.168.7.1"


def test_slash_24_ascending_without_own_address() -> None:
    got = hosts("10.9.8.0/24", own=("10.9.8.17", "192.0.2.1"))
    assert len(got) == 253
    assert "10.9.8.17" not in got
    assert got == sorted(got, key=lambda h: ipaddress.ip_address(h))
    assert got[0] == "10.9.8.1"
    assert got[-1] == "10.9.8.254"


def test_ipv6_slash_128_and_127() -> None:
    assert hosts("fd00::5/128") == ["fd00::5"]
    assert hosts("fd00::4/127") == ["fd00::4", "fd00::5"]
    assert hosts("fd00::5/127", own=("fd00::4",)) == ["fd00::5"]


def test_ipv6_slash_120_skips_subnet_router_anycast_only() -> None:
    got = hosts("fd00::abcd/120")  # masked to fd00::ab00/120
    assert len(got) == 255
    assert got[0] == "fd00::ab01"
    assert got[-1] == "fd00::abff"  # no broadcast in IPv6


def test_ipv6_own_address_in_any_spelling_is_skipped() -> None:
    got = hosts("fd00::/120", own=("FD00:0:0:0:0:0:0:7",))
    assert "fd00::7" not in got
    assert len(got) == 254


def test_too_large_network_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="max_sweep_hosts") as info:
        plan_sweep("10.0.0.0/16", max_sweep_hosts=4096)
    assert "cluster_net" in str(info.value)
    assert "65534" in str(info.value)
    with pytest.raises(ConfigError, match="max_sweep_hosts"):
        plan_sweep("fd00::/64", max_sweep_hosts=4096)  # counted, never enumerated


def test_cap_counts_all_networks_together() -> None:
    assert len(hosts(["10.0.0.0/24", "10.0.1.0/24"], cap=508)) == 508
    with pytest.raises(ConfigError, match="max_sweep_hosts"):
        plan_sweep(["10.0.0.0/24", "10.0.1.0/24"], max_sweep_hosts=507)


def test_overlapping_networks_sweep_each_host_once_in_config_order() -> None:
    got = hosts(["10.0.0.8/29", "10.0.0.0/28"])
    assert got[:6] == [f"10.0.0.{i}" for i in range(9, 15)]
    assert len(got) == len(set(got)) == 14


def test_mixed_families() -> None:
    got = hosts(["10.0.0.0/30", "fd00::/126"])
    assert got == ["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2", "fd00::3"]


@pytest.mark.parametrize(
    "bad", ["", "10.0.0.0/33", "not-a-net", "224.0.0.0/24", "ff02::/120", "0.0.0.0/32", "::/128"]
)
def test_bad_networks_are_refused_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match="cluster_net"):
        parse_networks([bad])


def test_empty_list_refused() -> None:
    with pytest.raises(ConfigError, match="cluster_net"):
        parse_networks([])


def test_unspecified_address_is_never_a_host() -> None:
    assert "0.0.0.0" not in list(iter_hosts(parse_networks("0.0.0.0/31")))
    assert hosts("::/127") == ["::1"]


def test_count_hosts_matches_enumeration() -> None:
    for net in ["10.0.0.0/32", "10.0.0.0/31", "10.0.0.0/30", "10.0.0.0/24", "fd00::/120"]:
        nets = parse_networks(net)
        assert count_hosts(nets) == len(list(iter_hosts(nets)))


def test_plan_allows_only_configured_networks() -> None:
    plan = plan_sweep(["10.0.0.0/24", "fd00::/120"], max_sweep_hosts=1000)
    assert plan.allows("10.0.0.200")
    assert plan.allows("fd00::20")
    assert not plan.allows("10.0.1.1")
    assert not plan.allows("fd00::1:0")
    assert not plan.allows("garbage")
