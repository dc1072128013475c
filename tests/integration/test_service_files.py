"""The service files in config/: the systemd unit and the OpenWrt init script start detour
with arguments detour accepts, reload with SIGHUP, give the drain time to finish, and (the
unit) keep the hardening docs/router.md promises."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helper.cli import DRAIN_TIMEOUT, EXIT_USAGE, build_parser
from tests.conftest import ROOT
from tests.support.peers import require_peer

UNIT = ROOT / "config" / "systemd" / "detour.service"
INIT = ROOT / "config" / "openwrt" / "detour.init"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def check_detour_command(argv: list[str]) -> None:
    assert Path(argv[0]).name == "detour"
    args = build_parser().parse_args(argv[1:])  # exits 2 on anything detour rejects
    assert args.command == "run" and args.headless
    assert args.run_config == "/etc/detour/detour.toml"


def test_the_systemd_unit_runs_detour_headless_and_reloads_with_sighup() -> None:
    settings = unit_settings()
    check_detour_command(shlex.split(settings["ExecStart"][0]))
    assert settings["Type"] == ["notify"]  # READY=1 once listening: test_operations.py
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert float(settings["TimeoutStopSec"][0]) > DRAIN_TIMEOUT
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == [str(EXIT_USAGE)]  # a bad config


def test_the_systemd_unit_is_hardened() -> None:
    settings = unit_settings()
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "detour",
        "ConfigurationDirectory": "detour",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert "@system-service" in settings["SystemCallFilter"]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    installed = Path(sys.executable).parent / "detour"
    detour = str(installed if installed.exists() else Path(sys.executable))
    unit = tmp_path / "detour.service"
    # verify wants ExecStart's program to exist; the installed path may not exist here.
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/detour", detour))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "detour.service" not in result.stderr, result.stderr  # no warning about the unit


@pytest.mark.parametrize("shell", ["sh", "dash", "busybox"])
def test_the_openwrt_init_script_parses(shell: str) -> None:
    path = require_peer(shell, {"sh": "dash", "dash": "dash", "busybox": "busybox"}[shell])
    argv = [path, "sh", "-n", str(INIT)] if shell == "busybox" else [path, "-n", str(INIT)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


# procd's shell functions, recording what the script asks of procd (one call per line).
PROCD_STUBS = """
procd_open_instance() { echo "open_instance $*"; }
procd_close_instance() { echo "close_instance"; }
procd_set_param() { printf 'set_param'; for a in "$@"; do printf ' [%s]' "$a"; done; echo; }
procd_send_signal() { echo "send_signal $*"; }
"""


def run_init(tmp_path: Path, function: str) -> list[str]:
    script = (
        f"{PROCD_STUBS}\n. {shlex.quote(str(INIT))}\n"
        f"STATE={shlex.quote(str(tmp_path / 'state'))}\n{function}\n"
    )
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def params(line: str) -> list[str]:
    return [part.rstrip("]") for part in line.split(" [")[1:]]


def test_the_openwrt_init_script_starts_detour_and_reloads_with_hup(tmp_path: Path) -> None:
    text = INIT.read_text()
    assert text.startswith("#!/bin/sh /etc/rc.common\n")
    assert "\nUSE_PROCD=1\n" in text
    calls = run_init(tmp_path, "start_service")
    assert calls[0].startswith("open_instance") and calls[-1] == "close_instance"
    settings = {params(c)[0]: params(c)[1:] for c in calls if c.startswith("set_param")}
    check_detour_command(settings["command"])
    assert settings["file"] == ["/etc/detour/detour.toml"]
    assert "respawn" in settings
    assert float(settings["term_timeout"][0]) > DRAIN_TIMEOUT
    assert (tmp_path / "state").is_dir()
    assert run_init(tmp_path, "reload_service") == ["send_signal detour * HUP"]


def test_the_openwrt_init_script_writes_the_firewall_rules_when_asked(tmp_path: Path) -> None:
    """With LAN_IFACE set, each start writes `detour router-rules --flavour openwrt` into
    fw4's include directory, reloads fw4 only when the rules changed, and sets TPROXY's
    policy routing (fw4 and ip are stubs here: the host's firewall is not touched)."""
    config = tmp_path / "detour.toml"
    config.write_text(
        '[listen]\ntransparent = "[::]:1090"\ntransparent_udp = "[::]:1091"\n'
        'allow = ["192.168.1.0/24"]\n'
    )
    prog = tmp_path / "detour"
    prog.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT))} "
        f'exec {shlex.quote(sys.executable)} -m helper "$@"\n'
    )
    prog.chmod(0o755)
    rules = tmp_path / "20-detour.nft"
    settings = {"PROG": prog, "CONF": config, "RULES": rules, "RUN": tmp_path / "run"}
    overrides = "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in settings.items())
    stubs = (
        'fw4() { echo "fw4 $*"; }\nip() { echo "ip $*"; }\nlogger() { echo "logger $* $(cat)"; }\n'
    )
    calls = run_init(tmp_path, f"{stubs}{overrides}LAN_IFACE=br-lan\nstart_service\nstart_service")
    assert calls.count("fw4 reload") == 1, calls  # the second start found them unchanged
    assert calls.count("ip -4 rule add fwmark 1 lookup 100") == 2, calls
    assert "chain detour_redirect {" in rules.read_text()
    assert sum(c.startswith("open_instance") for c in calls) == 2
    # A config that gives no rules: the reason is logged, the rules and fw4 left alone.
    config.write_text("[listen]\n")
    calls = run_init(tmp_path, f"{stubs}{overrides}LAN_IFACE=br-lan\nstart_service")
    assert not any(c.startswith(("fw4", "ip ")) for c in calls), calls
    assert "chain detour_redirect {" in rules.read_text()
    assert "listen.transparent: not set" in (tmp_path / "run" / "rules.err").read_text()
    assert any(c.startswith("logger -t detour detour router-rules: listen.") for c in calls)
    # Without LAN_IFACE (the default) the firewall is left alone.
    rules.unlink()
    calls = run_init(tmp_path, f"{stubs}{overrides}start_service")
    assert not any(c.startswith(("fw4", "ip ")) for c in calls) and not rules.exists()
