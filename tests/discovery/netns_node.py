"""A discovery-only node process for the multi-host test (one runs in each network namespace).

It binds a real UDP+TCP transport on ``--bind:--port``, serves a `BeaconServer`, runs a
`Locator` over ``--net`` and, after ``--duration`` seconds, prints one JSON object:
``{"name", "status", "found": [names], "joined_through": [addresses], "stats": {...}}``.

Until the membership runner lands, "joining" is recorded, not performed: the join
callable remembers the addresses and the names behind them, and ``members`` is the set
of names joined through, so the Locator's clustered/standalone logic runs unchanged.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence

import attrs
import trio

from beethoven.address import Address
from beethoven.discovery.beacon import BeaconServer
from beethoven.discovery.locator import Found, Locator, LocatorSettings
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.messages import BeaconMember
from beethoven.wire.security import Keyring


async def main(args: argparse.Namespace) -> dict[str, object]:
    keyring = Keyring.from_strings(args.key) if args.key else None
    found: dict[Address, str] = {}
    joined: list[str] = []
    members: set[str] = set()

    async def join(addrs: Sequence[Address]) -> bool:
        names = {found[a] for a in addrs if a in found}
        joined.extend(str(a) for a in addrs)
        members.update(names)
        return bool(names)

    def record(item: Found) -> None:
        found[item.addr] = item.reply.name

    async with open_udp_tcp_transport(Address(args.bind, args.port)) as transport:
        beacon = BeaconServer(
            cluster=args.cluster,
            name=args.name,
            addr=transport.local_address,
            members=lambda: [BeaconMember(args.name, transport.local_address)],
            keyring=keyring,
            read_timeout=1.0,
        )
        settings = LocatorSettings(
            cluster_net=tuple(args.net),
            port=args.port,
            resweep_interval=args.resweep,
            clustered_resweep_factor=1.0,
        )
        locator = Locator(
            settings,
            transport=transport,
            cluster=args.cluster,
            name=args.name,
            join=join,
            members=lambda: members,
            keyring=keyring,
            rng=random.Random(),
            on_found=record,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(beacon.run, transport)
            status = await nursery.start(locator.run)
            await trio.sleep(args.duration)
            nursery.cancel_scope.cancel()
    return {
        "name": args.name,
        "bootstrap": status,
        "status": locator.status,
        "found": sorted(set(found.values())),
        "joined_through": joined,
        "stats": attrs.asdict(locator.stats()),
        "beacon": attrs.asdict(beacon.stats()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--net", action="append", required=True)
    parser.add_argument("--cluster", default="netns")
    parser.add_argument("--key", default="")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--resweep", type=float, default=1.0)
    result = trio.run(main, parser.parse_args())
    sys.stdout.write(json.dumps(result) + "\n")
