"""The ``beethoven`` command: exit codes, one-line errors, a real agent answering queries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beethoven.cli import main
from beethoven.wire.security import generate_key, key_from_string, key_to_string

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beethoven", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(key_from_string(key)) == 32


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["frobnicate"], 2, "invalid choice"),
        (["agent", "--port", "x"], 2, "invalid int value"),
        (["agent", "-c", "/nonexistent/node.toml"], 2, "cannot read config file"),
        (["agent", "--cluster-net", "10.0.0.0/33"], 2, "cluster_net"),
        (["agent", "--key", "nope"], 2, "configuration error"),
        (["members", "--address", "127.0.0.1:1", "--timeout", "1"], 1, "cannot reach"),
        (["demo", "--nodes", "1"], 2, "--nodes"),
        (["sim", "--loss", "2"], 2, "--loss"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_bad_config_file_is_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n", encoding="utf-8")
    result = run("agent", "-c", str(bad))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("stop", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 0)],  # Ctrl-C as every command; a service stop
    ids=["sigint-130", "sigterm-0"],
)
def test_agent_answers_queries_and_leaves_on_a_signal(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    port = free_port()
    key = key_to_string(generate_key())
    config = tmp_path / "node.toml"
    config.write_text(
        f'name = "solo-agent"\nbind = "127.0.0.1"\nport = {port}\ncluster_net = ["127.0.0.1/32"]\n'
        f'keys = ["{key}"]\nsweeps = 1\n'
        '[[roles]]\nname = "janitor"\nrun = "beethoven.testing:idle_role"\n',
        encoding="utf-8",
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "beethoven", "agent", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            status = run("status", "--address", address, "--key", key, "--json", timeout=10)
            if status.returncode == 0 and json.loads(status.stdout)["ready"]:
                break
            assert time.monotonic() < deadline, status.stderr
            time.sleep(0.2)
        body = json.loads(status.stdout)
        assert body["name"] == "solo-agent"
        assert body["mode"] == "standalone"
        assert body["hosting"] == ["janitor"]
        assert body["encrypted"] is True

        members = run("members", "--address", address, "--key", key)
        assert members.returncode == 0
        assert members.stdout.splitlines()[0].split() == [
            "NODE",
            "STATUS",
            "ADDRESS",
            "LAST",
            "CHANGE",
        ]
        assert "solo-agent" in members.stdout
        assert "online" in members.stdout

        roles = run("roles", "--address", address, "--key", key, "--json")
        assert json.loads(roles.stdout) == [
            {"assigned": 1, "count": 1, "nodes": ["solo-agent"], "role": "janitor"}
        ]

        wrong = run("status", "--address", address, "--key", key_to_string(generate_key()),
                    "--timeout", "1")  # fmt: skip
        assert wrong.returncode == 1
        assert "no answer" in wrong.stderr
        assert "--key" in wrong.stderr
        keyless = run("status", "--address", address, "--timeout", "1")
        assert keyless.returncode == 1
    finally:
        agent.send_signal(stop)
        try:
            _, stderr = agent.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            raise
    assert agent.returncode == code, stderr
    assert "leaving the cluster" in stderr
    assert "Traceback" not in stderr


def test_agent_exits_1_when_its_port_is_taken() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run("agent", "--port", str(port), "--cluster-net", "127.0.0.1/32", timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_sim_prints_metrics_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    result = run("sim", "-n", "50", "--seconds", "20", "--scenario", "crash", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "detection_s" in result.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["nodes"] == 50
    assert data["detection_s"]["count"] > 0


def test_sim_plot_writes_a_png_or_says_what_is_missing(tmp_path: Path) -> None:
    png = tmp_path / "crash.png"
    result = run("sim", "-n", "30", "--seconds", "20", "--plot", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.returncode == 1
        assert "pip install 'beethoven[bench]'" in result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
