"""`[mtproto_proxy]`: an MTProto proxy endpoint Telegram's apps add as a proxy
(helper/proxy/mtproto.py, docs/telegram.md). Off unless the section is there."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import Endpoint
from transports.mtproto.secret import ProxySecret, SecretMode, parse_secret

from .listen import ListenConfig
from .schema import Problems, read_section, setting
from .values import (
    count,
    credential,
    domain,
    limit,
    parse_duration,
    parse_listen_address,
    string,
)


def _read_secrets(
    path: str, data: Any, problems: Problems, base: Path | None
) -> dict[str, ProxySecret]:
    # A table of user names, each with its secret: the problems name the user.
    if not isinstance(data, dict) or not data:
        problems.add(path, 'expected a table like { alice = "dd0123...", bob = "ee4567..." }')
        return {}
    secrets: dict[str, ProxySecret] = {}
    for name, text in data.items():
        where = f"{path}.{name}"
        try:
            credential("user name")(name)
            secret = parse_secret(string(text))
        except ValueError as exc:
            problems.add(where, str(exc))
            continue
        for other, known in secrets.items():
            if known.key == secret.key:
                problems.add(where, f"the same key as {other}'s: each user needs their own")
        secrets[name] = secret
    return secrets


def _read_dcs(path: str, data: Any, problems: Problems, base: Path | None) -> dict[int, str]:
    if not isinstance(data, dict):
        problems.add(path, 'expected a table like { 2 = "149.154.167.51" }')
        return {}
    found: dict[int, str] = {}
    for key, value in data.items():
        where = f"{path}.{key}"
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and 0 < int(key) < 10000):
            problems.add(where, "a DC number (1-9999)")
            continue
        try:
            endpoint = Endpoint.parse(string(value), 443)
        except ValueError as exc:
            problems.add(where, str(exc))
            continue
        if endpoint.ip is None:
            problems.add(where, f"{value!r}: a DC is an IP address")
            continue
        found[int(key)] = str(endpoint)
    return found


def _link_host(value: Any) -> str:
    # What a phone dials: an IP address or a host name (an empty or odd one made links that
    # name no server, and `detour links --json` failed on it).
    text = string(value).strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    try:
        return domain(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or a host name") from None


def _mask(value: Any) -> Endpoint:
    return Endpoint.parse(string(value), 443)


@dataclass(frozen=True)
class MTProtoProxyConfig:
    secrets: Mapping[str, ProxySecret] = setting(
        read=_read_secrets,
        secret=True,
        doc='Users and their secrets: `{ alice = "dd…", bob = "ee…" }`; the name is for logs '
        "and `max_per_user`. A secret is 32 hex digits (plain), `dd` + 32 hex digits (padded: "
        "packet sizes hidden), or `ee` + 32 hex digits + a domain in hex (fake TLS to that "
        "site), or the same bytes in base64url. `detour mtproto secret` makes one.",
        shown="required",
    )
    listen: Endpoint = setting(
        "127.0.0.1:8443",
        parse_listen_address,
        'Address Telegram\'s apps connect to: `"HOST:PORT"`, e.g. `"0.0.0.0:443"` for phones '
        "on the LAN (port 443 looks most like web traffic; below 1024 needs root or "
        "CAP_NET_BIND_SERVICE). Port `0` picks a free port (tests).",
    )
    host: str | None = setting(
        None,
        _link_host,
        "The address the links tell apps to connect to (this machine's LAN address or public "
        "name). Unset: the listen address, or this machine's first LAN address when it "
        "listens on every address.",
        shown="from listen",
    )
    mask: Endpoint | None = setting(
        None,
        _mask,
        "Where a connection goes that is not a valid fake-TLS client (a browser, a prober, a "
        "replay), relayed byte for byte: `HOST[:PORT]`. Unset: the domain of the first `ee` "
        "secret, port 443. Used only with `ee` secrets.",
        shown="the ee secret's domain",
    )
    time_skew: float = setting(
        "20m",
        parse_duration,
        "How far a fake-TLS client's clock may be from this machine's (either way); a "
        "ClientHello outside it is treated as a prober's.",
    )
    replay_cache: int = setting(
        65536,
        count,
        "Fake-TLS ClientHellos and obfuscated2 inits remembered to refuse replays (32 bytes "
        "a hello, 48 an init).",
    )
    dcs: Mapping[int, str] = setting(
        {},
        read=_read_dcs,
        doc='DC addresses instead of the built-in ones: `{ 2 = "149.154.167.51" }` '
        "(transports/mtproto/dcs.py has the built-in table).",
    )
    max_connections: int = setting(
        1024,
        limit,
        "Connections open at once, all clients together; more are closed at once. 0: no limit.",
    )
    max_per_client: int = setting(
        128, limit, "Connections open at once from one client address; 0: no limit."
    )
    max_per_user: int = setting(
        0, limit, "Connections open at once with one user's secret; 0: no limit."
    )
    handshake_timeout: float = setting(
        "10s",
        parse_duration,
        "A client's first bytes (the fake-TLS hello, the 64-byte init) must arrive within it.",
    )
    idle_timeout: float = setting(
        "10m",
        parse_duration,
        "A connection on which nothing moved either way for this long is closed.",
    )

    @property
    def fake_tls(self) -> tuple[ProxySecret, ...]:
        return tuple(s for s in self.secrets.values() if s.mode is SecretMode.FAKE_TLS)


def read_mtproto_proxy(
    data: Any,
    listen: ListenConfig,
    problems: Problems,
    base: Path | None = None,
    below: MTProtoProxyConfig | None = None,
) -> MTProtoProxyConfig:
    config: MTProtoProxyConfig = read_section(
        MTProtoProxyConfig, "mtproto_proxy", data, problems, base, below
    )
    # No check of the listen address against listen.allow: each secret is a login, so an
    # endpoint other machines can reach is as closed as a SOCKS port with users.
    return config
