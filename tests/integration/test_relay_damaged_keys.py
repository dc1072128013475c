"""`detour relay` with a damaged key or certificate in its state directory: serve and
add-client say in one line which file and what to do, exit 2, and make no new keys (the
clients' access keys pin the relay's certificate: new keys would lock them all out)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helper.lab.ca import LabCA
from helper.relay.keys import RelayKeys, RelayKeysError
from tests.conftest import ROOT, detour_command
from tests.support.peers import free_port

RELAY_CONFIG = """\
[relay]
listen = "127.0.0.1:{port}"
state = "{state}"
tls_cert = "{cert}"
tls_key = "{key}"

[public]
address = "127.0.0.1:{port}"
front = "relay.damaged.test"
host = "relay.damaged.test"
"""

DAMAGES = {
    "garbage": b"\x8a\xff not pem at all\n",
    "empty": b"",
    "truncated": None,  # the file's first half
}
FILES = ["relay.key", "relay.pem", "clients-ca.key", "clients-ca.pem"]


def damage(path: Path, how: str) -> None:
    text = DAMAGES[how]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if text is None else text)


@pytest.fixture
def relay_config(tmp_path: Path) -> tuple[Path, RelayKeys]:
    cert, key = LabCA(tmp_path / "ca").issue("relay.damaged.test")
    state = tmp_path / "state"
    config = tmp_path / "relay.toml"
    config.write_text(RELAY_CONFIG.format(port=free_port(), state=state, cert=cert, key=key))
    keys = RelayKeys(state)
    keys.generate()
    keys.add_client("first", *_public())
    return config, keys


def _public():
    from transports import Endpoint

    return Endpoint("127.0.0.1", 443), "relay.damaged.test", "relay.damaged.test"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        detour_command(*args), capture_output=True, text=True, cwd=ROOT, timeout=60
    )


@pytest.mark.parametrize(
    ("command", "name"),
    # (serving needs no clients-ca.key: only add-client signs with it)
    [("serve", name) for name in FILES if name != "clients-ca.key"]
    + [("add-client", name) for name in FILES],
)
def test_a_damaged_key_file_is_one_line_naming_it(relay_config, command: str, name: str) -> None:
    config, keys = relay_config
    path = keys.directory / name
    damage(path, "garbage")
    before = {p.name: p.read_bytes() for p in keys.directory.iterdir()}
    args = ["relay", "-c", str(config)] + (["add-client", "second"] if command != "serve" else [])
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{path} is damaged" in result.stderr and "restore it" in result.stderr
    assert "keygen --force" in result.stderr
    # nothing was made anew, and no client was recorded without its access key shown
    assert {p.name: p.read_bytes() for p in keys.directory.iterdir()} == before


@pytest.mark.parametrize("how", list(DAMAGES))
@pytest.mark.parametrize("name", FILES)
def test_every_damage_is_said_for_the_file(relay_config, name: str, how: str) -> None:
    _, keys = relay_config
    damage(keys.directory / name, how)
    uses = [lambda: keys.add_client("second", *_public())]
    if name != "clients-ca.key":
        uses.append(keys.server_context)
    for use in uses:
        with pytest.raises(RelayKeysError, match=f"{name} is damaged"):
            use()
    assert "second" not in keys.clients()


def test_a_key_of_another_certificate_is_said(relay_config) -> None:
    _, keys = relay_config
    keys.relay_key.write_bytes(keys.ca_key.read_bytes())
    with pytest.raises(RelayKeysError, match=r"relay\.key is damaged .*not the key of relay\.pem"):
        keys.server_context()
