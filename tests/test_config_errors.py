"""Every key of `Config` refuses a wrongly shaped value with one `ConfigError` naming it.

A lone string for a list-valued key is what a user means by a one-item list
(``tags="gpu"``), so it is taken as one; anything else of the wrong shape is a
`ConfigError` naming the key — never an ``AttributeError``, a ``TypeError`` or a
message about one character of the string. The same holds through TOML and the
``BEETHOVEN_*`` environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from beethoven.config import Config, load_config
from beethoven.errors import ConfigError

#: List-valued keys with one good item each.
LIST_KEYS = {
    "tags": "gpu",
    "seeds": "127.0.0.2:33000",
    "cluster_net": "127.0.0.0/24",
    "keys": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==",
}


@pytest.mark.parametrize(("key", "item"), sorted(LIST_KEYS.items()))
def test_a_lone_string_is_a_one_item_list_not_a_list_of_characters(key: str, item: str) -> None:
    lone: dict[str, Any] = {key: item}
    listed: dict[str, Any] = {key: [item]}
    assert getattr(Config(**lone), key) == (item,)
    assert getattr(Config(**listed), key) == (item,)
    assert getattr(load_config(env={}, **lone), key) == (item,)


def test_a_set_of_tags_is_accepted_in_a_stable_order() -> None:
    assert Config(tags={"ssd", "gpu"}).tags == ("gpu", "ssd")


#: (kwargs, the ConfigError message they must raise).
BAD_KWARGS: list[tuple[dict[str, Any], str]] = [
    ({"tags": 5}, r"tags: expected a list of tags"),
    ({"tags": [""]}, r"tags: every tag must be a non-empty string"),
    ({"tags": ["gpu", 3]}, r"tags: every tag must be a non-empty string, got 3"),
    ({"tags": {"gpu": 1}}, r"tags: expected a list of tags"),
    ({"seeds": 5}, r"seeds: expected a list of seed addresses"),
    ({"seeds": [1]}, r"seeds: every seed address must be a non-empty string, got 1"),
    ({"seeds": "a.example:1"}, r"seeds: bad address 'a.example:1'"),
    ({"cluster_net": 5}, r"cluster_net: expected a list of networks"),
    ({"cluster_net": [1]}, r"cluster_net: every network must be a non-empty string, got 1"),
    ({"cluster_net": "127.0.0.0/33"}, r"cluster_net: '127.0.0.0/33' is not a CIDR network"),
    ({"cluster_net": []}, r"cluster_net: at least one network"),
    ({"keys": 5}, r"keys: expected a list"),
    ({"keys": [""]}, r"keys: every key must be non-empty"),
    ({"backoff": 0.1}, r"backoff: expected \[low, high\]"),
    ({"backoff": [0.1]}, r"backoff: expected \[low, high\]"),
    ({"backoff": ["a", "b"]}, r"backoff: expected a number"),
    ({"membership": "x"}, r"membership: expected a table"),
    ({"membership": ["probe_interval"]}, r"membership: expected a table"),
    ({"membership": {"probe_interval": "x"}}, r"membership.probe_interval"),
    ({"bind": 123}, r"bind: 123 is not an IP address"),
    ({"advertise": 5}, r"advertise: expected 'host\[:port\]' text"),
    ({"name": 5}, r"name: must be a non-empty string"),
    ({"store": 5}, r"store: expected a URL"),
    ({"roles": "x"}, r"roles: expected a list of roles"),
]


def _misses(cases: list[tuple[Any, str]], build: Any) -> list[str]:
    """The cases whose build does not raise the expected ConfigError (with what it did)."""
    misses = []
    for case, message in cases:
        try:
            build(case)
        except ConfigError as exc:
            if not re.search(message, str(exc)):
                misses.append(f"{case!r}: ConfigError {exc} (wanted /{message}/)")
        except Exception as exc:  # the failure this test pins
            misses.append(f"{case!r}: {type(exc).__name__}: {exc}")
        else:
            misses.append(f"{case!r}: accepted")
    return misses


def test_a_badly_shaped_value_is_one_config_error_not_attribute_or_type_error() -> None:
    """Just outside every key's shape (and the long-standing errors alongside)."""
    assert _misses(BAD_KWARGS, lambda kwargs: Config(**kwargs)) == []
    # load_config shapes the value first; its message may differ, but names the key
    by_key = [(kwargs, "^" + next(iter(kwargs)) + r"\b") for kwargs, _ in BAD_KWARGS]
    assert _misses(by_key, lambda kwargs: load_config(env={}, **kwargs)) == []


def test_toml_values_follow_the_same_shape_rules(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"

    def load(text: str) -> Config:
        path.write_text(text + "\n", encoding="utf-8")
        return load_config(path, env={})

    # just inside: a lone string is a one-item list, as with keyword arguments
    assert load('tags = "gpu"').tags == ("gpu",)
    assert load('seeds = "127.0.0.2:33000"').seeds == ("127.0.0.2:33000",)
    assert load('cluster_net = "127.0.0.0/24"').cluster_net == ("127.0.0.0/24",)
    assert load('cluster_net = ["127.0.0.0/24", "127.0.1.0/24"]').cluster_net == (
        "127.0.0.0/24",
        "127.0.1.0/24",
    )
    # just outside
    bad = [
        ("tags = 5", r"tags: expected a list"),
        ("tags = [1]", r"tags: every tag must be a non-empty string, got 1"),
        ("cluster_net = [1]", r"cluster_net: every network must be a non-empty string"),
        ("seeds = [1]", r"seeds: every seed address must be a non-empty string"),
        ('membership = "x"', r"membership: expected a table"),
        ("backoff = 0.1", r"backoff: expected a list"),
        ("bind = 1", r"bind: 1 is not an IP address"),
        ("advertise = 1", r"advertise: expected 'host\[:port\]' text"),
    ]
    assert _misses(bad, load) == []


def test_env_values_follow_the_same_shape_rules() -> None:
    # just inside: comma-separated lists, a lone item is one
    config = load_config(
        env={
            "BEETHOVEN_TAGS": "gpu",
            "BEETHOVEN_CLUSTER_NET": "127.0.0.0/24, 127.0.1.0/24",
            "BEETHOVEN_SEEDS": "127.0.0.2:33000",
        }
    )
    assert config.tags == ("gpu",)
    assert config.cluster_net == ("127.0.0.0/24", "127.0.1.0/24")
    assert config.seeds == ("127.0.0.2:33000",)
    # just outside
    bad = [
        ({"BEETHOVEN_MEMBERSHIP": "x"}, r"membership: expected 'param=value"),
        ({"BEETHOVEN_MEMBERSHIP": "probe_interval=x"}, r"membership: every value must be a number"),
        ({"BEETHOVEN_BACKOFF": "0.1"}, r"backoff: expected \[low, high\]"),
        ({"BEETHOVEN_CLUSTER_NET": "127.0.0.0/33"}, r"cluster_net: '127.0.0.0/33'"),
        ({"BEETHOVEN_CLUSTER_NET": ","}, r"cluster_net: at least one network"),
        ({"BEETHOVEN_SEEDS": "nowhere:1"}, r"seeds: bad address"),
        ({"BEETHOVEN_BIND": "x"}, r"bind: 'x' is not an IP address"),
    ]
    assert _misses(bad, lambda env: load_config(env=env)) == []
    assert load_config(env={"BEETHOVEN_TAGS": ","}).tags == ()
