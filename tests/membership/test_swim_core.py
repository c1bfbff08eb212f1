"""Unit tests of the SWIM + Lifeguard core, one per rule of specs/membership.md.

The core is driven synchronously: feed inputs, assert effects.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.address import Address
from beethoven.errors import ConfigError
from beethoven.membership.api import (
    Effect,
    MemberEvent,
    MemberEventKind,
    SendDatagram,
    StreamRequest,
)
from beethoven.membership.params import SwimParams, suspicion_timeout
from beethoven.membership.swim import SwimCore
from beethoven.sim import estimate_size
from beethoven.wire.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Leave,
    MemberState,
    MemberStatus,
    Message,
    Nack,
    Ping,
    PushPullReply,
    PushPullRequest,
    Suspect,
)

pytestmark = pytest.mark.timeout(60)

A = Address("10.0.0.1", 7946)
RULES = attrs.evolve(SwimParams.lan(), probe_interval=1.0, probe_timeout=0.5, suspicion_mult=1.0)


def addr(i: int) -> Address:
    return Address(f"10.0.0.{i}", 7946)


def make(
    name: str = "n1", i: int = 1, gen: int = 100, params: SwimParams | None = None, **kw: Any
) -> SwimCore:
    # Round numbers make the expected times readable; presets are tested separately.
    p = params if params is not None else RULES
    if kw:
        p = attrs.evolve(p, **kw)
    return SwimCore(
        name=name,
        addr=addr(i),
        generation=gen,
        rng=random.Random(7),
        size_of=estimate_size,
        params=p,
    )


def alive(i: int, inc: int = 0, gen: int = 100, meta: bytes = b"") -> Alive:
    return Alive(f"n{i}", gen, inc, addr(i), meta)


def with_peers(core: SwimCore, n: int, now: float = 0.0) -> None:
    core.start(now)
    core.handle_datagram(now, addr(2), [alive(i) for i in range(2, n + 2)])


def sends(effects: Sequence[Effect]) -> list[SendDatagram]:
    return [e for e in effects if isinstance(e, SendDatagram)]


def msgs(effects: Sequence[Effect], cls: type) -> list[Message]:
    return [m for e in sends(effects) for m in e.messages if isinstance(m, cls)]


def events(effects: Sequence[Effect], kind: str | None = None) -> list[MemberEvent]:
    return [e for e in effects if isinstance(e, MemberEvent) and (kind is None or e.kind == kind)]


def status(core: SwimCore, name: str) -> int | None:
    m = core.member(name)
    return None if m is None else m.status


def run_until(core: SwimCore, t: float) -> list[Effect]:
    out: list[Effect] = []
    for _ in range(10_000):
        d = core.next_deadline()
        if d > t:
            break
        out += core.handle_timeout(d)
    return out


def drain(core: SwimCore, now: float) -> None:
    """Empty the broadcast queue by answering pings (the facts ride on the acks)."""
    for _ in range(500):
        if not core.pending_broadcasts():
            return
        core.handle_datagram(now, addr(2), [Ping(0, core.name, "n2")])


# --- start, probe, ack ---------------------------------------------------------------------


def test_start_emits_self_joined_and_schedules_probe() -> None:
    core = make()
    out = core.start(0.0)
    assert [e.member.name for e in events(out, MemberEventKind.JOINED)] == ["n1"]
    assert core.next_deadline() <= RULES.probe_interval


def test_probe_sends_ping_and_ack_ends_round() -> None:
    core = make()
    with_peers(core, 1)
    out = run_until(core, 1.0)
    pings = msgs(out, Ping)
    assert len(pings) == 1
    ping = pings[0]
    assert isinstance(ping, Ping)
    assert ping.target == "n2"
    core.handle_datagram(1.0, addr(2), [Ack(ping.seq, "n2")])
    out = run_until(core, 1.9)
    assert not msgs(out, IndirectPing)
    assert status(core, "n2") == MemberStatus.ALIVE


def test_ping_is_answered_with_ack_and_misdirected_ping_dropped() -> None:
    core = make()
    core.start(0.0)
    out = core.handle_datagram(0.1, addr(9), [Ping(5, "n1", "n9")])
    assert msgs(out, Ack) == [Ack(5, "n1")]
    assert sends(out)[0].to == addr(9)
    out = core.handle_datagram(0.1, addr(9), [Ping(6, "other", "n9")])
    assert not sends(out)
    assert core.stats().dropped == 1


def failed_probe(core: SwimCore) -> tuple[Ping, list[Effect], float]:
    """Step timers until a probe's direct timeout; return its ping, effects, ping time."""
    ping: Ping | None = None
    t_ping = 0.0
    for _ in range(1000):
        d = core.next_deadline()
        out = core.handle_timeout(d)
        if ping is None:
            found = msgs(out, Ping)
            if found:
                assert isinstance(found[0], Ping)
                ping, t_ping = found[0], d
        elif msgs(out, IndirectPing) or any(isinstance(e, StreamRequest) for e in out):
            return ping, out, t_ping
    raise AssertionError("no probe failed")


def probe_end(core: SwimCore, t_ping: float, scale: int = 1) -> list[Effect]:
    return run_until(core, t_ping + 1.0 * scale + 1e-6)


def test_direct_timeout_sends_k_indirect_pings_and_tcp_fallback() -> None:
    core = make()
    with_peers(core, 5)
    drain(core, 0.0)
    ping, out, _ = failed_probe(core)
    ind = msgs(out, IndirectPing)
    assert len(ind) == 3
    assert all(isinstance(m, IndirectPing) and m.target == ping.target for m in ind)
    streams = [e for e in out if isinstance(e, StreamRequest)]
    assert len(streams) == 1
    assert isinstance(streams[0].message, Ping)


def test_tcp_fallback_ack_saves_the_probe() -> None:
    core = make()
    with_peers(core, 5)
    ping, out, _ = failed_probe(core)
    token = next(e.token for e in out if isinstance(e, StreamRequest))
    core.handle_stream_reply(0.9, token, Ack(ping.seq, ping.target))
    run_until(core, 5.0)
    assert core.stats().tcp_fallback_acks == 1
    assert status(core, ping.target) == MemberStatus.ALIVE


def test_failed_probe_with_nack_raises_suspicion() -> None:
    core = make()
    with_peers(core, 5)
    ping, out, t_ping = failed_probe(core)
    core.handle_datagram(t_ping + 0.9, addr(3), [Nack(ping.seq, "n3")])
    out = probe_end(core, t_ping)
    assert [e.member.name for e in events(out, MemberEventKind.SUSPECT)] == [ping.target]
    assert core.stats().suspicions_raised == 1


def test_failed_probe_without_any_nack_is_inconclusive_with_local_health() -> None:
    core = make()
    with_peers(core, 5)
    _, _, t_ping = failed_probe(core)
    out = probe_end(core, t_ping)
    assert not events(out, MemberEventKind.SUSPECT)
    assert core.stats().inconclusive_probes == 1
    assert core.local_health == 3  # one per missing nack


def test_failed_probe_without_local_health_suspects() -> None:
    core = make(local_health=False)
    with_peers(core, 5)
    ping, _, t_ping = failed_probe(core)
    out = probe_end(core, t_ping)
    assert [e.member.name for e in events(out, MemberEventKind.SUSPECT)] == [ping.target]
    assert core.local_health == 0


def timeline(core: SwimCore, until: float) -> list[tuple[float, Effect]]:
    out: list[tuple[float, Effect]] = []
    for _ in range(10_000):
        d = core.next_deadline()
        if d > until:
            break
        out += [(d, e) for e in core.handle_timeout(d)]
    return out


def test_local_health_scales_probe_timeout() -> None:
    core = make()
    with_peers(core, 5)
    _, _, t_ping = failed_probe(core)
    out = probe_end(core, t_ping)  # the round ends and the next probe starts
    assert core.local_health == 3
    assert msgs(out, Ping)
    tl = timeline(core, t_ping + 10)
    ind = [
        t
        for t, e in tl
        if isinstance(e, SendDatagram) and isinstance(e.messages[0], IndirectPing)
    ]
    # The new probe's direct timeout is probe_timeout × (score + 1) = 2 s after it.
    assert ind[0] == pytest.approx(t_ping + 1.0 + 0.5 * 4)


def test_ack_lowers_local_health() -> None:
    core = make()
    with_peers(core, 5)
    _, _, t_ping = failed_probe(core)
    out = probe_end(core, t_ping)
    assert core.local_health == 3
    ping = msgs(out, Ping)[0]
    assert isinstance(ping, Ping)
    core.handle_datagram(t_ping + 1.1, addr(2), [Ack(ping.seq, ping.target)])
    assert core.local_health == 2


def test_stall_guard_postpones_a_late_verdict() -> None:
    core = make(local_health=True)
    with_peers(core, 5)
    out = run_until(core, 1.0)
    ping = msgs(out, Ping)[0]
    assert isinstance(ping, Ping)
    late = core.next_deadline() + 2.0  # our loop was blocked for 2 s
    out = core.handle_timeout(late)
    assert not msgs(out, IndirectPing)
    assert core.stats().stalls == 1
    # The ack waiting in the backlog still counts.
    core.handle_datagram(late, addr(2), [Ack(ping.seq, ping.target)])
    out = run_until(core, late + 0.9)
    assert not events(out, MemberEventKind.SUSPECT)


# --- relaying ------------------------------------------------------------------------------


def test_indirect_ping_relays_and_forwards_ack() -> None:
    core = make()
    core.start(0.0)
    out = core.handle_datagram(0.0, addr(5), [IndirectPing(77, "n9", addr(9), "n5", True)])
    ping = msgs(out, Ping)[0]
    assert isinstance(ping, Ping)
    assert sends(out)[0].to == addr(9)
    assert ping.target == "n9"
    out = core.handle_datagram(0.01, addr(9), [Ack(ping.seq, "n9")])
    assert msgs(out, Ack) == [Ack(77, "n9")]
    assert sends(out)[0].to == addr(5)


def test_indirect_ping_without_answer_sends_nack_in_time() -> None:
    core = make()
    core.start(0.0)
    core.handle_datagram(0.0, addr(5), [IndirectPing(77, "n9", addr(9), "n5", True)])
    out = run_until(core, 0.45)
    assert msgs(out, Nack) == [Nack(77, "n1")]


# --- refutation ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Suspect, Dead])
def test_accusation_about_self_is_refuted(cls: type) -> None:
    core = make()
    with_peers(core, 2)
    out = core.handle_datagram(1.0, addr(2), [cls("n1", 100, 0, "n2")])
    assert core.incarnation == 1
    assert core.stats().suspicions_refuted == 1
    assert core.local_health == 1
    # The refutation rides on the next datagram.
    out = core.handle_datagram(1.0, addr(2), [Ping(1, "n1", "n2")])
    assert Alive("n1", 100, 1, addr(1)) in msgs(out, Alive)


def test_leave_about_self_is_refuted_and_old_life_ignored() -> None:
    core = make()
    with_peers(core, 2)
    core.handle_datagram(1.0, addr(2), [Leave("n1", 100, 3)])
    assert core.incarnation == 4
    core.handle_datagram(1.0, addr(2), [Dead("n1", 50, 9, "n2")])  # an earlier life
    assert core.incarnation == 4


def test_stale_accusation_is_ignored_but_alive_reannounced() -> None:
    core = make()
    with_peers(core, 2)
    core.handle_datagram(1.0, addr(2), [Suspect("n1", 100, 0, "n2")])
    drain(core, 1.0)
    # n3 missed the refutation and pings us with the buddy suspect.
    out = core.handle_datagram(2.0, addr(3), [Suspect("n1", 100, 0, "n3"), Ping(4, "n1", "n3")])
    assert core.incarnation == 1
    assert Alive("n1", 100, 1, addr(1)) in msgs(out, Alive)


def test_unconfirmed_suspicion_is_verified_by_probing() -> None:
    core = make(reprobe_fanout=0, local_health=False, tcp_fallback=False)
    with_peers(core, 30)
    core.handle_datagram(0.0, addr(3), [Suspect("n17", 100, 0, "n3")])
    lo = suspicion_timeout(1.0, 31, 1.0)
    pings: list[tuple[float, Ping]] = []
    for _ in range(100):
        d = core.next_deadline()
        for m in msgs(core.handle_timeout(d), Ping):
            assert isinstance(m, Ping)
            pings.append((d, m))
        if pings and pings[-1][1].target == "n17":
            break
    t, ping = pings[-1]
    assert ping.target == "n17"
    assert t <= lo / 2 + 1.0
    # It answers, but we still hold it suspect: ask again, buddy suspect first.
    core.handle_datagram(t + 0.01, addr(17), [Ack(ping.seq, "n17")])
    out = run_until(core, t + 1.0)
    probe = next(d for d in sends(out) if any(isinstance(m, Ping) for m in d.messages))
    assert probe.to == addr(17)
    assert isinstance(probe.messages[0], Suspect)


# --- precedence ----------------------------------------------------------------------------


def test_stale_alive_does_not_resurrect_dead_member() -> None:
    core = make()
    with_peers(core, 2)
    core.handle_datagram(1.0, addr(3), [Dead("n2", 100, 3, "n3")])
    assert status(core, "n2") == MemberStatus.DEAD
    out = core.handle_datagram(2.0, addr(3), [alive(2, inc=3), alive(2, inc=2)])
    assert status(core, "n2") == MemberStatus.DEAD
    assert not events(out)
    out = core.handle_datagram(2.0, addr(2), [alive(2, inc=4)])
    assert status(core, "n2") == MemberStatus.ALIVE
    assert events(out, MemberEventKind.JOINED)


def test_new_generation_beats_dead_old_life() -> None:
    core = make()
    with_peers(core, 2)
    core.handle_datagram(1.0, addr(3), [Dead("n2", 100, 50, "n3")])
    core.handle_datagram(2.0, addr(2), [alive(2, inc=0, gen=200)])
    m = core.member("n2")
    assert m is not None
    assert m.status == MemberStatus.ALIVE
    assert m.generation == 200
    # ... and facts about the old life no longer matter.
    core.handle_datagram(2.0, addr(3), [Dead("n2", 100, 99, "n3")])
    assert status(core, "n2") == MemberStatus.ALIVE


def test_suspect_then_refuting_alive_emits_alive() -> None:
    core = make()
    with_peers(core, 5)
    out = core.handle_datagram(1.0, addr(3), [Suspect("n2", 100, 0, "n3")])
    assert events(out, MemberEventKind.SUSPECT)
    out = core.handle_datagram(1.1, addr(2), [alive(2, inc=1)])
    assert events(out, MemberEventKind.ALIVE)
    assert status(core, "n2") == MemberStatus.ALIVE


def test_left_beats_dead_at_same_incarnation() -> None:
    core = make()
    with_peers(core, 2)
    core.handle_datagram(1.0, addr(2), [Leave("n2", 100, 1)])
    assert status(core, "n2") == MemberStatus.LEFT
    core.handle_datagram(1.0, addr(3), [Dead("n2", 100, 1, "n3")])
    assert status(core, "n2") == MemberStatus.LEFT


def test_unknown_member_accusations_are_ignored() -> None:
    core = make()
    core.start(0.0)
    core.handle_datagram(1.0, addr(3), [Suspect("zz", 1, 0, "n3"), Dead("zz", 1, 0, "n3")])
    assert core.member("zz") is None


_FACT = st.tuples(
    st.sampled_from(["alive", "suspect", "dead", "leave"]),
    st.integers(1, 3),  # generation
    st.integers(0, 4),  # incarnation
)


@given(st.lists(_FACT, max_size=25), st.randoms(use_true_random=False))
def test_precedence_final_state_is_the_greatest_fact(
    facts: list[tuple[str, int, int]], rnd: random.Random
) -> None:
    """Whatever the order, a member ends at the greatest (gen, inc, rank) key."""
    ranks = {"alive": 0, "suspect": 1, "dead": 2, "leave": 3}
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    for order in (facts, shuffled):
        core = make()
        core.start(0.0)
        core.handle_datagram(0.0, addr(2), [Alive("n2", 1, 0, addr(2))])
        for kind, gen, inc in order:
            msg: Message
            if kind == "alive":
                msg = Alive("n2", gen, inc, addr(2))
            elif kind == "suspect":
                msg = Suspect("n2", gen, inc, "n3")
            elif kind == "dead":
                msg = Dead("n2", gen, inc, "n3")
            else:
                msg = Leave("n2", gen, inc)
            core.handle_datagram(1.0, addr(3), [msg])
        m = core.member("n2")
        assert m is not None
        expected = max([(1, 0, 0)] + [(g, i, ranks[k]) for k, g, i in facts])
        assert (m.generation, m.incarnation, m.status) == expected


@given(st.lists(_FACT, max_size=25))
def test_stale_alive_never_resurrects(facts: list[tuple[str, int, int]]) -> None:
    """Online after a death only if some alive/suspect key exceeds every death key."""
    core = make()
    core.start(0.0)
    core.handle_datagram(0.0, addr(2), [Alive("n2", 1, 0, addr(2))])
    dead_keys: list[tuple[int, int, int]] = []
    live_keys: list[tuple[int, int, int]] = [(1, 0, 0)]
    for kind, gen, inc in facts:
        if kind in ("dead", "leave"):
            core.handle_datagram(1.0, addr(3), [Dead("n2", gen, inc, "n3")])
            dead_keys.append((gen, inc, 2))
        else:
            core.handle_datagram(1.0, addr(3), [Alive("n2", gen, inc, addr(2))])
            live_keys.append((gen, inc, 0))
        m = core.member("n2")
        assert m is not None
        if dead_keys and max(dead_keys) > max(live_keys):
            assert m.status == MemberStatus.DEAD


# --- suspicion -----------------------------------------------------------------------------


def test_suspicion_expires_into_dead_at_minimum_timeout_in_small_cluster() -> None:
    core = make()
    with_peers(core, 2)  # 3 live: fewer than k + 2, so k = 0
    core.handle_datagram(1.0, addr(3), [Suspect("n2", 100, 0, "n3")])
    lo = suspicion_timeout(1.0, 3, 1.0)
    out = run_until(core, 1.0 + lo - 0.01)
    assert not events(out, MemberEventKind.DEAD)
    out = run_until(core, 1.0 + lo + 0.01)
    assert [e.member.name for e in events(out, MemberEventKind.DEAD)] == ["n2"]
    assert core.stats().deaths_declared == 1


def test_confirmations_shrink_suspicion_timeout() -> None:
    core = make(reprobe_fanout=0)
    with_peers(core, 20)
    core.handle_datagram(1.0, addr(3), [Suspect("n2", 100, 0, "n3")])
    first = core.next_deadline()
    core.handle_datagram(1.0, addr(4), [Suspect("n2", 100, 0, "n4")])
    core.handle_datagram(1.0, addr(5), [Suspect("n2", 100, 0, "n5")])
    core.handle_datagram(1.0, addr(6), [Suspect("n2", 100, 0, "n6")])
    lo = suspicion_timeout(1.0, 21, 1.0)
    out = run_until(core, 1.0 + lo + 0.01)
    assert [e.member.name for e in events(out, MemberEventKind.DEAD)] == ["n2"]
    assert first < 1.0 + lo  # the probe tick comes first; the point is the death time


def test_buddy_system_tells_the_suspect_first() -> None:
    core = make()
    core.start(0.0)
    core.handle_datagram(0.0, addr(2), [alive(2)])
    core.handle_datagram(0.1, addr(3), [Suspect("n2", 100, 0, "n3")])
    out = run_until(core, 1.0)
    probe = next(s for s in sends(out) if any(isinstance(m, Ping) for m in s.messages))
    assert probe.to == addr(2)
    assert isinstance(probe.messages[0], Suspect)
    assert isinstance(probe.messages[1], Ping)


def test_fresh_suspect_is_reprobed_next() -> None:
    core = make(reprobe_fanout=1000)
    with_peers(core, 30)
    core.handle_datagram(0.0, addr(3), [Suspect("n17", 100, 0, "n3")])
    out = run_until(core, 1.0)
    ping = msgs(out, Ping)[0]
    assert isinstance(ping, Ping)
    assert ping.target == "n17"


# --- dissemination -------------------------------------------------------------------------


def test_fresh_fact_is_relayed_immediately_and_piggybacked() -> None:
    core = make()
    with_peers(core, 5, now=0.0)
    run_until(core, 10.0)
    drain(core, 10.0)
    core.handle_datagram(10.0, addr(3), [alive(9)])
    assert core.next_deadline() <= 10.0 + 0.02
    out = core.handle_timeout(10.02)
    assert len([m for m in msgs(out, Alive) if isinstance(m, Alive) and m.name == "n9"]) == 3


def test_gossip_tick_sleeps_when_nothing_is_queued() -> None:
    core = make()
    with_peers(core, 3)
    drain(core, 0.0)
    assert core.pending_broadcasts() == 0
    # Only the probe, push-pull, reconnect and reap timers remain.
    assert core.next_deadline() >= 0.0


def test_retransmit_limit_bounds_sends() -> None:
    core = make()
    with_peers(core, 5)
    drain(core, 0.0)
    core.handle_datagram(10.0, addr(3), [alive(9)])
    sent = 0
    now = 10.0
    for _ in range(100):
        out = core.handle_datagram(now, addr(3), [Ping(1, "n1", "n3")])
        sent += sum(1 for m in msgs(out, Alive) if isinstance(m, Alive) and m.name == "n9")
        now += 0.01
    # 7 live members: 4·ceil(log10 8) = 4 transmits in total (some by gossip).
    assert 1 <= sent <= 4


def test_datagrams_respect_payload_budget() -> None:
    core = make(udp_payload=300, datagram_overhead=0)
    core.start(0.0)
    core.handle_datagram(0.0, addr(2), [alive(i, meta=b"x" * 40) for i in range(2, 60)])
    out = core.handle_datagram(0.1, addr(2), [Ping(1, "n1", "n2")])
    for d in sends(out):
        assert sum(estimate_size(m) for m in d.messages) <= 300


def test_metadata_is_bounded() -> None:
    with pytest.raises(ConfigError):
        make().update_meta(0.0, b"x" * 600)
    with pytest.raises(ConfigError):
        SwimCore(
            name="x",
            addr=A,
            generation=1,
            rng=random.Random(0),
            size_of=estimate_size,
            meta=b"y" * 513,
        )
    core = make()
    core.start(0.0)
    core.handle_datagram(0.0, addr(2), [alive(2, meta=b"z" * 513)])
    assert core.member("n2") is None


def test_update_meta_bumps_incarnation_and_emits_updated() -> None:
    core = make()
    with_peers(core, 2)
    out = core.update_meta(1.0, b"role=db")
    assert core.incarnation == 1
    assert events(out, MemberEventKind.UPDATED)
    peer = make("n2", 2)
    peer.start(0.0)
    peer.handle_datagram(0.0, addr(1), [Alive("n1", 100, 0, addr(1))])
    out = peer.handle_datagram(1.0, addr(1), [Alive("n1", 100, 1, addr(1), b"role=db")])
    assert events(out, MemberEventKind.UPDATED)


# --- leave and reap ------------------------------------------------------------------------


def test_leave_broadcasts_and_stops_probing() -> None:
    core = make()
    with_peers(core, 3)
    out = core.leave(1.0)
    assert events(out, MemberEventKind.LEFT)
    out = core.handle_timeout(core.next_deadline())
    assert Leave("n1", 100, 1) in msgs(out, Leave)
    run_until(core, 30.0)
    assert core.stats().probes <= 2


def test_dead_members_are_reaped_after_reap_after() -> None:
    core = make(reap_after=100.0)
    with_peers(core, 2)
    core.handle_datagram(1.0, addr(3), [Dead("n2", 100, 0, "n3")])
    out = run_until(core, 80.0)
    assert not events(out, MemberEventKind.REAPED)
    out = run_until(core, 200.0)
    assert "n2" in [e.member.name for e in events(out, MemberEventKind.REAPED)]
    assert core.member("n2") is None


# --- push-pull -----------------------------------------------------------------------------


def pushpull(a: SwimCore, b: SwimCore, now: float) -> tuple[int, int]:
    """Run one anti-entropy exchange from *a* to *b*; return (bytes a sent, rounds)."""
    req = PushPullRequest("beethoven", a.name, False, a.root())
    reply, _ = b.handle_stream(now, a.addr, req)
    a._streams[999] = (2, b.name)  # as if a had opened it
    out = a.handle_stream_reply(now, 999, reply)
    rounds = 1
    for e in out:
        if isinstance(e, StreamRequest):
            rounds += 1
            reply2, _ = b.handle_stream(now, a.addr, e.message)
            a.handle_stream_reply(now, e.token, reply2)
    return estimate_size(req), rounds


def test_pushpull_equal_roots_costs_one_small_round() -> None:
    a, b = make("n1", 1), make("n2", 2)
    for c in (a, b):
        c.start(0.0)
        c.handle_datagram(0.0, addr(9), [alive(i) for i in range(1, 40)])
    assert a.root() == b.root()
    req = PushPullRequest("beethoven", "n1", False, a.root())
    reply, _ = b.handle_stream(1.0, a.addr, req)
    assert isinstance(reply, PushPullReply)
    assert not reply.digest
    assert not reply.members
    assert estimate_size(reply) < 60


def test_pushpull_exchanges_only_differences() -> None:
    a, b = make("n1", 1), make("n2", 2)
    for c in (a, b):
        c.start(0.0)
        c.handle_datagram(0.0, addr(9), [alive(i) for i in range(1, 40)])
    a.handle_datagram(1.0, addr(9), [alive(50)])  # only a knows n50
    b.handle_datagram(1.0, addr(9), [Dead("n7", 100, 0, "n9")])  # only b saw n7 die
    _, rounds = pushpull(a, b, 2.0)
    assert rounds == 2
    assert status(b, "n50") == MemberStatus.ALIVE
    # A remote death becomes a local suspicion (refutable), not a death.
    assert status(a, "n7") == MemberStatus.SUSPECT


def test_join_fetches_full_state_and_seed_announces_joiner() -> None:
    seed = make("n2", 2)
    seed.start(0.0)
    seed.handle_datagram(0.0, addr(9), [alive(i) for i in range(3, 10)])
    joiner = make("n1", 1)
    joiner.start(0.0)
    out = joiner.join(1.0, [addr(2)])
    req = next(e for e in out if isinstance(e, StreamRequest))
    assert isinstance(req.message, PushPullRequest)
    assert req.message.join
    reply, seed_out = seed.handle_stream(1.0, addr(1), req.message)
    assert events(seed_out, MemberEventKind.JOINED)
    out = joiner.handle_stream_reply(1.0, req.token, reply)
    assert len(events(out, MemberEventKind.JOINED)) == 8
    assert joiner.stats().joins_ok == 1
    # The seed relays the joiner's alive right away.
    out = seed.handle_timeout(seed.next_deadline())
    assert any(isinstance(m, Alive) and m.name == "n1" for m in msgs(out, Alive))


def test_pushpull_other_cluster_is_refused() -> None:
    b = make("n2", 2)
    b.start(0.0)
    reply, _ = b.handle_stream(0.0, addr(1), PushPullRequest("other", "n1", True, b""))
    assert reply is not None
    assert not isinstance(reply, PushPullReply)


def test_pushpull_state_saying_self_dead_is_refuted() -> None:
    b = make("n2", 2)
    b.start(0.0)
    st_ = MemberState("n2", addr(2), 100, 0, MemberStatus.DEAD)
    b.handle_stream(0.0, addr(1), PushPullRequest("beethoven", "n1", False, b"", (), b"", (st_,)))
    assert b.incarnation == 1


def test_params_presets_and_validation() -> None:
    assert SwimParams.preset("lan") == SwimParams()
    assert SwimParams.preset("lan").probe_interval == 0.8
    assert SwimParams.preset("memberlist").probe_interval == 1.0
    assert SwimParams.preset("memberlist").suspicion_mult == 4.0
    assert SwimParams.preset("wan").probe_interval == 5.0
    assert SwimParams.preset("local").probe_interval == 0.5
    with pytest.raises(ConfigError):
        SwimParams.preset("nope")
    with pytest.raises(ConfigError):
        SwimParams(probe_timeout=2.0)
    with pytest.raises(ConfigError):
        SwimParams(gossip_nodes=0)
