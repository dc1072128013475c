"""The `detour` command as users run it: exit codes, messages, help, signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helper import __version__
from helper.config import parse_config
from tests.conftest import ROOT, config_text, detour_command
from tests.support.peers import free_port
from transports.chain import known_layers


def detour(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    # A bound for a loaded machine (a start that takes 1.3 s of CPU took over 60 s with
    # twenty processes sharing two cores; the suite's own timeout is 120 s), not a pause: the
    # command returns when detour exits.
    return subprocess.run(
        detour_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_version() -> None:
    result = detour("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"detour {__version__}"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "detour"
    if not script.exists():
        pytest.skip("detour is not installed as a console script in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=100)
    assert result.stdout.strip() == f"detour {__version__}"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("run",),
        ("tui",),
        ("config",),
        ("config", "check"),
        ("config", "default"),
        ("config", "show"),
    ],
    ids=["detour", "run", "tui", "config", "config-check", "config-default", "config-show"],
)
def test_every_command_has_help(args: tuple[str, ...]) -> None:
    result = detour(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: detour")
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = detour("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_config_check_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        config_text(routes={"direct": "direct", "up": "socks5://u:hunter2@127.0.0.1:9050"})
    )
    result = detour("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "socks5://u:***@127.0.0.1:9050" in result.stdout
    assert "hunter2" not in result.stdout


def test_config_check_shows_the_router_listeners(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    text = config_text(
        extra="""
        [api]
        listen = "127.0.0.1:9080"

        [whatsapp_proxy]
        listen = "127.0.0.1"
        http_port = false
        """
    ).replace('mixed = "127.0.0.1:0"\n', 'mixed = "127.0.0.1:0"\ntransparent = "127.0.0.1:1090"\n')
    path.write_text(text)
    result = detour("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "transparent: 127.0.0.1:1090" in result.stdout
    assert "whatsapp proxy: 127.0.0.1 ports 443, 5222, 587, 7777" in result.stdout
    assert "status API: 127.0.0.1:9080" in result.stdout


def test_config_check_names_the_key_and_what_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        config_text(routes={"direct": "direct", "a": "direct", "b": "sock5://u:hunter2@h:1"})
        + '\n[probe]\nintervall = "5m"\n'
    )
    result = detour("config", "check", str(path))
    assert result.returncode == 2
    known = ", ".join(known_layers())
    assert f"route[2].chain: unknown layer 'sock5' (known: {known})" in result.stderr
    assert "probe.intervall: unknown key (did you mean 'interval'?" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("[listen\nmixed=1", "not valid TOML"),
        (None, "no such file"),
    ],
    ids=["toml-syntax", "missing-file"],
)
def test_config_check_unreadable(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.toml"
    if content is not None:
        path.write_text(content)
    result = detour("config", "check", str(path))
    assert result.returncode == 2
    assert message in result.stderr


README_EXAMPLE = (
    (ROOT / "README.md")
    .read_text()
    .split("## Your own configuration", 1)[1]
    .split("```toml\n", 1)[1]
    .split("```", 1)[0]
)


def test_config_show_prints_the_layered_config_with_secrets_hidden(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_text(README_EXAMPLE + '[listen]\nusers = [{ name = "a", password = "pw-lst" }]\n')
    path.chmod(0o600)
    result = detour("config", "show", "-c", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"# The configuration detour runs with: {path} on the built-in config.")
    assert f"[[service]]  # built-in, changed in {path}" in out
    assert out.count("[[service]]  # built-in\n") == 2  # whatsapp and signal, as built in
    assert 'chain = "socks5://alice:***@203.0.113.7:1080"' in out
    assert "secret" not in out and "pw-lst" not in out
    assert parse_config(out.replace('"***"', '"hidden"')).services[1].name == "whatsapp"


def test_config_show_without_a_file_is_the_built_in_config() -> None:
    result = detour("config", "show")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# The configuration detour runs with: the built-in config.")
    assert [s.name for s in parse_config(result.stdout).services] == [
        "telegram",
        "whatsapp",
        "signal",
    ]


def test_config_show_names_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[service]]\nname = "telegram"\nroutes = ["my-vps"]\n')
    result = detour("config", "show", "-c", str(path))
    assert result.returncode == 2
    assert "service[0].routes[0]: no route named 'my-vps' (routes: direct, " in result.stderr
    assert result.stdout == ""


def test_config_check_says_what_the_file_builds_on(tmp_path: Path) -> None:
    path = tmp_path / "listen.toml"
    path.write_text('[listen]\nmixed = "127.0.0.1:1081"\n')
    result = detour("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "  base:     built-in config" in result.stdout
    assert "  services: telegram, whatsapp, signal" in result.stdout
    path.write_text(config_text())  # [base] config = "none"
    assert "  base:     none" in detour("config", "check", str(path)).stdout


def _ping_through(proxy: tuple[str, int], echo_port: int) -> socket.socket:
    """A SOCKS5 connection through detour to the echo origin, "ping" echoed through it: the
    open client socket."""
    client = socket.create_connection(proxy)
    client.settimeout(5)
    # v5 1 method: no auth | v5 CONNECT rsv IPv4 127.0.0.1 port
    client.sendall(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01" + echo_port.to_bytes(2, "big"))
    reply = b""
    while len(reply) < 12:
        reply += client.recv(12 - len(reply))
    assert reply[:4] == b"\x05\x00\x05\x00"
    client.sendall(b"ping")
    assert client.recv(4) == b"ping"
    return client


def test_a_file_with_only_listen_runs(detour_process, echo_origin) -> None:
    """A file with nothing but [listen] is a whole config: the built-in routes and services
    under it, connections relayed."""
    proc = detour_process('[listen]\nhandshake_timeout = "3s"\nidle_timeout = "1m"\n')
    client = _ping_through(proc.address, echo_origin.port)
    client.close()
    assert proc.stop() == 0
    assert "problems" not in proc.output


def test_config_default_prints_the_built_in_config() -> None:
    result = detour("config", "default")
    assert result.returncode == 0
    config = parse_config(result.stdout)
    assert [s.name for s in config.services] == ["telegram", "whatsapp", "signal"]
    assert config.listen.mixed.port == 1080


def test_run_rejects_exposed_listener_without_auth() -> None:
    result = detour("run", "--headless", "--listen", f"0.0.0.0:{free_port()}")
    assert result.returncode == 2
    assert "reachable from other machines" in result.stderr


@pytest.mark.parametrize("value", ["nonsense", "example.org:1080", "127.0.0.1:99999"])
def test_run_rejects_bad_listen_address(value: str) -> None:
    result = detour("run", "--headless", "--listen", value)
    assert result.returncode == 2
    assert "--listen" in result.stderr


def test_run_reports_port_in_use(tmp_path: Path) -> None:
    # A small config: what is tested is the refusal, not the built-in config, whose routes
    # cost a quarter more CPU to set up (this test once ran past its bound under load).
    path = tmp_path / "small.toml"
    path.write_text(config_text())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = detour("run", "--headless", "--listen", f"127.0.0.1:{port}", "-c", str(path))
    assert result.returncode == 1
    assert f"cannot start: listen.mixed 127.0.0.1:{port}: Address already in use" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    whole = '[base]\nconfig = "none"\n'
    path.write_text(whole + '[[route]]\nname = "x"\nchain = "direct"\n[default]\npolicy = "y"\n')
    result = detour("run", "--headless", "-c", str(path))
    assert result.returncode == 2
    assert "default.policy: no route named 'y'" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_shut_down_cleanly_with_a_connection_open(detour_process, echo_origin, sig) -> None:
    # Without a drain, the open connection is cut at once (draining: test_operations.py).
    proc = detour_process(config_text(), "--drain-timeout", "0")
    client = _ping_through(proc.address, echo_origin.port)
    assert proc.stop(sig) == 0
    assert "shutting down" in proc.output
    assert "Traceback" not in proc.output
    try:
        assert client.recv(100) == b""  # the shutdown closed the relayed connection
    except ConnectionResetError:
        pass  # ... or reset it: either way the client is not left hanging
    client.close()


def test_plain_detour_without_a_terminal_runs_headless_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    port = free_port()
    path.write_text(config_text().replace('mixed = "127.0.0.1:0"', f'mixed = "127.0.0.1:{port}"'))
    process = subprocess.Popen(
        detour_command("-c", str(path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 15
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if "listening on" in line:
                break
        text = "".join(lines)
        assert "not a terminal; running headless" in text
        assert f"listening on 127.0.0.1:{port}" in text
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        process.stdout.close()  # type: ignore[union-attr]


def test_tui_needs_a_terminal() -> None:
    result = detour("tui")
    assert result.returncode == 2
    assert result.stderr == "detour tui: needs a terminal (try detour run --headless)\n"


def test_json_log_lines(detour_process, http_origin) -> None:
    proc = detour_process(config_text(), "--log-format", "json")
    with socket.create_connection(proc.address) as client:
        client.sendall(
            f"GET http://127.0.0.1:{http_origin.port}/json HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        while client.recv(65536):
            pass
    time.sleep(0.2)
    proc.stop()
    entries = [json.loads(line) for line in proc.output.splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= entries[0].keys()
    assert any("http 127.0.0.1" in e["msg"] and "via direct" in e["msg"] for e in entries)
