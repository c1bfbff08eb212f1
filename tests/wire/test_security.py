"""Keys, the keyring, the replay window and the session table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beethoven.errors import ConfigError, SecurityError
from beethoven.wire.security import (
    KEY_SIZE,
    WINDOW_SIZE,
    Keyring,
    ReplayWindow,
    Sealer,
    SessionTable,
    StreamGuard,
    generate_key,
    key_from_string,
    key_id,
    key_to_string,
)


def test_generated_keys_are_32_random_bytes() -> None:
    a, b = generate_key(), generate_key()
    assert len(a) == len(b) == KEY_SIZE
    assert a != b


@given(st.binary(min_size=32, max_size=32))
def test_key_text_form_round_trips(key: bytes) -> None:
    text = key_to_string(key)
    assert len(text) == 44
    assert key_from_string(text) == key
    assert key_from_string(f"  {text}\n") == key


@pytest.mark.parametrize(
    "text", ["", "not base64!", "AAAA", key_to_string(bytes(32))[:-4], "é" * 44]
)
def test_bad_key_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        key_from_string(text)


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33)])
def test_keys_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(ConfigError):
        Keyring(key)
    with pytest.raises(ConfigError):
        Keyring(generate_key()).install(key)


def test_keyring_from_strings_first_is_primary() -> None:
    k1, k2 = generate_key(), generate_key()
    ring = Keyring.from_strings([key_to_string(k1), key_to_string(k2)])
    assert ring.primary == k1
    assert ring.keys == (k1, k2)
    assert Keyring.from_strings(key_to_string(k2)).keys == (k2,)
    with pytest.raises(ConfigError):
        Keyring.from_strings([])


def test_keyring_rotation_steps() -> None:
    old, new = generate_key(), generate_key()
    ring = Keyring(old)
    with pytest.raises(ConfigError):
        ring.use(new)  # not installed yet
    ring.install(new)
    ring.install(new)  # idempotent
    assert ring.primary == old
    assert ring.get(key_id(new)) == new
    assert new in ring
    assert len(ring) == 2
    ring.use(new)
    assert ring.primary == new
    assert ring.primary_id == key_id(new)
    with pytest.raises(ConfigError):
        ring.remove(new)  # the primary
    ring.remove(old)
    ring.remove(old)  # no-op
    assert ring.keys == (new,)
    assert ring.get(key_id(old)) is None


def test_keyring_repr_shows_ids_never_keys() -> None:
    key = generate_key()
    text = repr(Keyring(key))
    assert key_id(key).hex() in text
    assert key.hex() not in text
    assert key_to_string(key) not in text


def test_sealer_counters_increase_and_the_salt_is_random() -> None:
    a, b = Sealer(b"x"), Sealer(b"x")
    assert a.salt != b.salt
    key = generate_key()
    assert [a.next(key)[0] for _ in range(3)] == [0, 1, 2]


def test_sealer_picks_a_new_salt_when_the_counter_runs_out() -> None:
    s = Sealer(b"x", counter=2**64 - 1)
    salt = s.salt
    assert s.next(generate_key())[0] == 2**64 - 1
    assert s.next(generate_key())[0] == 0
    assert s.salt != salt


@given(st.lists(st.integers(0, 3 * WINDOW_SIZE), max_size=300))
def test_replay_window_matches_a_model(counters: list[int]) -> None:
    window = ReplayWindow()
    seen: set[int] = set()
    for c in counters:
        highest = max(seen, default=-1)
        expected = c not in seen and c > highest - WINDOW_SIZE
        assert window.fresh(c) == expected
        if expected:
            window.commit(c, 0)
            seen.add(c)


def test_session_table_eviction_raises_the_floor() -> None:
    table = SessionTable(size=2)
    for i, salt in enumerate([b"a" * 16, b"b" * 16, b"c" * 16]):
        assert table.check(salt, 0, 1000 + i) is None
        table.commit(salt, 0, 1000 + i)
    assert len(table) == 2
    assert table.floor == 1000  # "a" was evicted
    # "a" replayed after eviction: refused by the floor, never accepted again.
    assert table.check(b"a" * 16, 0, 1000) == "stale"
    assert table.check(b"b" * 16, 0, 1001) == "replay"
    assert table.check(b"d" * 16, 0, 1001) is None


def test_stream_guard_refuses_a_seen_salt_and_forgets_expired_ones() -> None:
    guard = StreamGuard(size=2)
    guard.admit(b"a" * 16, expires_ms=100, now_ms=0)
    with pytest.raises(SecurityError):
        guard.admit(b"a" * 16, expires_ms=100, now_ms=50)
    guard.admit(b"b" * 16, expires_ms=200, now_ms=60)
    with pytest.raises(SecurityError):
        guard.admit(b"c" * 16, expires_ms=300, now_ms=70)  # full of live entries
    guard.admit(b"c" * 16, expires_ms=300, now_ms=150)  # "a" expired
    assert b"a" * 16 not in guard
    assert len(guard) == 2
