"""The pure clock-offset estimator: majority order statistic, freshness, warn once."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.clock_offset import ClockOffsets, majority_offset

offsets = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=40)


def test_no_sample_is_no_estimate() -> None:
    assert majority_offset([]) is None
    assert majority_offset([float("nan")]) is None


def test_one_peer_is_the_estimate() -> None:
    assert majority_offset([-5.0]) == 5.0  # the peer trails: this node is ahead
    assert majority_offset([20.0]) == -20.0


def test_one_wildly_wrong_peer_moves_nobody_elses_estimate() -> None:
    # a node of three whose peers are 5 s fast and 20 s slow is on time
    assert majority_offset([5.0, -20.0]) == 0.0
    # the fast node is ahead of both, by the amount a majority agrees on
    assert majority_offset([-5.0, -25.0]) == 5.0
    assert majority_offset([20.0, 25.0]) == -20.0
    assert majority_offset([0.1, 0.0, -0.1, 1e9]) == 0.0


@given(offsets, st.floats(0, 1e6, allow_nan=False))
def test_ahead_beyond_a_bound_iff_a_majority_of_peers_trail_beyond_it(
    samples: list[float], bound: float
) -> None:
    estimate = majority_offset(samples)
    trailing = sum(1 for o in samples if o < -bound)
    leading = sum(1 for o in samples if o > bound)
    if not samples:
        assert estimate is None
        return
    assert estimate is not None
    assert (estimate > bound) == (trailing > len(samples) / 2)
    assert (estimate < -bound) == (leading > len(samples) / 2)


@given(offsets)
def test_the_estimate_is_antisymmetric_and_within_the_samples(samples: list[float]) -> None:
    estimate = majority_offset(samples)
    mirrored = majority_offset([-o for o in samples])
    if estimate is None:
        assert mirrored is None
        return
    assert mirrored == -estimate
    assert min([0.0, *(-o for o in samples)]) <= estimate <= max([0.0, *(-o for o in samples)])


def test_only_the_latest_fresh_sample_of_each_online_peer_counts() -> None:
    est = ClockOffsets("me", bound=0.5, max_age=60)
    est.observe("a", -9.0, at=0)
    est.observe("a", -1.0, at=10)  # replaces the first
    est.observe("b", -1.0, at=10)
    assert est.offset(20) == 1.0
    assert est.offset(20, peers={"b"}) == 1.0
    assert est.offset(20, peers=set()) is None
    assert est.offset(71) is None  # both stale
    assert est.stats(71).peers == 0
    est.observe("c", float("inf"), at=71)
    assert est.stats(71).samples == 3


def test_lead_judges_a_timestamp_ahead_of_the_clock() -> None:
    est = ClockOffsets("me", bound=0.5, max_age=60)
    est.observe("a", 0.0, at=0)
    assert est.offset(1) == 0.0
    assert est.offset(1, lead=3.0) == 3.0


def test_over_the_bound_is_warned_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="beethoven.clock_offset")
    est = ClockOffsets("me", bound=0.5, max_age=60)
    est.observe("a", -0.5, at=0)
    assert est.evaluate(0) == 0.5  # just inside: exactly the bound is tolerated
    assert caplog.records == []
    for t in range(1, 5):
        est.observe("a", -0.6, at=t)  # just outside, several times
        est.evaluate(t)
    assert [r.getMessage() for r in caplog.records] == [
        "node me: this node's clock is 0.600 s ahead of its peers' (over the store's bound "
        "of 0.500 s): peers refuse its writes; fix the clock (NTP)"
    ]
    assert est.stats(4).skewed
    assert est.stats(4).warnings == 1
    est.observe("a", 0.0, at=5)
    est.evaluate(5)
    est.evaluate(6)
    assert len(caplog.records) == 2
    back = caplog.records[1].getMessage()
    assert "back within the store's bound of 0.500 s (now +0.000 s)" in back
    assert not est.stats(6).skewed


def test_bound_and_max_age_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ClockOffsets("me", bound=0, max_age=1)
