"""A config file that holds secrets (listener passwords, proxy passwords, front keys, bridge
lines) and that other users can read gets a warning naming the file and the fix."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from helper.config import load_config, secrets_held
from tests.conftest import ROOT, detour_command

BASE = '[[route]]\nname = "direct"\nchain = "direct"\n'
USERS = '[listen]\nusers = [{ name = "alice", password = "pw-listener" }]\n'
PROXY = '[[route]]\nname = "up"\nchain = "socks5://bob:pw-proxy@127.0.0.1:1080"\n'
HTTP = '[[route]]\nname = "web"\nchain = "http://bob:pw-http@127.0.0.1:8888"\n'
BRIDGE = (
    '[[route]]\nname = "bridge"\n'
    'chain = "pt:obfs4 192.0.2.3:443 cert=AbCdEf iat-mode=0 | socks5://127.0.0.1:1080"\n'
)


def write(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "detour.toml"
    path.write_text('[base]\nconfig = "none"\n' + text)
    path.chmod(mode)
    return path


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "detour.config" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (USERS + BASE, "listen.users passwords"),
        (BASE + PROXY, "route 'up' proxy password"),
        (BASE + HTTP, "route 'web' proxy password"),
        (BASE + BRIDGE, "route 'bridge' bridge line"),
    ],
)
@pytest.mark.parametrize(("mode", "who"), [(0o644, "everyone"), (0o640, "its group")])
def test_readable_file_with_secrets_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, what: str, mode: int, who: str
) -> None:
    caplog.set_level(logging.WARNING)
    path = write(tmp_path, text, mode)
    load_config(path)
    (message,) = warnings(caplog)
    assert str(path) in message and what in message and who in message
    assert f"chmod 600 {path}" in message
    assert "pw-" not in message and "AbCdEf" not in message  # names the secret, never shows it


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_file_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture, mode) -> None:
    caplog.set_level(logging.WARNING)
    load_config(write(tmp_path, USERS + BASE + PROXY, mode))
    assert warnings(caplog) == []


def test_file_without_secrets_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = load_config(
        write(tmp_path, BASE + '[[route]]\nname = "s"\nchain = "tlsfrag:sni"\n', 0o644)
    )
    assert secrets_held(config) == []
    assert warnings(caplog) == []


def test_api_token_is_a_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    token = "t" * 40
    text = BASE + f'[api]\nlisten = "127.0.0.1:0"\ntoken = "{token}"\n'
    config = load_config(write(tmp_path, text, 0o604))
    assert secrets_held(config) == ["api.token"]
    (message,) = warnings(caplog)
    assert "api.token" in message and token not in message


def test_front_key_is_a_secret(tmp_path: Path) -> None:
    from helper.relay.keys import RelayKeys
    from transports import Endpoint

    keys = RelayKeys(tmp_path / "state")
    keys.generate()
    key = keys.add_client("alice", Endpoint("127.0.0.1", 443), "cdn.test", "relay.test")
    text = BASE + f'[[route]]\nname = "front"\nchain = "front:{key.encode()}"\n'
    assert secrets_held(load_config(write(tmp_path, text, 0o600))) == ["route 'front' access key"]


def test_the_command_line_shows_the_warning(tmp_path: Path) -> None:
    path = write(tmp_path, USERS + BASE, 0o644)
    done = subprocess.run(
        detour_command("config", "check", str(path)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100,  # a bound for a loaded machine, not a pause
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"chmod 600 {path}" in done.stdout + done.stderr


def test_server_links_and_subscriptions_are_secrets(tmp_path: Path) -> None:
    links = {
        "a": "ss://aes-256-gcm:SECRETpw@198.51.100.1:8388",
        "b": "vless://3b5e2f4c-8a1d-4e6f-9b2a-7c8d9e0f1a2b@198.51.100.2:443?security=tls",
        "c": "trojan://SECRETpw@198.51.100.3:443",
        "d": "ssconf://keys.example/SECRETpath",
    }
    text = BASE + "".join(f'[[route]]\nname = "{n}"\nchain = "{c}"\n' for n, c in links.items())
    text += '[[subscription]]\nname = "panel"\nurl = "https://panel.example/SECRETsub"\n'
    held = secrets_held(load_config(write(tmp_path, text, 0o600)))
    assert held == [
        "route 'a' Shadowsocks password",
        "route 'b' VLESS user id",
        "route 'c' Trojan password",
        "route 'd' Outline key URL",
        "subscription 'panel' url",
    ]
    assert not any("SECRET" in line for line in held)


@pytest.mark.parametrize("mode", [0o640, 0o644])
def test_a_group_given_on_purpose_is_kept_in_the_advice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    """docs/router.md: root owns the file, a group of its own lets the service's user read it
    (0640). chmod 600 would lock that user out: the advice keeps the group."""
    import grp
    import os
    import pwd

    owner = pwd.getpwuid(os.getuid())
    others = sorted(g.gr_gid for g in grp.getgrall() if g.gr_gid != owner.pw_gid)
    if os.getuid() != 0 or not others:
        pytest.skip("needs root and a group other than the owner's own")
    caplog.set_level(logging.WARNING)
    path = write(tmp_path, USERS + BASE, mode)
    os.chown(path, os.getuid(), others[0])
    name = grp.getgrgid(others[0]).gr_name
    load_config(path)
    (message,) = warnings(caplog)
    if mode & 0o004:
        assert f"chmod 640 {path} (its group, {name}, keeps reading it)" in message
        assert "chmod 600" not in message
    else:
        assert f"only the user detour runs as is in group {name}" in message
        assert f"chmod 600 {path}" in message


def test_the_owners_own_group_gets_600_and_the_group_alternative(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = write(tmp_path, USERS + BASE, 0o640)
    load_config(path)
    (message,) = warnings(caplog)
    assert f"fix it with: chmod 600 {path} (or, when another user runs detour" in message
    assert f"chmod 640 {path} with the group that user has" in message
