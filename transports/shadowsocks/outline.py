"""Outline's dynamic access keys (`ssconf://`): the key is a URL, and what it returns over
HTTPS says which Shadowsocks server to use, so a provider can move users to new servers
without handing out new keys.

    ssconf://keys.example.com/SECRET#name   ->   GET https://keys.example.com/SECRET

The answer comes in one of the formats Outline documents (its "Config Reference"):

    ss://...                                     a Shadowsocks link (LegacyShadowsocksURI)
    {"server": ..., "server_port": ..., "method": ..., "password": ..., "prefix": ...}
                                                 JSON or YAML (LegacyShadowsocksConfig)
    transport: {$type: tcpudp, tcp: {$type: shadowsocks, endpoint: HOST:PORT, cipher: ...,
                secret: ..., prefix: ...}, udp: ...}           YAML (ExplicitTunnelConfig)
    error: {message: ..., details: ...}          the provider's refusal (quota, expiry)

The explicit form's `udp` part (a Shadowsocks packet listener: endpoint, cipher, secret; a
prefix there is not used) says where UDP goes; without one, UDP goes to the `tcp` part's
server. A `udp` part detour cannot use leaves TCP working and UDP refused with the reason
(OutlineConfig).

Within the explicit form, `endpoint` may be HOST:PORT, a `dial` endpoint with an address,
or `first-supported` options (the first usable one wins); endpoints over WebSocket and
multi-hop dialers are refused with a message saying so. The body is parsed without
sockets (`parse_outline_config`); `fetch_config` gets it through a Dialer.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..base import Dialer, DialError, Endpoint, Failure, Op
from ..https_get import https_get, read_answer
from .methods import MethodError
from .server import ShadowsocksServer, shadowsocks_server

__all__ = [
    "MAX_CONFIG",
    "OutlineConfig",
    "OutlineKey",
    "OutlineKeyError",
    "fetch_config",
    "parse_outline_config",
    "prefix_bytes",
    "read_outline_config",
]

MAX_CONFIG = 64 * 1024


class OutlineKeyError(ValueError):
    """A dynamic key's answer cannot be used; the message names why (never a secret)."""


@dataclass(frozen=True)
class OutlineKey:
    """A dynamic access key: the HTTPS URL its config comes from (all of it a secret)."""

    url: str = field(repr=False)
    name: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def __repr__(self) -> str:
        return f"OutlineKey(https://{self.host}/***)"

    __str__ = __repr__


def prefix_bytes(text: str, where: str = "prefix") -> bytes:
    """Outline's prefix as text (JSON, YAML, a decoded URL): each character one byte, so
    every code point must be below 256 ("\\u0016\\u0003\\u0001" is 16 03 01)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise OutlineKeyError(
            f"{where}: a character above U+00FF cannot be a byte (write bytes as \\u00XX)"
        ) from None


@dataclass(frozen=True)
class OutlineConfig:
    """What an Outline config says: the server for TCP, and for UDP a server of its own
    (`udp`), or the TCP one (None), or the reason its `udp` part cannot be used."""

    tcp: ShadowsocksServer
    udp: ShadowsocksServer | None = None
    udp_refusal: str | None = None

    @property
    def udp_server(self) -> ShadowsocksServer:
        """Where UDP goes; OutlineKeyError when the config's `udp` part cannot be used."""
        if self.udp_refusal is not None:
            raise OutlineKeyError(self.udp_refusal)
        return self.udp or self.tcp


def parse_outline_config(
    body: bytes, parse_ss: Callable[[str], ShadowsocksServer]
) -> ShadowsocksServer:
    """The server an Outline config names for TCP. `parse_ss` parses an ss:// link (links.py)."""
    return read_outline_config(body, parse_ss).tcp


def read_outline_config(body: bytes, parse_ss: Callable[[str], ShadowsocksServer]) -> OutlineConfig:
    """What an Outline config names, for TCP and for UDP. `parse_ss` parses an ss:// link."""
    if len(body) > MAX_CONFIG:
        raise OutlineKeyError(f"the config is larger than {MAX_CONFIG // 1024} KiB")
    try:
        text = body.decode("utf-8").strip().lstrip("\ufeff")
    except UnicodeDecodeError:
        raise OutlineKeyError("the config is not UTF-8 text") from None
    if not text:
        raise OutlineKeyError("the config is empty")
    if text.lower().startswith("ss://"):
        return OutlineConfig(parse_ss(text.split()[0]))
    document = _load(text)
    if not isinstance(document, dict):
        raise OutlineKeyError(
            "the config is neither an ss:// link nor a JSON or YAML object of the kinds "
            "Outline documents"
        )
    if "error" in document:
        raise OutlineKeyError(f"the key's server refused: {_error_text(document['error'])}")
    if "transport" in document:
        return _explicit(document["transport"])
    if "server" in document or "method" in document:
        return OutlineConfig(_legacy(document))
    raise OutlineKeyError(
        "the config has neither transport nor server/method keys (the formats Outline documents)"
    )


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        import yaml
    except ImportError:  # pragma: no cover - a dependency
        raise OutlineKeyError(
            "the config is YAML, which needs the pyyaml package (pip install pyyaml)"
        ) from None
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        raise OutlineKeyError("the config is not valid JSON or YAML") from None


def _error_text(error: Any) -> str:
    from ..children import printable

    if isinstance(error, dict):
        message = error.get("message")
        details = error.get("details")
        parts = [str(part) for part in (message, details) if part]
        return printable(" - ".join(parts) or "no reason given", 200)
    return printable(str(error), 200)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise OutlineKeyError(f"{what} must be a non-empty string")
    return value


def _server(
    address: Endpoint, cipher: Any, secret: Any, prefix: Any, where: str
) -> ShadowsocksServer:
    method = _text(cipher, f"{where}: cipher")
    password = _text(secret, f"{where}: the secret")
    raw_prefix = b"" if prefix in (None, "") else prefix_bytes(_text(prefix, f"{where}: prefix"))
    try:
        return shadowsocks_server(address.host, address.port, method, password, raw_prefix)
    except (MethodError, ValueError) as exc:
        raise OutlineKeyError(f"{where}: {exc}") from None


def _legacy(document: dict[str, Any]) -> ShadowsocksServer:
    host = _text(document.get("server"), "server")
    port = document.get("server_port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise OutlineKeyError("server_port must be a port number 1-65535")
    return _server(
        Endpoint(host, port),
        document.get("method"),
        document.get("password"),
        document.get("prefix"),
        "the config",
    )


def _explicit(transport: Any) -> OutlineConfig:
    if not isinstance(transport, dict) or transport.get("$type") != "tcpudp":
        kind = transport.get("$type") if isinstance(transport, dict) else None
        raise OutlineKeyError(f"transport $type {kind!r} is not supported (tcpudp)")
    tcp = _dialer(transport.get("tcp"), "transport.tcp")
    if transport.get("udp") is None:
        return OutlineConfig(tcp)
    try:
        return OutlineConfig(tcp, _listener(transport["udp"], "transport.udp"))
    except OutlineKeyError as exc:
        return OutlineConfig(tcp, udp_refusal=str(exc))


def _listener(config: Any, where: str) -> ShadowsocksServer:
    """A packet listener (the `udp` part): Shadowsocks UDP, which has no prefix. A prefix
    disguises a TCP stream's first bytes; UDP packets have none (a `udp: *shared` anchor
    that carries the tcp part's prefix is common), so it is not read here."""
    return _shadowsocks(config, where, "UDP packet listener", prefix=False)


def _dialer(config: Any, where: str) -> ShadowsocksServer:
    """A stream dialer (the `tcp` part), its prefix included."""
    return _shadowsocks(config, where, "TCP dialer", prefix=True)


def _shadowsocks(config: Any, where: str, what: str, *, prefix: bool) -> ShadowsocksServer:
    if not isinstance(config, dict):
        raise OutlineKeyError(f"{where}: no {what} is given")
    kind = config.get("$type")
    if kind == "first-supported":
        return _first(
            config.get("options"),
            where,
            lambda option, at: _shadowsocks(option, at, what, prefix=prefix),
        )
    if kind != "shadowsocks":
        raise OutlineKeyError(f"{where}: $type {kind!r} is not supported (shadowsocks)")
    address = _endpoint(config.get("endpoint"), f"{where}.endpoint")
    raw_prefix = config.get("prefix") if prefix else None
    return _server(address, config.get("cipher"), config.get("secret"), raw_prefix, where)


def _endpoint(config: Any, where: str) -> Endpoint:
    if isinstance(config, str):
        try:
            endpoint = Endpoint.parse(config)
        except ValueError:
            raise OutlineKeyError(f"{where}: {config!r} is not HOST:PORT") from None
        if endpoint.port == 0:
            raise OutlineKeyError(f"{where}: port 0 is not a server port")
        return endpoint
    if not isinstance(config, dict):
        raise OutlineKeyError(f"{where}: give HOST:PORT")
    kind = config.get("$type")
    if kind == "first-supported":
        return _first(config.get("options"), where, _endpoint)
    if kind == "dial":
        if config.get("dialer") is not None:
            raise OutlineKeyError(
                f"{where}: dialing the server through another dialer (multi-hop) is not "
                "supported; write the hops as layers of a chain"
            )
        return _endpoint(config.get("address"), f"{where}.address")
    if kind == "websocket":
        raise OutlineKeyError(f"{where}: Shadowsocks over WebSocket endpoints are not supported")
    raise OutlineKeyError(f"{where}: endpoint $type {kind!r} is not supported (dial)")


def _first(options: Any, where: str, parse: Callable[[Any, str], Any]) -> Any:
    if not isinstance(options, list) or not options:
        raise OutlineKeyError(f"{where}: first-supported needs a list of options")
    reasons = []
    for position, option in enumerate(options[:16]):
        try:
            return parse(option, f"{where}.options[{position}]")
        except OutlineKeyError as exc:
            reasons.append(str(exc))
    raise OutlineKeyError(f"{where}: none of the options is supported ({'; '.join(reasons)})")


# --- fetching ---------------------------------------------------------------------------------


async def fetch_config(
    dialer: Dialer, url: str, tls: ssl.SSLContext | None, timeout: float
) -> bytes:
    """GET `url` (https) through `dialer`; the body of a 200 answer read whole, following a
    few redirects to other https URLs (transports/https_get.py). DialError names what failed,
    never the URL's path."""
    return await https_get(
        dialer, url, tls, timeout, MAX_CONFIG, who=_the_keys_server, too_large=_too_large
    )


def parse_response(data: bytes) -> tuple[int, str, bytes]:
    """(status, Location, body) of an HTTP/1.1 response read to its end: the body whole (an
    answer cut short is an error, not a shorter config) and at most MAX_CONFIG."""
    return read_answer(data, MAX_CONFIG, "the key's server", _too_large)


def _the_keys_server(host: str) -> str:
    return f"the key's server {host}"


def _too_large(limit: int) -> DialError:
    return DialError(
        Failure.PROXY_PROTOCOL_ERROR,
        Op.HTTP_ROUND_TRIP,
        f"the key's config is larger than {limit // 1024} KiB",
    )
