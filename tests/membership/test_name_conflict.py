"""A node name belongs to one live node (specs/membership.md §Name ownership).

Regression for issue #10 §3: a second process started with a live member's name at
another address used to take the name over (its newer generation won everywhere),
and its leave then made every peer list the real node as offline. The core is
driven synchronously; a MemoryNetwork node-level test is at the end.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from beethoven.address import Address
from beethoven.config import Config
from beethoven.errors import NameConflictError
from beethoven.membership.api import Effect, MemberEvent, SendDatagram, StreamRequest
from beethoven.membership.params import SwimParams
from beethoven.membership.swim import SwimCore
from beethoven.node import open_node
from beethoven.roles import Role
from beethoven.sim import estimate_size
from beethoven.testing import PORT, _virtual_wall_clock, idle_role, open_cluster
from beethoven.transport.memory import MemoryNetwork
from beethoven.wire.messages import (
    Alive,
    Dead,
    Leave,
    MemberState,
    MemberStatus,
    Message,
    Ping,
    PushPullReply,
    PushPullRequest,
    Suspect,
)

pytestmark = pytest.mark.timeout(60)

OLD_GEN = 100
NEW_GEN = 200


def addr(i: int) -> Address:
    return Address(f"10.0.0.{i}", 7946)


def make(name: str, i: int, gen: int = OLD_GEN) -> SwimCore:
    return SwimCore(
        name=name,
        addr=addr(i),
        generation=gen,
        rng=random.Random(7),
        size_of=estimate_size,
        params=SwimParams.lan(),
    )


def cluster() -> SwimCore:
    """Node n2 (the seed) knowing n1 alive at 10.0.0.1 and n3 at 10.0.0.3."""
    seed = make("n2", 2)
    seed.start(0.0)
    seed.handle_datagram(
        0.0, addr(1), [Alive("n1", OLD_GEN, 0, addr(1)), Alive("n3", OLD_GEN, 0, addr(3))]
    )
    return seed


def join_request(core: SwimCore, now: float = 1.0) -> tuple[int, PushPullRequest]:
    """Start *core* and return the token and request of its join to the seed."""
    core.start(now)
    (req,) = [e for e in core.join(now, [addr(2)]) if isinstance(e, StreamRequest)]
    assert isinstance(req.message, PushPullRequest)
    return req.token, req.message


def sent(effects: Sequence[Effect]) -> list[Message]:
    return [m for e in effects if isinstance(e, SendDatagram) for m in e.messages]


def gossip_of(core: SwimCore, now: float) -> list[Message]:
    """Every fact *core* still has queued (they ride on the acks of these pings)."""
    out: list[Message] = []
    for _ in range(100):
        if not core.pending_broadcasts():
            break
        out += sent(core.handle_datagram(now, addr(3), [Ping(0, core.name, "n3")]))
    return out


def holder(core: SwimCore, name: str = "n1") -> tuple[Address, int, int]:
    m = core.member(name)
    assert m is not None
    return m.addr, m.generation, m.status


def test_join_with_a_live_name_at_another_address_is_refused_and_not_relayed() -> None:
    seed = cluster()
    gossip_of(seed, 0.5)
    impostor = make("n1", 9, gen=NEW_GEN)
    _, req = join_request(impostor)
    reply, effects = seed.handle_stream(1.0, addr(9), req)
    assert isinstance(reply, PushPullReply)
    assert holder(seed) == (addr(1), OLD_GEN, MemberStatus.ALIVE)
    assert not [e for e in effects if isinstance(e, MemberEvent)]
    relayed = [m for m in gossip_of(seed, 1.0) if getattr(m, "name", None) == "n1"]
    assert relayed == []
    assert seed.stats().name_conflicts == 1


def test_impostor_withdraws_naming_the_holders_address() -> None:
    seed = cluster()
    impostor = make("n1", 9, gen=NEW_GEN)
    token, req = join_request(impostor)
    reply, _ = seed.handle_stream(1.0, addr(9), req)
    effects = impostor.handle_stream_reply(1.1, token, reply)
    conflict = impostor.name_conflict
    assert conflict is not None
    assert conflict.addr == addr(1)
    assert conflict.generation == OLD_GEN
    # It merged nothing, gossips nothing about the name, and its leave says nothing.
    assert [m.name for m in impostor.members()] == ["n1"]
    assert not sent(effects)
    assert impostor.pending_broadcasts() == 0
    assert not sent(impostor.leave(2.0))
    assert impostor.next_deadline() > 1e9 or not sent(impostor.handle_timeout(10.0))
    stats = impostor.stats()
    assert (stats.joins_ok, stats.joins_failed, stats.name_conflicts) == (0, 1, 1)


def test_impostor_claims_about_the_name_do_not_displace_the_live_member() -> None:
    seed = cluster()
    impostor = make("n1", 9, gen=NEW_GEN)
    _, req = join_request(impostor)
    seed.handle_stream(1.0, addr(9), req)
    gossip_of(seed, 1.0)
    # Its alive (gossip), then its suspect, dead and leave claims (that life's facts).
    claims: list[Message] = [
        Alive("n1", NEW_GEN, 3, addr(9)),
        Suspect("n1", NEW_GEN, 3, "n1"),
        Dead("n1", NEW_GEN, 4, "n1"),
        Leave("n1", NEW_GEN, 5),
    ]
    effects = seed.handle_datagram(2.0, addr(9), claims)
    assert not [e for e in effects if isinstance(e, MemberEvent)]
    assert holder(seed) == (addr(1), OLD_GEN, MemberStatus.ALIVE)
    # A push-pull state of that life (e.g. a peer that saw it leave) is refused too.
    states = (MemberState("n1", addr(9), NEW_GEN, 6, MemberStatus.LEFT),)
    pushed = PushPullRequest("beethoven", "n3", False, b"", (), b"", states)
    seed.handle_stream(3.0, addr(3), pushed)
    assert holder(seed) == (addr(1), OLD_GEN, MemberStatus.ALIVE)
    assert [m for m in gossip_of(seed, 3.0) if getattr(m, "name", None) == "n1"] == []


def test_holder_refuses_a_join_claiming_its_own_name() -> None:
    real = make("n1", 1)
    real.start(0.0)
    impostor = make("n1", 9, gen=NEW_GEN)
    token, req = join_request(impostor)
    reply, _ = real.handle_stream(1.0, addr(9), req)
    # Not an accusation: no refutation, no new incarnation, nothing queued.
    assert real.incarnation == 0
    assert real.stats().suspicions_refuted == 0
    assert real.pending_broadcasts() == 0
    impostor.handle_stream_reply(1.1, token, reply)
    conflict = impostor.name_conflict
    assert conflict is not None
    assert conflict.addr == addr(1)


def test_holder_joining_through_a_later_namesake_keeps_its_name() -> None:
    # A holder's re-sweep may find a namesake's beacon and join through it: the
    # earlier life wins, so the holder must not withdraw (nor accept the other life).
    real = make("n1", 1)
    token, _ = join_request(real)
    namesake = PushPullReply(
        "beethoven", "n1", b"", (), (MemberState("n1", addr(9), NEW_GEN, 0, MemberStatus.ALIVE),)
    )
    real.handle_stream_reply(1.1, token, namesake)
    assert real.name_conflict is None
    assert holder(real) == (addr(1), OLD_GEN, MemberStatus.ALIVE)
    assert [m.name for m in real.members()] == ["n1"]
    assert (real.stats().joins_ok, real.stats().joins_failed) == (0, 1)
    # Its claim, relayed by anyone, is refused like any namesake's.
    real.handle_datagram(2.0, addr(3), [Alive("n1", NEW_GEN, 1, addr(9))])
    assert holder(real) == (addr(1), OLD_GEN, MemberStatus.ALIVE)
    assert real.incarnation == 0
    assert real.stats().name_conflicts == 1


def test_same_address_restart_is_a_new_life_not_a_conflict() -> None:
    seed = cluster()
    restarted = make("n1", 1, gen=NEW_GEN)
    token, req = join_request(restarted)
    reply, _ = seed.handle_stream(1.0, addr(1), req)
    assert holder(seed) == (addr(1), NEW_GEN, MemberStatus.ALIVE)
    restarted.handle_stream_reply(1.1, token, reply)
    assert restarted.name_conflict is None
    assert {m.name for m in restarted.members()} == {"n1", "n2", "n3"}
    # A reply that still shows the old life at the same address is no conflict either.
    again = make("n1", 1, gen=NEW_GEN + 1)
    token, _ = join_request(again)
    stale = PushPullReply(
        "beethoven", "n2", b"", (), (MemberState("n1", addr(1), OLD_GEN, 0, MemberStatus.ALIVE),)
    )
    again.handle_stream_reply(1.2, token, stale)
    assert again.name_conflict is None
    assert again.stats().joins_ok == 1


@pytest.mark.parametrize("gone", [MemberStatus.DEAD, MemberStatus.LEFT])
def test_restart_at_a_new_address_after_the_old_life_is_gone_is_accepted(gone: int) -> None:
    seed = cluster()
    fact: Message = Dead("n1", OLD_GEN, 0, "n3") if gone == MemberStatus.DEAD else Leave(
        "n1", OLD_GEN, 1
    )
    seed.handle_datagram(0.5, addr(3), [fact])
    assert holder(seed)[2] == gone
    moved = make("n1", 9, gen=NEW_GEN)
    token, req = join_request(moved)
    reply, _ = seed.handle_stream(1.0, addr(9), req)
    assert holder(seed) == (addr(9), NEW_GEN, MemberStatus.ALIVE)
    moved.handle_stream_reply(1.1, token, reply)
    assert moved.name_conflict is None
    assert moved.stats().joins_ok == 1


def test_refused_life_is_accepted_once_the_holder_is_dead() -> None:
    seed = cluster()
    seed.handle_datagram(1.0, addr(9), [Alive("n1", NEW_GEN, 0, addr(9))])
    assert holder(seed) == (addr(1), OLD_GEN, MemberStatus.ALIVE)
    seed.handle_datagram(2.0, addr(3), [Dead("n1", OLD_GEN, 0, "n3")])
    seed.handle_datagram(3.0, addr(9), [Alive("n1", NEW_GEN, 1, addr(9))])
    assert holder(seed) == (addr(9), NEW_GEN, MemberStatus.ALIVE)
    # That life is now the holder: its own facts apply again.
    seed.handle_datagram(4.0, addr(9), [Leave("n1", NEW_GEN, 2)])
    assert holder(seed) == (addr(9), NEW_GEN, MemberStatus.LEFT)


_CLAIM = st.tuples(
    st.sampled_from(["holder-alive", "holder-suspect", "alive", "suspect", "dead", "leave"]),
    st.integers(0, 5),  # incarnation
)


@given(st.lists(_CLAIM, max_size=30))
def test_no_interleaving_of_namesake_claims_displaces_the_live_holder(
    claims: list[tuple[str, int]],
) -> None:
    """Once a namesake's alive was refused, nothing it says displaces the holder.

    The holder's own life goes on meanwhile (refutations, suspicions by others).
    """
    seed = cluster()
    seed.handle_datagram(0.5, addr(9), [Alive("n1", NEW_GEN, 0, addr(9))])
    for kind, inc in claims:
        msg: Message
        if kind == "holder-alive":
            msg = Alive("n1", OLD_GEN, inc, addr(1))
        elif kind == "holder-suspect":
            msg = Suspect("n1", OLD_GEN, inc, "n3")
        elif kind == "alive":
            msg = Alive("n1", NEW_GEN, inc, addr(9))
        elif kind == "suspect":
            msg = Suspect("n1", NEW_GEN, inc, "n1")
        elif kind == "dead":
            msg = Dead("n1", NEW_GEN, inc, "n1")
        else:
            msg = Leave("n1", NEW_GEN, inc)
        seed.handle_datagram(1.0, addr(9), [msg])
        m = seed.member("n1")
        assert m is not None
        assert (m.addr, m.generation) == (addr(1), OLD_GEN)
        assert m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)


# --- node level: open_node on the memory network, mock clock ---------------------------


async def run_until_it_fails(config: Config, network: MemoryNetwork) -> None:
    """Run a node as an application would: wait until ready, then serve forever."""
    async with open_node(config, network=network, seed=99, clock=_virtual_wall_clock) as node:
        await node.wait_ready()
        await trio.sleep_forever()


async def test_second_node_with_a_live_name_fails_and_the_holder_stays_online(
    autojump_clock: trio.testing.MockClock,
) -> None:
    role = Role("solo", 1, idle_role)
    with trio.fail_after(600):
        async with open_cluster(2, roles=[role], preset="local") as cluster:
            await cluster.wait_ready()
            await cluster.wait_for(cluster.converged)
            n0, n1 = cluster.node("n0"), cluster.node("n1")
            await cluster.wait_for(lambda: len(n1.whois_hosting("solo")) == 1)
            (role_holder,) = n1.whois_hosting("solo")
            impostor_config = Config(
                name="n0",
                bind="10.0.0.9",
                port=PORT,
                roles=(role,),
                preset="local",
                cluster_net=("10.0.0.9/32",),
                seeds=(str(cluster.address("n1")),),
            )
            with pytest.raises(NameConflictError) as info:
                await run_until_it_fails(impostor_config, cluster.network)
            assert info.value.holder == str(cluster.address("n0"))
            assert str(cluster.address("n0")) in str(info.value)
            # Long after the impostor went away, n0 is still n0, online, everywhere.
            await trio.sleep(120)
            for node in (n0, n1):
                (rec,) = [m for m in node._runner.members() if m.name == "n0"]
                assert (rec.addr, rec.status) == (cluster.address("n0"), MemberStatus.ALIVE)
                assert node.get_active_cluster_nodes() == ["n0", "n1"]
                assert node.whois_hosting("solo") == [role_holder]


async def test_namesake_seeded_only_with_the_holder_is_refused_not_standalone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Discovery used to skip a beacon answering with our own name: seeded with the
    # holder alone, the namesake silently ran as a second, standalone "n0".
    with trio.fail_after(600):
        async with open_cluster(1, preset="local") as cluster:
            await cluster.wait_ready()
            config = Config(
                name="n0",
                bind="10.0.0.9",
                port=PORT,
                preset="local",
                cluster_net=("10.0.0.9/32",),
                seeds=(str(cluster.address("n0")),),
                sweeps=1,
            )
            with pytest.raises(NameConflictError) as info:
                await run_until_it_fails(config, cluster.network)
            assert info.value.holder == str(cluster.address("n0"))
            assert cluster.node("n0").get_active_cluster_nodes() == ["n0"]
