"""Regression scenarios in the discrete-event simulator (beethoven.sim).

Each test is named after the failure it pins. Sizes are kept small so the whole
file runs in well under a minute; the benchmark runs the long versions.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beethoven.membership.api import MemberEventKind
from beethoven.membership.params import SwimParams
from beethoven.sim import Simulator, estimate_size, percentile
from beethoven.wire.messages import Alive, MemberStatus, Ping

pytestmark = pytest.mark.timeout(120)


def test_cluster_converges_and_detects_a_crash() -> None:
    sim = Simulator(seed=1)
    sim.bootstrap(50)
    sim.run_until(10)
    sim.crash(7, at=10.0)
    sim.run_until(30)
    seen = sim.first_seen(MemberEventKind.DEAD, "n7")
    assert len(seen) == 49
    times = [t - 10.0 for t in seen.values()]
    assert percentile(times, 0.5) < 6.0
    assert max(times) < 12.0
    assert sim.disagreements() == []
    assert sim.false_deaths == 0


def test_join_reaches_every_member_quickly() -> None:
    sim = Simulator(seed=2, loss=0.1)
    sim.bootstrap(200)
    sim.run_until(2)
    node = sim.add_node([0, 1, 2], at=2.0)
    sim.run_until(8)
    seen = sim.first_seen(MemberEventKind.JOINED, node.name)
    assert len(seen) == 200
    assert percentile([t - 2.0 for t in seen.values()], 0.99) < 1.9
    assert sim.disagreements() == []


def test_grown_cluster_converges_from_seeds() -> None:
    sim = Simulator(seed=3)
    first = sim.add_node()
    sim.run_until(1)
    sim.grow(29, seeds=2, spacing=0.2)
    sim.run_until(40)
    assert first.up
    assert sim.disagreements() == []


def test_stale_alive_does_not_resurrect() -> None:
    sim = Simulator(seed=4)
    sim.bootstrap(20)
    sim.run_until(5)
    victim = sim.nodes[3]
    old_gen = victim.generation
    sim.crash(3, at=5.0)
    sim.run_until(25)
    assert all(
        m.status == MemberStatus.DEAD
        for n in sim.running()
        for m in n.core.members()
        if m.name == "n3"
    )
    # A delayed datagram from the old life arrives everywhere: alive at incarnation 0.
    stale = Alive("n3", old_gen, 0, victim.addr)
    for n in sim.running():
        sim._apply(n, n.core.handle_datagram(sim.now, victim.addr, [stale]))
    sim.run_until(40)
    assert sim.disagreements() == []
    assert all(
        m.status == MemberStatus.DEAD
        for n in sim.running()
        for m in n.core.members()
        if m.name == "n3"
    )


def test_mass_restart_leaves_no_live_member_dead() -> None:
    sim = Simulator(seed=5)
    sim.bootstrap(40)
    sim.run_until(10)
    for i in range(20):
        sim.restart(i, at=10.0 + i * 0.25, seeds=[20 + (i % 20), 21 + (i % 19)])
    sim.run_until(75)
    assert sim.dead_but_running() == []
    assert sim.disagreements() == []


def test_partition_healed_after_ten_minutes_merges() -> None:
    sim = Simulator(seed=6)
    sim.bootstrap(16)
    sim.run_until(5)
    sim.partition([range(8), range(8, 16)], at=5.0)
    sim.run_until(605)
    # Each side declared the other dead and kept working.
    assert sim.dead_but_running()
    sim.heal(at=605.0)
    sim.run_until(605 + 240)
    assert sim.disagreements() == []
    assert sim.dead_but_running() == []


def test_slow_node_gets_no_healthy_member_declared_dead() -> None:
    sim = Simulator(seed=7)
    sim.bootstrap(30)
    sim.slow(0, every=5.0, duration=1.0, start=3.0)
    sim.run_until(300)
    assert sim.false_deaths == 0
    assert sim.disagreements() == []


def test_loss_10_percent_gives_no_false_deaths() -> None:
    sim = Simulator(seed=8, loss=0.1)
    sim.bootstrap(50)
    sim.run_until(1800)  # 25 node-hours
    assert sim.false_deaths == 0
    assert sim.disagreements() == []


def _slow_suspicions(local_health: bool) -> int:
    params = attrs.evolve(SwimParams.lan(), local_health=local_health)
    sim = Simulator(seed=9, params=params)
    sim.bootstrap(20)
    sim.slow(0, every=10.0, duration=3.0, start=2.0, mode="inbound")
    sim.run_until(300)
    return sum(1 for r in sim.false_suspicion_log if r.subject != "n0" and r.observer == "n0")


def test_local_health_silences_a_slow_node() -> None:
    off = _slow_suspicions(False)
    on = _slow_suspicions(True)
    assert off >= 20
    assert on * 50 <= off


def test_memberlist_profile_is_slower_to_detect() -> None:
    times = {}
    for preset in ("lan", "memberlist"):
        sim = Simulator(seed=10, params=SwimParams.preset(preset))
        sim.bootstrap(30)
        sim.run_until(5)
        sim.crash(4, at=5.0)
        sim.run_until(60)
        seen = sim.first_seen(MemberEventKind.DEAD, "n4")
        times[preset] = percentile([t - 5.0 for t in seen.values()], 0.5)
    assert times["lan"] < times["memberlist"]


def test_graceful_leave_is_left_not_dead() -> None:
    sim = Simulator(seed=11)
    sim.bootstrap(20)
    sim.run_until(3)
    sim.leave(5, at=3.0)
    sim.run_until(30)
    for n in sim.running():
        m = n.core.member("n5")
        assert m is not None
        assert m.status == MemberStatus.LEFT
    assert sim.event_counts.get(MemberEventKind.DEAD, 0) == 0


def test_simulator_is_seed_replayable() -> None:
    def run() -> list[tuple[float, str, str, str]]:
        sim = Simulator(seed=12, loss=0.05)
        sim.bootstrap(15)
        sim.crash(2, at=3.0)
        sim.restart(2, at=20.0)
        sim.run_until(40)
        return [(r.time, r.kind, r.observer, r.subject) for r in sim.log]

    assert run() == run()


def test_estimate_size_is_plausible() -> None:
    assert 8 <= estimate_size(Ping(1, "node-a", "node-b")) <= 20
    assert estimate_size(Alive("n" * 40, 1 << 50, 3, Simulator.address_of(1), b"x" * 100)) > 150


_OP = st.one_of(
    st.tuples(st.just("crash"), st.integers(0, 7)),
    st.tuples(st.just("restart"), st.integers(0, 7)),
    st.tuples(st.just("partition"), st.integers(1, 7)),
    st.tuples(st.just("heal"), st.just(0)),
    st.tuples(st.just("loss"), st.sampled_from([0, 5, 10, 30])),
    st.tuples(st.just("leave"), st.integers(0, 7)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    ops=st.lists(st.tuples(_OP, st.floats(0.0, 40.0)), min_size=1, max_size=8),
)
def test_random_fault_schedules_converge(
    seed: int, ops: list[tuple[tuple[str, int], float]]
) -> None:
    """After any schedule of faults and then quiet, every running member agrees."""
    sim = Simulator(seed=seed)
    sim.bootstrap(8)
    t = 1.0
    for (op, arg), gap in ops:
        t += gap
        sim.run_until(t)
        if op == "crash":
            sim.crash(arg)
        elif op == "restart":
            sim.restart(arg)
        elif op == "partition":
            sim.partition([range(arg), range(arg, 8)])
        elif op == "heal":
            sim.heal()
        elif op == "loss":
            sim.set_loss(arg / 100)
        elif op == "leave" and len(sim.running()) > 2:
            sim.leave(arg)
    sim.run_until(t + 1.0)
    sim.heal()
    sim.set_loss(0.0)
    sim.run_until(t + 300.0)
    assert sim.disagreements() == []
