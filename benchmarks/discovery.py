"""Discovery benchmark: time for a full sweep of a silent /24 and time to the first peer.

Scenarios (real sockets, default Locator settings: 64 in flight, 250 ms connect timeout):

* ``loopback-silent``: 127.77.0.0/24, nothing listens; connects are refused at once.
* ``loopback-first-peer``: 127.78.0.0/24 with one beacon on the last address.
* ``dropped-silent`` (root + iproute2 only): a /24 inside two network namespaces this
  script creates, where every SYN is sent and silently dropped (static neighbour
  entries point at a namespace that does not forward), so each connect times out —
  the case the original needed ~64 s per sweep for.
* ``dropped-first-peer``: the same, with one beacon (a second process in the other
  namespace) on 10.213.9.200.

Targets: a silent /24 in at most 1.5 s, the first peer in at most 1 s.

Usage::

    python benchmarks/discovery.py [--repeat 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any

import trio

from beethoven.address import Address
from beethoven.discovery.beacon import BeaconServer
from beethoven.discovery.locator import Found, Locator, LocatorSettings
from beethoven.transport.udp_tcp import open_udp_tcp_transport

SILENT_TARGET = 1.5
FIRST_PEER_TARGET = 1.0
DROP_NET = "10.213.9"
DROP_PORT = 33099


async def _no_join(addrs: object) -> bool:
    return False


async def sweep_once(bind: str, net: str, port: int) -> dict[str, Any]:
    """One sweep of *net* from *bind*; duration and time to the first beacon."""
    async with open_udp_tcp_transport(Address(bind, 0)) as transport:
        locator = Locator(
            LocatorSettings(cluster_net=net, port=port),
            transport=transport,
            cluster="bench",
            name="sweeper",
            join=_no_join,
            members=tuple,
            rng=random.Random(1),
        )
        start = trio.current_time()
        first: list[float] = []

        def on_found(item: Found) -> None:
            first.append(trio.current_time() - start)

        result = await locator.sweep(on_found=on_found)
    return {
        "duration": result.duration,
        "first_peer": first[0] if first else None,
        "found": len(result.found),
        "contacted": result.contacted,
        "outcomes": dict(result.outcomes),
    }


async def serve_beacon(bind: str, port: int, duration: float) -> None:
    """Run a beacon on *bind*:*port* for *duration* seconds; print ``ready`` once up."""
    async with open_udp_tcp_transport(Address(bind, port)) as transport:
        beacon = BeaconServer(
            cluster="bench", name=f"beacon-{bind}", addr=transport.local_address, members=list
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(beacon.run, transport)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await trio.sleep(duration)
            nursery.cancel_scope.cancel()


async def loopback(repeat: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(repeat):
        rows.append(
            {"scenario": "loopback-silent", **await sweep_once("127.0.0.1", "127.77.0.0/24", 33077)}
        )
    for _ in range(repeat):
        async with open_udp_tcp_transport(Address("127.78.0.254", 0)) as t:
            port = t.local_address.port
            beacon = BeaconServer(cluster="bench", name="b", addr=t.local_address, members=list)
            async with trio.open_nursery() as nursery:
                await nursery.start(beacon.run, t)
                row = await sweep_once("127.0.0.1", "127.78.0.0/24", port)
                nursery.cancel_scope.cancel()
        rows.append({"scenario": "loopback-first-peer", **row})
    return rows


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show", dev], check=True, capture_output=True, timeout=10
    ).stdout
    return str(json.loads(out)[0]["address"])


def dropped(repeat: int) -> tuple[list[dict[str, Any]], str | None]:
    """Run the dropped-SYN scenarios in two namespaces; return rows or a skip reason."""
    if shutil.which("ip") is None:
        return [], "skipped dropped-SYN scenarios: the 'ip' command is missing"
    if os.geteuid() != 0:
        return [], "skipped dropped-SYN scenarios: network namespaces need root"
    tag = uuid.uuid4().hex[:6]
    sweeper, sink = f"btbench-{tag}-a", f"btbench-{tag}-b"
    created: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        for ns in (sweeper, sink):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip(
            "-n",
            sweeper,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            sink,
        )
        _ip("-n", sweeper, "addr", "add", f"{DROP_NET}.1/24", "dev", "eth0")
        _ip("-n", sink, "addr", "add", f"{DROP_NET}.200/24", "dev", "eth0")
        for ns in (sweeper, sink):
            _ip("-n", ns, "link", "set", "eth0", "up")
        # Every other host of the /24 resolves to the sink, which does not forward:
        # SYNs leave, nothing ever answers (a firewall that drops, not one that rejects).
        mac = _mac(sink, "eth0")
        with tempfile.NamedTemporaryFile("w", suffix=".ip", delete=False) as batch:
            for host in range(2, 255):
                if host != 200:
                    batch.write(
                        f"neigh replace {DROP_NET}.{host} lladdr {mac} dev eth0 nud permanent\n"
                    )
        try:
            _ip("-n", sweeper, "-batch", batch.name)
        finally:
            os.unlink(batch.name)
        inner = [sys.executable, os.path.abspath(__file__)]
        net = f"{DROP_NET}.0/24"
        for _ in range(repeat):
            out = subprocess.run(
                ["ip", "netns", "exec", sweeper, *inner, "--role", "sweep",
                 "--bind", f"{DROP_NET}.1", "--net", net, "--port", str(DROP_PORT)],
                check=True, capture_output=True, timeout=60,
            ).stdout  # fmt: skip
            rows.append({"scenario": "dropped-silent", **json.loads(out)})
        beacon = subprocess.Popen(
            ["ip", "netns", "exec", sink, *inner, "--role", "beacon",
             "--bind", f"{DROP_NET}.200", "--port", str(DROP_PORT), "--duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert beacon.stdout is not None
            if beacon.stdout.readline().strip() != b"ready":
                raise RuntimeError("the beacon process did not start")
            for _ in range(repeat):
                out = subprocess.run(
                    ["ip", "netns", "exec", sweeper, *inner, "--role", "sweep",
                     "--bind", f"{DROP_NET}.1", "--net", net, "--port", str(DROP_PORT)],
                    check=True, capture_output=True, timeout=60,
                ).stdout  # fmt: skip
                rows.append({"scenario": "dropped-first-peer", **json.loads(out)})
        finally:
            beacon.kill()
            beacon.wait(timeout=10)
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    return rows, None


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        group = [r for r in rows if r["scenario"] == scenario]
        durations = sorted(r["duration"] for r in group)
        firsts = sorted(r["first_peer"] for r in group if r["first_peer"] is not None)
        out.append(
            {
                "scenario": scenario,
                "runs": len(group),
                "hosts": group[0]["contacted"],
                "sweep_median_s": durations[len(durations) // 2],
                "sweep_max_s": durations[-1],
                "first_peer_median_s": firsts[len(firsts) // 2] if firsts else None,
                "first_peer_max_s": firsts[-1] if firsts else None,
                "meets_sweep_target": durations[-1] <= SILENT_TARGET,
                "meets_first_peer_target": (firsts[-1] <= FIRST_PEER_TARGET) if firsts else None,
            }
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--role", choices=["sweep", "beacon"], help=argparse.SUPPRESS)
    parser.add_argument("--bind", help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sweep":
        print(json.dumps(trio.run(sweep_once, args.bind, args.net, args.port)))
        return
    if args.role == "beacon":
        trio.run(serve_beacon, args.bind, args.port, args.duration)
        return
    rows = trio.run(loopback, args.repeat)
    more, note = dropped(args.repeat)
    rows += more
    summary = summarise(rows)
    columns = list(summary[0])
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in summary:
        print(" | ".join(_fmt(row[c]) for c in columns))
    print(f"targets: silent /24 sweep <= {SILENT_TARGET} s, first peer <= {FIRST_PEER_TARGET} s")
    if note:
        print(note)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "runs": rows, "note": note}, fh, indent=2)


if __name__ == "__main__":
    main()
