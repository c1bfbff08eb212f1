from __future__ import annotations

import pytest

import beethoven
from beethoven import Address, ConfigError, parse_address
from beethoven.wire.messages import MESSAGE_TYPES


def test_version_is_exposed() -> None:
    assert beethoven.__version__


def test_message_type_codes_are_unique_and_small() -> None:
    codes = list(MESSAGE_TYPES)
    assert len(codes) == len(set(codes))
    assert all(0 < code < 128 for code in codes)  # one msgpack positive fixint byte


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:33000", Address("127.0.0.1", 33000)),
        ("[::1]:7", Address("::1", 7)),
        ("10.0.0.1", Address("10.0.0.1", 9)),
        ("[fe80:0::1]", Address("fe80::1", 9)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, default_port=9) == expected


@pytest.mark.parametrize("text", ["", "host:1", "1.2.3.4:x", "1.2.3.4:70000", "[::1", "[::1]x"])
def test_parse_address_rejects_bad_text(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(text, default_port=1)


def test_address_str_brackets_ipv6() -> None:
    assert str(Address("::1", 5)) == "[::1]:5"
    assert str(Address("127.0.0.1", 5)) == "127.0.0.1:5"


def test_store_package_imports_alone_and_submodules_stay_cheap() -> None:
    """Regression: `import beethoven_store` failed with a circular import once the
    public API was exported eagerly from `beethoven`."""
    import subprocess
    import sys

    code = (
        "import sys, beethoven_store, beethoven.errors\n"
        "assert 'beethoven.node' not in sys.modules, 'beethoven.node imported eagerly'\n"
        "import beethoven\n"
        "assert beethoven.open_node.__module__ == 'beethoven.node'\n"
        "assert 'open_node' in dir(beethoven)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        beethoven.no_such_name  # noqa: B018
