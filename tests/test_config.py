from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from beethoven.config import Config, load_config
from beethoven.errors import ConfigError


def test_defaults_are_valid_and_keep_the_original_names() -> None:
    config = Config()
    assert config.port == 33000
    assert config.cluster_net == ("127.0.0.0/29",)
    assert config.sweeps == 3
    assert config.connect_timeout == 0.25
    assert config.backoff == (0.15, 0.30)
    assert config.bind == "127.0.0.1"  # never all interfaces by default
    assert config.node_name.endswith(":33000")


def test_file_env_and_kwargs_layer_in_order(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'cluster = "prod"\nport = 4000\ncluster_net = ["10.1.0.0/24"]\n'
        "[membership]\nprobe_interval = 2\n",
        encoding="utf-8",
    )
    env = {"BEETHOVEN_PORT": "4001", "BEETHOVEN_SEEDS": "127.0.0.2:4001, 127.0.0.3:4001"}
    config = load_config(path, env=env, name="n1")
    assert config.cluster == "prod"
    assert config.port == 4001  # env beats the file
    assert config.seeds == ("127.0.0.2:4001", "127.0.0.3:4001")
    assert config.membership == {"probe_interval": 2.0}
    assert config.name == "n1"
    assert load_config(path, env=env, port=4002).port == 4002  # kwargs beat env


def test_beethoven_table_in_a_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('[beethoven]\ncluster = "x"\n', encoding="utf-8")
    assert load_config(path, env={}).cluster == "x"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"colour": "red"}, "unknown configuration key 'colour'"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"bind": "0.0.0.0.0"}, "bind"),
        ({"cluster_net": ["10.0.0.0/33"]}, "cluster_net"),
        ({"cluster_net": []}, "cluster_net"),
        ({"seeds": ["example.com:1"]}, "seeds"),
        ({"sweeps": 0}, "sweeps"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"backoff": [0.3, 0.1]}, "backoff"),
        ({"preset": "moon"}, "preset"),
        ({"membership": {"probe_interval": 0}}, "membership.probe_interval"),
        ({"store": "nowhere"}, "store"),
        ({"max_payload": 100}, "max_payload"),
        ({"cluster": ""}, "cluster"),
    ],
)
def test_bad_values_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env={}, **overrides)


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(env={"BEETHOVEN_PORT": "many"})
    with pytest.raises(ConfigError, match="unknown configuration key 'nope'"):
        load_config(env={"BEETHOVEN_NOPE": "1"})


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})


def test_roles_from_toml_resolve_their_import_path(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'tags = ["gpu"]\n'
        '[[roles]]\nname = "solo"\nrun = "beethoven.roles:resolve_callable"\n'
        '[[roles]]\nname = "pair"\ncount = 2\nrun = "beethoven.roles:resolve_callable"\n'
        'eligible = ["gpu"]\nargs = { queue = "q1" }\n',
        encoding="utf-8",
    )
    config = load_config(path, env={})
    assert [(r.name, r.count) for r in config.roles] == [("solo", 1), ("pair", 2)]
    assert config.roles[1].eligible == frozenset({"gpu"})
    assert config.roles[1].args == {"queue": "q1"}
    assert config.tags == ("gpu",)


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ([{"name": "a", "count": 0, "run": "beethoven.roles:resolve_callable"}], "count"),
        ([{"name": "a", "run": "nope_module_xyz:f"}], "cannot import"),
        ([{"name": "a"}], "needs 'name' and 'run'"),
        (
            [{"name": "a", "run": "beethoven.roles:resolve_callable", "colour": 1}],
            "unknown role keys",
        ),
        (
            [{"name": "a", "run": "beethoven.roles:resolve_callable"}] * 2,
            "unique",
        ),
        ("solo", "expected a list"),
    ],
)
def test_bad_roles_are_one_clear_error(roles: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, roles=roles)
