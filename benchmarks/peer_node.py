"""One cluster member in its own OS process, for `benchmarks.peers`.

Usage::

    python -m benchmarks.peer_node beethoven HOST:PORT PROBE_INTERVAL SECRET [SEED ...]
    python -m benchmarks.peer_node swim      HOST:PORT PROBE_INTERVAL SECRET [SEED ...]

Both sides print JSON lines on stdout, each with ``t`` = ``time.monotonic()`` (one
system-wide clock on Linux, so the parent can compare lines from different processes):

* ``{"t": ..., "started": "HOST:PORT"}`` once the member serves (sockets bound, protocol
  running), before it contacts any seed;
* ``{"t": ..., "m": NAME, "s": STATE}`` for every membership change this member sees,
  STATE one of ``alive``, ``suspect``, ``dead``, ``left``, ``reaped``.

The member runs until it is killed. Only 127.0.0.x addresses are accepted.
"""

from __future__ import annotations

import json
import sys
import time

STATE_NAMES = {0: "alive", 1: "suspect", 2: "dead", 3: "left"}


def emit(**fields: object) -> None:
    """Print one JSON line stamped with the monotonic clock."""
    sys.stdout.write(json.dumps({"t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def _check_loopback(addr: str) -> None:
    if not addr.startswith("127.0.0."):
        raise SystemExit(f"peer_node: only 127.0.0.x addresses are allowed, got {addr!r}")


def run_beethoven(name: str, probe_interval: float, secret: str, seeds: list[str]) -> None:
    """Run a Beethoven membership node (`MembershipRunner` + `SwimCore`) until killed."""
    import random

    import attrs
    import trio

    from beethoven.address import Address, parse_address
    from beethoven.membership.api import MemberEventKind
    from beethoven.membership.params import SwimParams
    from beethoven.membership.runner import MembershipRunner
    from beethoven.membership.swim import SwimCore
    from beethoven.transport.udp_tcp import open_udp_tcp_transport
    from beethoven.wire.codec import encoded_size
    from beethoven.wire.packet import PacketCodec
    from beethoven.wire.security import Keyring

    params = attrs.evolve(SwimParams.lan(), probe_interval=probe_interval)
    local = parse_address(name)

    async def main() -> None:
        keyring = Keyring.from_strings(secret)
        async with open_udp_tcp_transport(Address(local.host, local.port)) as transport:
            core = SwimCore(
                name=name,
                addr=transport.local_address,
                generation=time.time_ns(),
                rng=random.Random(name),
                size_of=encoded_size,
                params=params,
                cluster="bench",
            )
            runner = MembershipRunner(core, transport, PacketCodec(keyring), keyring=keyring)
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.run)
                async with runner.subscribe(maxlen=65536) as sub:
                    emit(started=name)
                    if seeds:
                        nursery.start_soon(runner.join, [parse_address(s) for s in seeds])
                    async for event in sub:
                        state = (
                            "reaped"
                            if event.kind == MemberEventKind.REAPED
                            else STATE_NAMES.get(event.member.status, str(event.member.status))
                        )
                        emit(m=event.member.name, s=state)

    trio.run(main)


def run_swim(name: str, probe_interval: float, secret: str, seeds: list[str]) -> None:
    """Run a `swim-protocol` (asyncio, UDP transport) member until killed.

    swim-protocol needs at least one peer name on every member, the first one included:
    with none, its failure-detection task dies on its first tick.
    """
    if not seeds:
        raise SystemExit("peer_node: a swim-protocol member needs at least one peer")
    import asyncio
    from contextlib import AsyncExitStack

    from swimprotocol.members import Member, Members
    from swimprotocol.status import Status
    from swimprotocol.udp import UdpTransport
    from swimprotocol.udp.config import UdpConfig
    from swimprotocol.worker import Worker

    names = {Status.ONLINE: "alive", Status.SUSPECT: "suspect", Status.OFFLINE: "dead"}

    async def main() -> None:
        # Aligned with Beethoven's lan preset where the two designs have the same knob:
        # probe interval (the benchmark's setting), direct probe timeout 0.4 s and three
        # indirect probes. Suspicion (a fixed 5 s here, Lifeguard-dynamic there) and
        # dissemination (one member every 0.5 s) differ in design and keep the defaults.
        config = UdpConfig(
            local_name=name,
            peers=seeds,
            secret=secret,
            ping_interval=probe_interval,
            ping_timeout=0.4,
            ping_req_count=3,
        )
        members = Members(config)
        worker = Worker(config, members)
        transport = UdpTransport(config, worker)

        def report(member: Member) -> None:
            if not member.local:
                emit(m=member.name, s=names.get(member.status, member.status.name.lower()))

        async def watch() -> None:
            # poll() registers its wakeup before it waits and nothing awaits between two
            # polls, so no notification is lost.
            while True:
                for member in await members.listener.poll():
                    report(member)

        async with AsyncExitStack() as stack:
            await stack.enter_async_context(transport)
            worker_task = await stack.enter_async_context(worker)
            emit(started=name)
            watcher = asyncio.create_task(watch())
            done, _ = await asyncio.wait(
                {worker_task, watcher}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                task.result()  # re-raise what stopped it, so the parent sees a crash
            raise RuntimeError("swim-protocol worker stopped")

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 4 or args[0] not in ("beethoven", "swim"):
        sys.stderr.write(__doc__ or "")
        return 2
    impl, name, interval, secret, *seeds = args
    for addr in (name, *seeds):
        _check_loopback(addr)
    if impl == "beethoven":
        run_beethoven(name, float(interval), secret, seeds)
    else:
        run_swim(name, float(interval), secret, seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
