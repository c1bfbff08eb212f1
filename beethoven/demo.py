"""``beethoven demo``: a small real cluster on loopback, with a failover to watch.

Starts ``--nodes`` nodes (default 5) on 127.0.0.2, 127.0.0.3, … with one shared
port, a fresh cluster key and the in-memory store, declares two sample roles
(``scheduler`` ×1 and ``worker`` ×2), shows members, role holders and allocator
scores, kills the scheduler's node (no goodbye: it just goes silent), shows the
death being detected and the role moving, brings the node back, and prints a
summary. On a terminal the view updates in place; otherwise it prints one line per
event. Everything stays on 127.0.0.0/8.

Ctrl-C (SIGINT) or SIGTERM stops it cleanly: every node still running leaves the
cluster gracefully, the summary so far is printed, and the command exits 130 (143).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from typing import Any

import attrs
import trio

from beethoven.address import Address
from beethoven.config import Config
from beethoven.core import NodeStatus, NodeUpdate
from beethoven.errors import BeethovenError
from beethoven.node import Node, open_node
from beethoven.roles import Role, RoleContext
from beethoven.transport.udp_tcp import open_udp_tcp_transport
from beethoven.wire.security import generate_key, key_to_string

__all__ = ["DemoSummary", "run_demo"]

SUBNET = "127.0.0.0/26"


@attrs.define
class DemoSummary:
    """What the demo observed (times in seconds since the demo started)."""

    nodes: int
    ready_after: float | None = None
    killed: str | None = None
    killed_at: float | None = None
    detected_at: float | None = None
    new_scheduler: str | None = None
    failover_at: float | None = None
    restarted_at: float | None = None
    rejoined_at: float | None = None
    max_schedulers_at_once: int = 0
    events: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        """True when the failover happened and no role ran twice."""
        return (
            self.failover_at is not None
            and self.rejoined_at is not None
            and self.max_schedulers_at_once <= 1
        )


class _Demo:
    def __init__(self, nodes: int, duration: float, *, live: bool, quiet: bool = False) -> None:
        self.n = nodes
        self.duration = duration
        self.live = live
        self.quiet = quiet
        self.key = key_to_string(generate_key())
        self.running: dict[str, set[str]] = defaultdict(set)
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.summary = DemoSummary(nodes)
        self.t0 = 0.0
        self.port = 0

    # --- the roles ------------------------------------------------------------------

    def _role(self, name: str, count: int) -> Role:
        async def run(ctx: RoleContext) -> None:
            self.running[ctx.role].add(ctx.node)
            if ctx.role == "scheduler":
                self.summary.max_schedulers_at_once = max(
                    self.summary.max_schedulers_at_once, len(self.running["scheduler"])
                )
            self.event(f"{ctx.node} starts {ctx.role} (epoch {ctx.epoch})")
            try:
                while not ctx.stopping.is_set():  # a stop (a leave) ends it at once
                    ctx.report_health("ok")
                    with trio.move_on_after(1):
                        await ctx.stopping.wait()
            finally:
                self.running[ctx.role].discard(ctx.node)

        return Role(name, count, run)

    # --- output ---------------------------------------------------------------------

    def now(self) -> float:
        return trio.current_time() - self.t0

    def event(self, text: str) -> None:
        line = f"[{self.now():5.1f}s] {text}"
        self.summary.events.append(line)
        if not self.live and not self.quiet:
            print(line, flush=True)

    def render(self) -> None:
        if not self.live:
            return
        out = ["\x1b[H\x1b[2J", "Beethoven demo — a cluster on loopback (Ctrl-C to stop)\n"]
        observer = next(iter(self.nodes.values()), None)
        out.append(f"{'NODE':10} {'ADDRESS':18} {'SEEN AS':9} {'HOSTS':22} SCORE")
        seen = {}
        if observer is not None:
            seen = {r.node: r.status.value for r in observer.get_detailed_cluster_nodes()}
        for i in range(self.n):
            name = f"node{i + 1}"
            node = self.nodes.get(name)
            hosts = sorted(r for r, holders in self.running.items() if name in holders)
            score = f"{node.score():.2f}" if node is not None else "-"
            state = seen.get(name, "-") if node is not None else "killed"
            addr = f"127.0.0.{i + 2}:{self.port}"
            out.append(f"{name:10} {addr:18} {state:9} {', '.join(hosts) or '-':22} {score}")
        out.append("")
        if observer is not None:
            for info in observer.get_roles():
                out.append(
                    f"role {info.role:10} wants {info.count}: {', '.join(info.nodes) or '-'}"
                )
            out.append(f"allocate() -> {observer.allocate()}")
        out.append("")
        out.extend(self.summary.events[-8:])
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()

    # --- nodes ----------------------------------------------------------------------

    def config(self, i: int) -> Config:
        return Config(
            name=f"node{i + 1}",
            bind=f"127.0.0.{i + 2}",
            port=self.port,
            cluster="demo",
            cluster_net=(SUBNET,),
            keys=(self.key,),
            preset="local",
            resweep_interval=5.0,
            hwmon_interval=1.0,
            roles=(self._role("scheduler", 1), self._role("worker", 2)),
        )

    async def start(self, nursery: trio.Nursery, i: int) -> Node:
        config = self.config(i)

        async def run(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scopes[config.node_name] = scope
                async with open_node(config) as node:
                    self.nodes[node.name] = node
                    node.add_alert_callback(self.on_update)
                    task_status.started(node)
                    try:
                        await trio.sleep_forever()
                    finally:
                        self.nodes.pop(node.name, None)

        node: Node = await nursery.start(run)
        return node

    def on_update(self, update: NodeUpdate) -> None:
        s = self.summary
        if update.node == s.killed:
            if update.status is NodeStatus.OFFLINE and s.detected_at is None:
                s.detected_at = self.now()
                self.event(f"{update.node} detected offline")
            elif (
                update.status is NodeStatus.ONLINE
                and s.restarted_at is not None
                and s.rejoined_at is None
            ):
                s.rejoined_at = self.now()
                self.event(f"{update.node} is back online")

    async def pick_port(self) -> int:
        # A port free on the first address; the others are as free on a quiet loopback.
        async with open_udp_tcp_transport(Address("127.0.0.2", 0)) as probe:
            return probe.local_address.port

    async def main(self) -> DemoSummary:
        self.port = await self.pick_port()
        self.t0 = trio.current_time()
        s = self.summary
        self.event(f"starting {self.n} nodes on 127.0.0.2-{self.n + 1}, port {self.port}")
        async with trio.open_nursery() as nursery:
            for i in range(self.n):
                await self.start(nursery, i)

            async def redraw() -> None:
                while True:
                    self.render()
                    await trio.sleep(0.5)

            nursery.start_soon(redraw)
            with trio.move_on_after(20):
                for node in list(self.nodes.values()):
                    await node.wait_ready()
                while not (  # noqa: ASYNC110 - waiting on cluster state, bounded above
                    len(self.running["scheduler"]) == 1 and len(self.running["worker"]) == 2
                ):
                    await trio.sleep(0.1)
            s.ready_after = self.now()
            self.event(f"cluster ready: scheduler on {', '.join(self.running['scheduler'])}")
            kill_at = max(4.0, self.duration * 0.2)
            await trio.sleep_until(self.t0 + kill_at)
            victim = next(iter(self.running["scheduler"]), None) or "node1"
            s.killed = victim
            s.killed_at = self.now()
            self.event(f"killing {victim} (no goodbye: it just goes silent)")
            self.nodes[victim].kill()
            self.scopes[victim].cancel()
            with trio.move_on_at(self.t0 + self.duration * 0.6):
                while not (  # noqa: ASYNC110
                    self.running["scheduler"] and victim not in self.running["scheduler"]
                ):
                    await trio.sleep(0.05)
                s.failover_at = self.now()
                s.new_scheduler = next(iter(self.running["scheduler"]))
                self.event(f"scheduler moved to {s.new_scheduler}")
            await trio.sleep_until(max(trio.current_time(), self.t0 + self.duration * 0.6))
            s.restarted_at = self.now()
            self.event(f"restarting {victim}")
            await self.start(nursery, int(victim.removeprefix("node")) - 1)
            with trio.move_on_at(self.t0 + self.duration - 1):
                while s.rejoined_at is None:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await trio.sleep_until(max(trio.current_time(), self.t0 + self.duration - 1))
            self.render()
            nursery.cancel_scope.cancel()
        return s


def run_demo(*, nodes: int = 5, duration: float = 30.0, as_json: bool = False) -> int:
    """Run the demo; return 0 if the failover worked without running a role twice.

    Raises:
        Interrupted: SIGINT or SIGTERM stopped it (after the summary so far was printed).
    """
    from beethoven.cli import Interrupted, run_interruptible

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    demo = _Demo(nodes, duration, live=sys.stdout.isatty() and not as_json, quiet=as_json)
    started = time.monotonic()
    interrupted: Interrupted | None = None
    try:
        run_interruptible(demo.main)
    except Interrupted as exc:
        interrupted = exc
        line = f"[{time.monotonic() - started:5.1f}s] {exc}: stopped, the nodes left the cluster"
        demo.summary.events.append(line)
        if not as_json:
            print(line, flush=True)
    except OSError as exc:
        raise BeethovenError(f"the demo could not bind 127.0.0.x: {exc}") from None
    except ExceptionGroup as group:  # a node's bind failed inside the demo's nursery
        bind: OSError | ExceptionGroup[OSError] | None = group.subgroup(OSError)
        if bind is None:
            raise
        while isinstance(bind, ExceptionGroup):
            bind = bind.exceptions[0]
        raise BeethovenError(f"the demo could not bind 127.0.0.x: {bind}") from None
    summary = demo.summary
    wall = time.monotonic() - started
    if as_json:
        body: dict[str, Any] = attrs.asdict(summary)
        body["ok"] = summary.ok
        body["interrupted"] = interrupted is not None
        body["wall_seconds"] = round(wall, 2)
        print(json.dumps(body, indent=2))
    else:
        _print_summary(summary, wall, interrupted=interrupted is not None)
    if interrupted is not None:
        raise interrupted
    return 0 if summary.ok else 1


def _print_summary(s: DemoSummary, wall: float, *, interrupted: bool = False) -> None:
    def since_kill(t: float | None) -> str:
        if t is None or s.killed_at is None:
            return "did not happen"
        return f"{t - s.killed_at:.1f} s after the kill"

    print()
    print("Summary (interrupted: what happened so far)" if interrupted else "Summary")
    print(f"  nodes                 {s.nodes}")
    ready = "no" if s.ready_after is None else f"{s.ready_after:.1f} s"
    print(f"  cluster ready after   {ready}")
    print(f"  killed                {s.killed}")
    print(f"  death detected        {since_kill(s.detected_at)}")
    print(f"  scheduler moved to    {s.new_scheduler} ({since_kill(s.failover_at)})")
    back = (
        "no"
        if s.rejoined_at is None or s.restarted_at is None
        else (f"{s.rejoined_at - s.restarted_at:.1f} s after restart")
    )
    print(f"  {s.killed} back online   {back}")
    print(f"  schedulers at once    at most {s.max_schedulers_at_once}")
    result = "INTERRUPTED" if interrupted else ("OK" if s.ok else "FAILED")
    print(f"  result                {result} in {wall:.1f} s")
