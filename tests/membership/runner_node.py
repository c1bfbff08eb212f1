"""A membership node in its own OS process, for the SIGKILL test.

Usage: python runner_node.py NAME HOST PORT KEY SEED_HOST:SEED_PORT ...
Prints one line "ready" once serving, then runs until killed.
"""

from __future__ import annotations

import random
import sys
import time

import trio

from beethoven.address import Address, parse_address
from beethoven.membership.params import SwimParams
from beethoven.membership.runner import MembershipRunner
from beethoven.membership.swim import SwimCore
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.codec import encoded_size
from beethoven.wire.packet import PacketCodec
from beethoven.wire.security import Keyring


async def main(name: str, host: str, port: int, key: str, seeds: list[Address]) -> None:
    keyring = Keyring.from_strings(key)
    async with open_udp_tcp_transport(Address(host, port)) as transport:
        core = SwimCore(
            name=name,
            addr=transport.local_address,
            generation=time.time_ns(),
            rng=random.Random(name),
            size_of=encoded_size,
            params=SwimParams.local(),
            cluster="test",
        )
        runner = MembershipRunner(core, transport, PacketCodec(keyring), keyring=keyring)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            if seeds:
                await runner.join(seeds)
            print("ready", flush=True)
            await trio.sleep_forever()


if __name__ == "__main__":
    name, host, port, key, *seed_args = sys.argv[1:]
    trio.run(main, name, host, int(port), key, [parse_address(s) for s in seed_args])
