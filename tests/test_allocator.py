from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.allocator import Allocator, PublishedScore, choose_least_busy
from beethoven.errors import ConfigError


def test_score_follows_the_original_formula() -> None:
    alloc = Allocator()
    alloc.register("cpu", 1.0, "percent")
    alloc.register("ram", 1.0, "percent")
    alloc.register("roles", 0.1, "count")
    alloc.register("queue", 99.0, "pre_processed")
    alloc.set("cpu", 50.0)
    alloc.set("ram", 20.0)
    alloc.increment("roles")
    alloc.increment("roles")
    alloc.set("queue", 3.5)
    expected = math.exp(2.5) + math.exp(1.0) + 0.2 + 3.5
    assert alloc.score() == pytest.approx(expected)


def test_count_is_clamped_at_zero() -> None:
    alloc = Allocator()
    alloc.register("jobs", 2.0, "count")
    alloc.decrement("jobs", 5)
    assert alloc.value("jobs") == 0.0
    alloc.increment("jobs", 3)
    assert alloc.score() == 6.0


def test_reregistering_with_another_weight_or_type_is_an_error() -> None:
    alloc = Allocator()
    alloc.register("jobs", 1.0, "count")
    assert alloc.register("jobs", 1.0, "count").weight == 1.0  # same: fine
    with pytest.raises(ConfigError, match="already registered"):
        alloc.register("jobs", 2.0, "count")
    with pytest.raises(ConfigError, match="already registered"):
        alloc.register("jobs", 1.0, "percent")
    with pytest.raises(ConfigError, match="unknown type"):
        alloc.register("x", 1.0, "median")
    with pytest.raises(ConfigError, match="weight"):
        alloc.register("y", -1.0, "count")
    with pytest.raises(KeyError):
        alloc.set("nope", 1.0)
    alloc.register("p", 1.0, "percent")
    with pytest.raises(TypeError):
        alloc.increment("p")


def test_version_moves_only_on_change() -> None:
    alloc = Allocator()
    alloc.register("a")
    v = alloc.version
    alloc.set("a", 0.0)
    assert alloc.version == v
    alloc.set("a", 1.0)
    assert alloc.version == v + 1


def test_allocate_never_returns_an_offline_node() -> None:
    scores = {
        "dead": PublishedScore(0.0, 100.0),  # the best score, but offline (original fault 2)
        "b": PublishedScore(5.0, 100.0),
        "c": PublishedScore(3.0, 100.0),
    }
    assert choose_least_busy(scores, ["b", "c"], now=101.0, stale_after=30.0) == "c"
    assert choose_least_busy(scores, [], now=101.0, stale_after=30.0) is None


def test_stale_scores_rank_after_fresh_ones_and_ties_break_by_name() -> None:
    scores = {
        "a": PublishedScore(1.0, 0.0),  # stale
        "b": PublishedScore(4.0, 95.0),
        "c": PublishedScore(4.0, 96.0),
    }
    assert choose_least_busy(scores, ["a", "b", "c"], now=100.0, stale_after=30.0) == "b"
    assert choose_least_busy(scores, ["a", "z"], now=100.0, stale_after=30.0) == "a"


@given(
    st.dictionaries(st.text(min_size=1, max_size=3), st.floats(0, 1e6), min_size=1),
    st.data(),
)
def test_choice_is_the_minimum_of_online_fresh_scores(
    scores: dict[str, float], data: st.DataObject
) -> None:
    online = data.draw(st.sets(st.sampled_from(sorted(scores)), min_size=1))
    published = {name: PublishedScore(score, 0.0) for name, score in scores.items()}
    chosen = choose_least_busy(published, online, now=0.0, stale_after=1.0)
    assert chosen in online
    assert (scores[chosen], chosen) == min((scores[n], n) for n in online)
