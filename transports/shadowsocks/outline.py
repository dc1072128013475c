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

Within the explicit form, `endpoint` may be HOST:PORT, a `dial` endpoint with an address,
or `first-supported` options (the first usable one wins); endpoints over WebSocket and
multi-hop dialers are refused with a message saying so. The body is parsed without
sockets (`parse_outline_config`); `fetch_config` gets it through a Dialer.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..base import Dialer, DialError, Endpoint, Failure, Op
from ..tls import tls_connect
from ..wire import ProtocolError, parse_response_head
from .methods import MethodError
from .server import ShadowsocksServer, shadowsocks_server

__all__ = [
    "MAX_CONFIG",
    "OutlineKey",
    "OutlineKeyError",
    "fetch_config",
    "parse_outline_config",
    "prefix_bytes",
]

MAX_CONFIG = 64 * 1024
MAX_REDIRECTS = 3


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


def parse_outline_config(
    body: bytes, parse_ss: Callable[[str], ShadowsocksServer]
) -> ShadowsocksServer:
    """The server an Outline config names. `parse_ss` parses an ss:// link (links.py)."""
    if len(body) > MAX_CONFIG:
        raise OutlineKeyError(f"the config is larger than {MAX_CONFIG // 1024} KiB")
    try:
        text = body.decode("utf-8").strip().lstrip("\ufeff")
    except UnicodeDecodeError:
        raise OutlineKeyError("the config is not UTF-8 text") from None
    if not text:
        raise OutlineKeyError("the config is empty")
    if text.lower().startswith("ss://"):
        return parse_ss(text.split()[0])
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
        return _legacy(document)
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


def _explicit(transport: Any) -> ShadowsocksServer:
    if not isinstance(transport, dict) or transport.get("$type") != "tcpudp":
        kind = transport.get("$type") if isinstance(transport, dict) else None
        raise OutlineKeyError(f"transport $type {kind!r} is not supported (tcpudp)")
    return _dialer(transport.get("tcp"), "transport.tcp")


def _dialer(config: Any, where: str) -> ShadowsocksServer:
    if not isinstance(config, dict):
        raise OutlineKeyError(f"{where}: no TCP dialer is given")
    kind = config.get("$type")
    if kind == "first-supported":
        return _first(config.get("options"), where, _dialer)
    if kind != "shadowsocks":
        raise OutlineKeyError(f"{where}: $type {kind!r} is not supported (shadowsocks)")
    address = _endpoint(config.get("endpoint"), f"{where}.endpoint")
    return _server(address, config.get("cipher"), config.get("secret"), config.get("prefix"), where)


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
    """GET `url` (https) through `dialer`; the body of a 200 answer, following a few
    redirects to other https URLs. DialError names what failed, never the URL's path."""
    context = tls or ssl.create_default_context()
    async with asyncio.timeout(timeout):
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = await _get(dialer, url, context, timeout)
            if status in (301, 302, 303, 307, 308) and location:
                if not location.startswith("https://"):
                    raise DialError(
                        Failure.HTTP_BLOCKPAGE, Op.HTTP_ROUND_TRIP,
                        "the key's server redirected to a non-HTTPS address",
                    )  # fmt: skip
                url = location
                continue
            if status != 200:
                raise DialError(
                    Failure.PROXY_REFUSED,
                    Op.HTTP_ROUND_TRIP,
                    f"the key's server {urlsplit(url).hostname} answered HTTP {status}",
                )
            return body
    raise DialError(
        Failure.PROXY_PROTOCOL_ERROR, Op.HTTP_ROUND_TRIP, "the key's server redirected too often"
    )


async def _get(
    dialer: Dialer, url: str, context: ssl.SSLContext, timeout: float
) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or 443
    except ValueError:
        raise DialError(Failure.UNKNOWN, Op.CONNECT, "the key's URL has an invalid port") from None
    stream = await dialer.dial(Endpoint(host, port))
    try:
        tls = await tls_connect(stream, context, host, timeout=timeout)
    except ValueError as exc:
        stream.abort()
        raise DialError(Failure.SSL_FAILED_HANDSHAKE, Op.TLS_HANDSHAKE, str(exc)) from None
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = host if port == 443 else f"{host}:{port}"
        if ":" in host:
            authority = f"[{host}]" if port == 443 else f"[{host}]:{port}"
        tls.write(
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\n"
            "User-Agent: detour\r\nConnection: close\r\n\r\n".encode()
        )
        await tls.drain()
        data = bytearray()
        while chunk := await tls.read(65536):
            data += chunk
            if len(data) > MAX_CONFIG + 16384:
                raise DialError(
                    Failure.PROXY_PROTOCOL_ERROR,
                    Op.HTTP_ROUND_TRIP,
                    f"the key's config is larger than {MAX_CONFIG // 1024} KiB",
                )
    except OSError as exc:
        from ..base import classify_os_error

        raise classify_os_error(exc, Op.HTTP_ROUND_TRIP) from None
    finally:
        tls.close()
    return parse_response(bytes(data))


def parse_response(data: bytes) -> tuple[int, str, bytes]:
    """(status, Location, body) of an HTTP/1.1 response read to its end."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR, Op.HTTP_ROUND_TRIP, "the key's server sent no HTTP answer"
        )
    try:
        response = parse_response_head(head + separator)
    except ProtocolError:
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR, Op.HTTP_ROUND_TRIP, "the key's server sent no HTTP answer"
        ) from None
    if "chunked" in (response.header("transfer-encoding") or "").lower():
        body = _dechunk(body)
    elif (length := response.content_length) is not None:
        body = body[:length]
    return response.status, response.header("location") or "", body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, separator, rest = body.partition(b"\r\n")
        if not separator:
            break
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise DialError(
                Failure.PROXY_PROTOCOL_ERROR,
                Op.HTTP_ROUND_TRIP,
                "the key's server sent a bad chunk",
            ) from None
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
