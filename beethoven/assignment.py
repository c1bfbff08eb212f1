"""Role assignment as a pure function of the converged cluster view.

Every node runs `plan_assignment` on its own view (online members, eligibility,
current holders read from the replicated store, published scores) and acts only
on its own part of the result. Because the function is deterministic, all nodes
agree on the plan as soon as their views agree.

Rules, per role (see ``specs/roles.md``):

1. candidates = online members that are eligible for the role;
2. sticky: every current holder that is still a candidate keeps the role;
3. over-assignment (after a partition heals, two sides filled the same role):
   keep the ``count`` highest-ranked holders, release the rest;
4. under-assignment: fill from the remaining candidates in rank order.

The rank is weighted rendezvous hashing (highest random weight): each
(role, node) pair gets a pseudo-random number from a stable hash, scaled by a
weight that falls as the node's published score rises, so new holders tend to be
the least busy nodes while the choice stays spread and stable.
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

    With no score every node has weight 1 (plain rendezvous hashing). A known
    score ``s >= 0`` gives weight ``1 / (1 + s)``, the weighted-HRW form
    ``-weight / ln(h)``, so a busier node needs a luckier hash to be picked.
    """
    weight = 1.0 if score is None else 1.0 / (1.0 + max(0.0, score))
    return -weight / math.log(_unit_hash(role, node))


def plan_assignment(
    demands: Collection[RoleDemand],
    online: Collection[str],
    holders: Mapping[str, Collection[str]],
    scores: Mapping[str, float] | None = None,
) -> dict[str, frozenset[str]]:
    """Decide who should hold every role.

    Args:
        demands: the roles and how many holders each wants.
        online: names of the online members.
        holders: role name → nodes that currently hold it (as published).
        scores: node → published allocator score, for weighting new picks.

    Returns:
        Role name → the set of nodes that should hold it. Its size is
        ``min(count, number of candidates)``; no node appears twice for a role.
    """
    online_set = frozenset(online)
    scores = scores or {}
    plan: dict[str, frozenset[str]] = {}
    for demand in demands:
        candidates = online_set if demand.eligible is None else online_set & demand.eligible
        want = min(max(demand.count, 0), len(candidates))

        def rank(node: str, role: str = demand.name) -> tuple[float, str]:
            return (rendezvous_rank(role, node, scores.get(node)), node)

        # Rank sticky holders without the score weight: a holder's load includes the
        # role itself, and must not make it lose the role to a rank shuffle.
        def holder_rank(node: str, role: str = demand.name) -> tuple[float, str]:
            return (rendezvous_rank(role, node), node)

        keep = sorted(
            (n for n in holders.get(demand.name, ()) if n in candidates),
            key=holder_rank,
            reverse=True,
        )[:want]
        chosen = set(keep)
        if len(chosen) < want:
            fresh = sorted((n for n in candidates if n not in chosen), key=rank, reverse=True)
            chosen.update(fresh[: want - len(chosen)])
        plan[demand.name] = frozenset(chosen)
    return plan
