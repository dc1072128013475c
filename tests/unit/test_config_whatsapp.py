"""[whatsapp_proxy] (helper/config.py) and the port map it turns into
(helper/proxy/whatsapp.py): defaults, ports turned off or moved, certificates, limits, and the
access rule that keeps it from being an open proxy."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest

from helper.config import ConfigError, WhatsAppProxyConfig, parse_config
from helper.proxy.whatsapp import UPSTREAMS, endpoints, ensure_certificate, self_signed
from tests.support.origins import TestCA
from transports import Endpoint

ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'


def config(text: str, base: Path | None = None):
    return parse_config(textwrap.dedent(text) + "\n" + ROUTE, "test.toml", base)


def problems(text: str, base: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config(text, base)
    return err.value.problems


def test_off_unless_configured() -> None:
    assert config("").whatsapp_proxy is None


def test_defaults_follow_whatsapps_reference_proxy() -> None:
    wa = config('[whatsapp_proxy]\nlisten = "127.0.0.1"\n').whatsapp_proxy
    assert wa == WhatsAppProxyConfig("127.0.0.1")
    assert (wa.tls_port, wa.chat_port, wa.http_port, wa.media_ports) == (443, 5222, 80, (587, 7777))
    assert wa.certificate is None and wa.key is None
    mapped = [(e.kind, e.port, e.upstream, e.tls) for e in endpoints(wa)]
    assert mapped == [
        ("tls", 443, Endpoint("g.whatsapp.net", 5222), True),
        ("chat", 5222, Endpoint("g.whatsapp.net", 5222), False),
        ("http", 80, Endpoint("g.whatsapp.net", 80), False),
        ("media", 587, Endpoint("whatsapp.net", 443), False),
        ("media", 7777, Endpoint("whatsapp.net", 443), False),
    ]
    assert UPSTREAMS["media"] == Endpoint("whatsapp.net", 443)


def test_ports_can_move_or_be_turned_off() -> None:
    wa = config(
        """
        [whatsapp_proxy]
        listen = "localhost"
        tls_port = 8443
        http_port = false
        media_ports = [7777]
        max_connections = 100
        max_per_client = 10
        idle_timeout = "5m"
        handshake_timeout = "3s"
        """
    ).whatsapp_proxy
    assert wa.listen == "127.0.0.1"
    assert [(e.kind, e.port) for e in endpoints(wa)] == [
        ("tls", 8443),
        ("chat", 5222),
        ("media", 7777),
    ]
    assert (wa.max_connections, wa.max_per_client) == (100, 10)
    assert (wa.idle_timeout, wa.handshake_timeout) == (300.0, 3.0)
    off = config('[whatsapp_proxy]\nlisten = "::1"\nmedia_ports = []\ntls_port = false\n')
    assert [e.kind for e in endpoints(off.whatsapp_proxy)] == ["chat", "http"]


def test_a_lan_address_needs_a_client_allow_list() -> None:
    found = problems('[whatsapp_proxy]\nlisten = "192.168.1.1"\n')
    assert len(found) == 1
    assert found[0].startswith("whatsapp_proxy.listen: 192.168.1.1 is reachable")
    assert "listen.allow" in found[0]
    # Passwords do not help: the app cannot log in.
    users = '[listen]\nusers = [{ name = "a", password = "secret-pw" }]\n'
    found = problems(users + '[whatsapp_proxy]\nlisten = "0.0.0.0"\n')
    assert [p.split(":")[0] for p in found] == ["whatsapp_proxy.listen"]
    assert "secret-pw" not in "".join(found)
    ok = config('[listen]\nallow = ["192.168.1.0/24"]\n[whatsapp_proxy]\nlisten = "192.168.1.1"\n')
    assert ok.whatsapp_proxy.listen == "192.168.1.1"


def test_mistakes_name_their_key() -> None:
    found = problems(
        """
        [whatsapp_proxy]
        listen = "192.168.1.1:443"
        chat_prot = 5222
        tls_port = 70000
        http_port = "80"
        media_ports = [587, 0.5]
        max_connections = 0
        max_per_client = true
        idle_timeout = "soon"
        """
    )
    text = "\n".join(found)
    assert "whatsapp_proxy.listen: '192.168.1.1:443' is not an IP address" in text
    assert "whatsapp_proxy.chat_prot: unknown key (did you mean 'chat_port'?" in text
    assert "whatsapp_proxy.tls_port: 70000 is not a port (1-65535), 0 (any) or false" in text
    assert "whatsapp_proxy.http_port: '80' is not a port" in text
    assert "whatsapp_proxy.media_ports[1]: 0.5 is not a port" in text
    assert "whatsapp_proxy.max_connections: 0 is not a positive whole number" in text
    assert "whatsapp_proxy.max_per_client: True is not a positive whole number" in text
    assert "whatsapp_proxy.idle_timeout:" in text
    assert problems("[whatsapp_proxy]\n") == ["whatsapp_proxy.listen: is required"]
    assert problems('whatsapp_proxy = "on"\n')[0].startswith("whatsapp_proxy: expected a table")


def test_two_endpoints_cannot_share_a_port_and_one_must_be_on() -> None:
    found = problems('[whatsapp_proxy]\nlisten = "127.0.0.1"\nhttp_port = 5222\n')
    assert found == ["whatsapp_proxy.http_port: port 5222 is also chat_port"]
    found = problems(
        '[whatsapp_proxy]\nlisten = "127.0.0.1"\ntls_port = false\nchat_port = false\n'
        "http_port = false\nmedia_ports = []\n"
    )
    assert found == ["whatsapp_proxy: every port is off; remove the section to turn it off"]
    # 0 (any free port) may repeat
    wa = config('[whatsapp_proxy]\nlisten = "127.0.0.1"\nchat_port = 0\nhttp_port = 0\n')
    assert (wa.whatsapp_proxy.chat_port, wa.whatsapp_proxy.http_port) == (0, 0)


def test_certificate_and_key_come_together_and_must_load(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    cert, key = ca.issue("router.lan")
    wa = config(
        f'[whatsapp_proxy]\nlisten = "127.0.0.1"\ncertificate = "{cert.name}"\n'
        f'key = "{key.name}"\n',
        base=cert.parent,
    ).whatsapp_proxy
    assert (wa.certificate, wa.key) == (cert, key)
    found = problems(f'[whatsapp_proxy]\nlisten = "127.0.0.1"\ncertificate = "{cert}"\n')
    assert found == [
        "whatsapp_proxy.key: is required with whatsapp_proxy.certificate "
        "(a PEM certificate and its private key)"
    ]
    found = problems(
        f'[whatsapp_proxy]\nlisten = "127.0.0.1"\ncertificate = "{key}"\nkey = "{cert}"\n'
    )
    assert found == [f"whatsapp_proxy.certificate: '{key}' is not a PEM certificate"]
    found = problems('[whatsapp_proxy]\nlisten = "127.0.0.1"\nkey = "nope.pem"\n')
    assert any(p.startswith("whatsapp_proxy.key: 'nope.pem': no such file") for p in found)


def test_self_signed_certificate_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "whatsapp-proxy"
    cert, key = self_signed(directory)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    first = cert.read_bytes()
    assert self_signed(directory) == (cert, key)
    assert cert.read_bytes() == first  # kept, not made again
    key.write_text("garbage")
    self_signed(directory)  # an unusable pair is replaced
    assert cert.read_bytes() != first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def test_a_certificate_is_made_in_a_child_process_once(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "whatsapp-proxy"
    cert, key = await ensure_certificate(directory)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    made = cert.read_bytes()
    assert await ensure_certificate(directory) == (cert, key)
    assert cert.read_bytes() == made  # kept, not made again


async def test_a_certificate_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the directory should be")
    with pytest.raises(OSError, match=r"whatsapp_proxy: cannot make a certificate in .*taken"):
        await ensure_certificate(tmp_path / "taken")


def test_a_key_with_a_pass_phrase_or_a_directory_is_named_without_a_prompt(tmp_path) -> None:
    """OpenSSL asks for an encrypted key's pass phrase on the terminal (`config check`
    waited there); detour says what is wrong instead, and a directory is not a file."""
    from cryptography.hazmat.primitives import serialization

    cert, key = TestCA(tmp_path / "ca").issue("router.lan")
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    found = problems(
        f'[whatsapp_proxy]\nlisten = "127.0.0.1"\ncertificate = "{cert}"\nkey = "{locked}"\n'
    )
    assert len(found) == 1, found
    assert found[0].startswith(f"whatsapp_proxy.certificate: '{locked}' is encrypted with a pass")
    found = problems(
        f'[whatsapp_proxy]\nlisten = "127.0.0.1"\ncertificate = "{tmp_path}"\nkey = "{key}"\n'
    )
    assert found == [f"whatsapp_proxy.certificate: '{tmp_path}': not a regular file"]
