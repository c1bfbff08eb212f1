"""100 nodes, 20 roles, random crashes, restarts and partitions (memory network).

After the faults stop and the cluster quiesces, every role must have exactly
``count`` holders, each on an online node, and every node must agree on them.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict

import pytest
import trio
import trio.testing

from beethoven.roles import Role, RoleContext
from beethoven.testing import Cluster, open_cluster

N = 100
ROLE_COUNTS = {f"role{i:02d}": 1 + i % 3 for i in range(20)}


def make_roles(running: dict[str, set[str]]) -> list[Role]:
    async def run(ctx: RoleContext) -> None:
        running[ctx.role].add(ctx.node)
        try:
            await trio.sleep_forever()
        finally:
            running[ctx.role].discard(ctx.node)

    return [Role(name, count, run) for name, count in ROLE_COUNTS.items()]


def settled(cluster: Cluster, running: dict[str, set[str]]) -> bool:
    if not cluster.converged():
        return False
    online = set(cluster.running())
    for role, count in ROLE_COUNTS.items():
        hosts = running[role]
        if len(hosts) != count or not hosts <= online:
            return False
        if any(set(node.whois_hosting(role)) != hosts for node in cluster.nodes()):
            return False
    return True


# One seed in CI (about two minutes of wall time); BEETHOVEN_CHAOS_SEEDS=1,2,3,... for more.
SEEDS = [int(x) for x in os.environ.get("BEETHOVEN_CHAOS_SEEDS", "1").split(",") if x.strip()]


@pytest.mark.parametrize("seed", SEEDS)
async def test_roles_settle_to_exact_counts_after_random_faults(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    running: dict[str, set[str]] = defaultdict(set)
    with trio.fail_after(3600):
        async with open_cluster(N, roles=make_roles(running), seed=seed, preset="lan") as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(lambda: settled(cluster, running), step=0.5)
            down: set[str] = set()
            for step in range(8):
                action = rng.choice(["crash", "crash", "restart", "partition"])
                alive = [n for n in cluster.names() if n not in down]
                if action == "crash" and len(alive) > N // 2:
                    victims = rng.sample(alive, rng.randint(1, 5))
                    for victim in victims:
                        await cluster.crash(victim)
                        down.add(victim)
                elif action == "restart" and down:
                    for name in rng.sample(sorted(down), min(len(down), rng.randint(1, 5))):
                        await cluster.start(name)
                        down.discard(name)
                elif action == "partition":
                    members = [n for n in cluster.names() if n not in down]
                    side = set(rng.sample(members, len(members) // 3))
                    cluster.partition(f"p{step}", side, set(members) - side)
                    await trio.sleep(rng.uniform(5, 20))
                    cluster.heal(f"p{step}")
                await trio.sleep(rng.uniform(1, 8))
            for name in sorted(down):
                await cluster.start(name)
            await cluster.wait_for(lambda: settled(cluster, running), step=0.5)
            # quiescent: holdings stay exact
            await trio.sleep(30)
            assert settled(cluster, running)
