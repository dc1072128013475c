"""`detour lab` and `detour demo` as a tester runs them."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helper.config import load_config
from helper.lab.scenario import scenario_names
from tests.conftest import ROOT, detour_command
from tests.support.networks import free_network, lab_address
from tests.support.peers import free_port, require_peer


def start(*args: str, log: Path) -> subprocess.Popen[str]:
    out = log.open("w")
    process = subprocess.Popen(
        detour_command(*args), stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    out.close()
    return process


# How long a lab may take to start: a bound, not a pause (the wait ends when the text is
# there). Setting up a namespace lab's veths and nftables took over 20 s on a loaded machine.
START_BOUND = 90.0


def wait_for(
    log: Path, text: str, process: subprocess.Popen[str], timeout: float = START_BOUND
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{text!r} never appeared:\n{log.read_text()}")


def stop(process: subprocess.Popen[str], log: Path) -> str:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(60)  # a namespace lab takes its veths and nftables down first
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the lab did not stop on SIGINT:\n{log.read_text()}") from None
    assert code == 0, log.read_text()
    output = log.read_text()
    assert "Traceback" not in output, output
    return output


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)  # a refusal answers at once; the bound is for a loaded machine
        return sock.connect_ex((address, port)) == 0


def test_list_names_every_scenario() -> None:
    result = subprocess.run(
        detour_command("lab", "--list"), capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == scenario_names()


def test_unknown_scenario_is_a_usage_error() -> None:
    result = subprocess.run(
        detour_command("lab", "--scenario", "nope"), capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2
    assert "no scenario named 'nope' (known: allow-list, baseline" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--network", "10.0.0.1/16"), "argument --network: '10.0.0.1/16' is not an IPv4 network"),
        (("--network", "nope"), "argument --network: 'nope' is not an IPv4 network"),
        (("--listen", "nope"), "argument --listen: 'nope': expected HOST:PORT"),
    ],
)
def test_bad_lab_arguments_are_usage_errors_naming_the_option(args, says: str) -> None:
    result = subprocess.run(
        detour_command("lab", *args), capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 2 and says in result.stderr, result.stderr


def test_a_config_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        detour_command("lab", "--network", free_network(), "--write-config", str(tmp_path)),
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"detour lab: cannot write {tmp_path}: Is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_lab_writes_a_config_detour_accepts_and_stops_cleanly(tmp_path: Path) -> None:
    config_path, log = tmp_path / "lab.toml", tmp_path / "lab.log"
    network = free_network()
    web = lab_address(network, "telegram-web")
    process = start(
        "lab", "--scenario", "sni-reset", "--network", network,
        "--write-config", str(config_path), log=log,
    )  # fmt: skip
    try:
        wait_for(log, "Ctrl-C stops the lab", process)
        config = load_config(config_path)
        assert [r.name for r in config.routes][:2] == ["direct", "tls-fragment"]
        assert config_path.stat().st_mode & 0o077 == 0  # it holds the front's access key
        assert listening(web, 443)
    finally:
        output = stop(process, log)
    assert "stopping the lab" in output
    assert not listening(web, 443)


def test_lab_follows_an_edited_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "mine.toml"
    scenario.write_text('summary = "open"\n')
    log = tmp_path / "lab.log"
    network = free_network()
    control = lab_address(network, "control")
    process = start(
        "lab", "--scenario", str(scenario), "--network", network,
        "--write-config", str(tmp_path / "c.toml"), log=log,
    )  # fmt: skip
    try:
        wait_for(log, "Ctrl-C stops the lab", process)
        assert listening(control, 443)
        time.sleep(0.05)
        scenario.write_text('[[rule]]\naction = "refuse"\nhosts = ["control"]\n')
        wait_for(log, "scenario is now mine", process)
        deadline = time.monotonic() + 30
        while listening(control, 443) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not listening(control, 443)
    finally:
        stop(process, log)


def test_demo_runs_the_lab_and_detour(tmp_path: Path) -> None:
    curl = require_peer("curl", "curl")
    log, port = tmp_path / "demo.log", free_port()
    process = start(
        "demo", "--headless", "--scenario", "baseline", "--network", free_network(),
        "--listen", f"127.0.0.1:{port}", log=log,
    )  # fmt: skip
    try:
        output = wait_for(log, "Ctrl-C stops.", process)
        ca = output.split("--cacert ")[1].split()[0]
        result = subprocess.run(
            [curl, "-sS", "--max-time", "5", "--socks5-hostname", f"127.0.0.1:{port}",
             "--cacert", ca, "https://web.telegram.org/"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("hello from web.telegram.org")
    finally:
        stop(process, log)


@pytest.mark.parametrize("command", ["lab", "demo"])
def test_help(command: str) -> None:
    result = subprocess.run(
        detour_command(command, "--help"), capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    assert "--scenario NAME|FILE" in result.stdout


@pytest.mark.timeout(300)  # room for START_BOUND and the stop on a loaded machine
def test_lab_in_a_network_namespace(tmp_path: Path) -> None:
    from tests.lab.conftest import require_netns

    require_netns()
    log = tmp_path / "lab.log"
    network = free_network(kernel=True)
    process = start(
        "lab", "--netns", "--scenario", "ip-blackhole", "--network", network,
        "--write-config", str(tmp_path / "c.toml"), log=log,
    )  # fmt: skip
    try:
        wait_for(log, "Ctrl-C stops the lab", process)
        assert "in a network namespace" in log.read_text()
        assert listening(lab_address(network, "control"), 443)  # the control, over the veth
    finally:
        stop(process, log)
    from helper.lab.netns import NetnsLab

    ours = NetnsLab("baseline", network=network).name
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ours not in names.split()


def test_detour_probe_json_against_a_running_lab(tmp_path: Path) -> None:
    import json

    config, log = tmp_path / "lab.toml", tmp_path / "lab.log"
    process = start(
        "lab", "--scenario", "sni-reset", "--network", free_network(),
        "--write-config", str(config), log=log,
    )  # fmt: skip
    try:
        wait_for(log, "Ctrl-C stops the lab", process)
        result = subprocess.run(
            detour_command("probe", "-c", str(config), "--json"),
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr  # every service reachable
        report = {s["name"]: s for s in json.loads(result.stdout)["services"]}
        assert {name: s["best_route"] for name, s in report.items()} == {
            "telegram": "tls-fragment", "whatsapp": "tls-fragment", "signal": "tls-fragment",
        }  # fmt: skip
        direct = next(r for r in report["telegram"]["routes"] if r["route"] == "direct")
        assert (direct["ok"], direct["failure"], direct["op"]) == (
            False, "connection_reset", "tls_handshake",
        )  # fmt: skip
        assert {"latency_ms", "rate_kbps", "diagnosis", "targets"} <= direct.keys()

        table = subprocess.run(
            detour_command("probe", "-c", str(config), "--service", "signal"),
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert "reset right after the TLS ClientHello: SNI-based DPI" in table.stdout
        assert "works via tls-fragment" in table.stdout

        missing = subprocess.run(
            detour_command("probe", "-c", str(config), "--service", "icq"),
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert missing.returncode == 2
        assert "no service 'icq' (services: telegram, whatsapp, signal)" in missing.stderr
    finally:
        stop(process, log)


def test_detour_probe_exits_1_when_a_service_has_no_route(tmp_path: Path) -> None:
    scenario = tmp_path / "nothing.toml"  # an allow-list with nothing on it but DNS
    scenario.write_text('summary = "nothing gets out"\n[allow]\nhosts = ["doh"]\n')
    config, log = tmp_path / "lab.toml", tmp_path / "lab.log"
    process = start(
        "lab", "--scenario", str(scenario), "--network", free_network(),
        "--write-config", str(config), log=log,
    )  # fmt: skip
    try:
        wait_for(log, "Ctrl-C stops the lab", process)
        # Nothing answers through any route: 1 s per probe shows it as well as the lab's 3 s.
        text = config.read_text()
        assert 'timeout = "3s"' in text
        config.write_text(text.replace('timeout = "3s"', 'timeout = "1s"'))
        result = subprocess.run(
            detour_command("probe", "-c", str(config), "--service", "telegram"),
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout
        assert "✗ telegram  no route works" in result.stdout
    finally:
        stop(process, log)
