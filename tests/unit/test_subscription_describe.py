"""`detour config show` and `detour config check` with subscriptions
(helper/subscriptions/describe.py): each subscription and its pool from the last good list,
every node with what becomes of it (active, standby, disabled, refused), no secret shown;
the pool's nodes are not written as the file's routes, and a node is no problem of the
file's."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from helper.config import load_layers
from helper.config.show import show
from helper.config_commands import config_check
from helper.subscriptions import store
from helper.subscriptions.describe import node_states
from helper.subscriptions.formats import parse_list

VMESS = {"v": "2", "ps": "vm", "add": "198.51.100.4", "port": "443", "net": "tcp",
         "id": "3b5e2f4c-8a1d-4e6f-9b2a-7c8d9e0f1a2b", "tls": "tls"}  # fmt: skip
LIST = "\n".join(
    [
        "ss://aes-256-gcm:SECRETss@198.51.100.1:8388#a",
        "trojan://SECRETtr@198.51.100.2:443#b",
        "vless://9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a@198.51.100.3:443?security=tls#c",
        "vmess://" + base64.b64encode(json.dumps(VMESS).encode()).decode(),
        "socks5://u:SECRETsocks@10.0.0.9:1080#lan",
    ]
).encode()
SECRETS = ("SECRET", "3b5e2f4c", "9d8c7b6a", "TOPSECRETPATH")

FILE = """\
[[subscription]]
name = "panel"
url = "https://panel.example/TOPSECRETPATH"
services = ["telegram"]
keep = 2
nodes = { "b" = { enabled = false } }
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "detour.toml"
    path.write_text(FILE)
    path.chmod(0o600)
    store.save("panel", parse_list(LIST, allow_private=True).nodes)
    return path


def test_show_lists_the_subscription_and_its_pool_without_secrets(config_file: Path) -> None:
    text = show(load_layers(str(config_file)))
    assert "[[subscription]]  # /" in text and 'name = "panel"' in text
    assert "keep = 2" in text and 'url = "***"' in text
    # The nodes are the pool's, not routes written in the file.
    assert "[[route]]  # default" not in text and 'name = "panel.a"' not in text
    lines = [line for line in text.splitlines() if line.startswith("#     panel.")]
    assert [line.split()[1:3] for line in lines] == [
        ["panel.a", "active"],
        ["panel.b", "disabled"],
        ["panel.c", "active"],
        ["panel.vm", "standby"],
        ["panel.lan", "refused:"],
    ]
    assert "ss://aes-256-gcm:***@198.51.100.1:8388" in text
    for secret in SECRETS:
        assert secret not in text


def test_check_lists_the_pool_and_a_node_is_no_problem_of_the_file(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert config_check(str(config_file)) == 0
    out = capsys.readouterr().out
    assert "  subscriptions:\n    panel (https://panel.example/***, every 6h, keep 2" in out
    assert "5 nodes in the last good list" in out
    assert "panel.a" in out and "panel.a (" not in out.split("subscriptions:")[0]
    for secret in SECRETS:
        assert secret not in out


def test_without_a_list_yet_the_pool_says_it_has_no_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "detour.toml"
    path.write_text(FILE)
    path.chmod(0o600)
    assert config_check(str(path)) == 0
    out = capsys.readouterr().out
    assert "no list fetched yet" in out
    assert "pool panel has no nodes: telegram use their other routes" in out


def test_a_node_this_computer_cannot_run_is_said_with_it(config_file: Path) -> None:
    config = load_layers(str(config_file)).config
    stored = store.load("panel")
    states = node_states(config.subscriptions[0], stored, check=lambda chain: "no core here")
    assert states[0][2] == "cannot run here: no core here"
