"""`detour links`: every endpoint's address and links, from the config, as text, JSON and QR
codes, for a router without a screen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helper.cli import main
from helper.lab.ca import LabCA


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    cert, key = LabCA(tmp_path / "ca").issue("signal.example.org")
    path = tmp_path / "detour.toml"
    path.write_text(
        f"""
[listen]
mixed = "127.0.0.1:1080"
[whatsapp_proxy]
listen = "127.0.0.1"
http_port = false
[mtproto_proxy]
listen = "127.0.0.1:8443"
secrets = {{ alice = "dd{"5a" * 16}" }}
[signal_proxy]
listen = "127.0.0.2:443"  # the WhatsApp proxy's TLS port has 127.0.0.1:443
certificate = "{cert}"
key = "{key}"
[api]
listen = "127.0.0.1:9080"
"""
    )
    return path


def test_text(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "tg://socks?server=127.0.0.1&port=1080" in out
    assert "ports 443 (TLS), 5222 (chat), 587 (media), 7777 (media)" in out
    assert "signal    signal.example.org:443" in out
    assert "https://signal.tube/#signal.example.org\n" in out
    assert "sgnl://signal.tube/#signal.example.org\n" in out
    assert "http://127.0.0.1:9080/status" in out
    # The MTProto endpoint's links, with the secret hidden (mtproto links --show-secrets).
    assert "tg://proxy?server=127.0.0.1&port=8443&secret=***\n" in out
    assert "https://t.me/proxy?server=127.0.0.1&port=8443&secret=***\n" in out
    assert "5a5a" not in out


def test_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", "-c", str(config_file), "--json"]) == 0
    entries = {entry["kind"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert list(entries) == ["mixed", "whatsapp", "mtproto", "signal", "api"]
    assert entries["signal"]["urls"] == [
        "https://signal.tube/#signal.example.org",
        "sgnl://signal.tube/#signal.example.org",
    ]


def test_qr_codes(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", "-c", str(config_file), "--qr"]) == 0
    out = capsys.readouterr().out
    assert out.count("█") > 300  # three codes: Telegram's and Signal's two
    assert "5a5a" not in out  # no code of a hidden MTProto link (it would be of no use)


def test_a_bad_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[signal_proxy]\nlisten = "127.0.0.1:443"\n')
    assert main(["links", "-c", str(bad)]) == 2
    assert "signal_proxy.certificate" in capsys.readouterr().err


def test_an_api_on_every_address_is_shown_at_the_lan_addresses() -> None:
    from helper.links_command import api_entry
    from transports import Endpoint

    entry = api_entry(Endpoint("0.0.0.0", 9080), lambda: ["192.168.1.1", "10.0.0.1"])
    assert entry.address == "0.0.0.0:9080"
    assert entry.urls == ("http://192.168.1.1:9080/status", "http://10.0.0.1:9080/status")
    # None found (or ::, which listens on IPv6 only): say what to replace.
    for host, shown in (("0.0.0.0", "0.0.0.0:9080"), ("::", "[::]:9080")):
        entry = api_entry(Endpoint(host, 9080), lambda: [])
        assert entry.urls == (f"http://{shown}/status",)
        assert f"replace {host} with this machine's LAN address" in entry.note
    entry = api_entry(Endpoint("192.168.1.1", 9080), lambda: ["10.9.9.9"])
    assert entry.urls == ("http://192.168.1.1:9080/status",)
