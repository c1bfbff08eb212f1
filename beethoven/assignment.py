"""Role assignment as a pure function of the converged cluster view.

Every node runs `plan_assignment` on its own view (online members, eligibility,
current holders read from the replicated store, published scores) and acts only
on its own part of the result. Because the function is deterministic, all nodes
agree on the plan as soon as their views agree.

Two passes (``specs/roles.md`` §1.1), so the plan does not depend on the order of
the roles given:

1. keep, for every role: the current holders that are still candidates (online
   and eligible) keep it — sticky. When a role is over-assigned (after a partition
   heals, both sides filled it), the ``count`` holders with the highest plain
   rendezvous rank (no score weight) keep it and the rest are released. Each kept
   holding counts towards its node's ``placed`` total.
2. fill, roles in name order: each missing holder is the candidate not yet chosen
   with the fewest roles placed in this plan so far — spread first — then the
   highest rendezvous rank weighted by its published score — so among equally
   placed nodes the least busy is preferred — then the name. A node without a
   published score counts as the median of the known scores.

The rank is weighted rendezvous hashing (highest random weight): each (role, node)
pair gets a pseudo-random number from a stable hash, scaled by a weight
``1 / (1 + score)`` that falls as the node's score rises; removing a node moves
only its own holdings.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Collection, Mapping

import attrs

__all__ = ["RoleDemand", "plan_assignment", "rendezvous_rank"]


@attrs.frozen
class RoleDemand:
    """What a role needs: *count* holders among the *eligible* nodes (``None`` = all)."""

    name: str
    count: int
    eligible: frozenset[str] | None = None


@functools.lru_cache(maxsize=1 << 16)
def _unit_hash(role: str, node: str) -> float:
    digest = hashlib.blake2b(f"{role}\x00{node}".encode(), digest_size=8).digest()
    # Map to the open interval (0, 1): never 0 (log) and never 1.
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


def rendezvous_rank(role: str, node: str, score: float | None = None) -> float:
    """The rank of *node* for *role*; higher ranks are chosen first.

    With no score every node has weight 1 (plain rendezvous hashing). A score
    ``s >= 0`` gives weight ``1 / (1 + s)``; the rank is the weighted-HRW form
    ``-weight / ln(h)``, so a busier node needs a luckier hash to be picked.
    """
    weight = 1.0 if score is None else 1.0 / (1.0 + max(0.0, score))
    return -weight / math.log(_unit_hash(role, node))


def _fill_key(role: str, node: str, score: float | None, placed: int) -> tuple[int, float, str]:
    # Fewest roles in this plan first (spread), then the load-weighted rank, then name.
    return (-placed, rendezvous_rank(role, node, score), node)


def plan_assignment(
    demands: Collection[RoleDemand],
    online: Collection[str],
    holders: Mapping[str, Collection[str]],
    scores: Mapping[str, float] | None = None,
) -> dict[str, frozenset[str]]:
    """Decide who should hold every role.

    Two passes, so the result does not depend on the order of *demands*: first every
    role keeps its current holders (sticky; the highest-ranked when over-assigned),
    then, in role-name order, each missing holder is the candidate with the fewest
    roles in this plan so far (so roles spread), ties broken by the rank weighted by
    the node's score (so the least busy are preferred), then by name.

    Args:
        demands: the roles and how many holders each wants.
        online: names of the online members.
        holders: role name → nodes that currently hold it (as published).
        scores: node → published allocator score, for weighting new picks. A node
            without a score counts as the median of the known ones.

    Returns:
        Role name → the set of nodes that should hold it. Its size is
        ``min(count, number of candidates)``; no node appears twice for a role.
    """
    online_set = frozenset(online)
    known = sorted((scores or {}).values())
    typical = known[len(known) // 2] if known else None
    score_of = {n: (scores or {}).get(n, typical) for n in online_set}
    ordered = sorted(demands, key=lambda d: d.name)
    candidates_of: dict[str, frozenset[str]] = {}
    plan: dict[str, set[str]] = {}
    placed: dict[str, int] = dict.fromkeys(online_set, 0)
    for demand in ordered:
        candidates = online_set if demand.eligible is None else online_set & demand.eligible
        candidates_of[demand.name] = candidates
        want = min(max(demand.count, 0), len(candidates))
        # Rank sticky holders without any weight: a holder's load includes the role
        # itself, and must not make it lose the role to a rank shuffle.
        role = demand.name
        keep = sorted(
            (n for n in holders.get(role, ()) if n in candidates),
            key=lambda n: (rendezvous_rank(role, n), n),
            reverse=True,
        )[:want]
        plan[demand.name] = set(keep)
        for node in keep:
            placed[node] += 1
    for demand in ordered:
        chosen = plan[demand.name]
        candidates = candidates_of[demand.name]
        want = min(max(demand.count, 0), len(candidates))
        while len(chosen) < want:
            role = demand.name
            best = max(
                (n for n in candidates if n not in chosen),
                key=lambda n: _fill_key(role, n, score_of[n], placed[n]),
            )
            chosen.add(best)
            placed[best] += 1
    return {name: frozenset(nodes) for name, nodes in plan.items()}
