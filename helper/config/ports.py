"""Listeners that would take the same TCP address: `config check` names both keys, instead of
the second failing with "address in use" when detour starts."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from .schema import Problems

_LOCALHOST = ("127.0.0.1", "::1")


def _addresses(host: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    hosts = _LOCALHOST if host == "localhost" else (host.strip("[]"),)
    found = []
    for one in hosts:
        try:
            found.append(ipaddress.ip_address(one))
        except ValueError:
            pass
    return tuple(found)


def _overlap(a: str, b: str) -> bool:
    """Whether binding both could collide: the same address, or one of them every address of
    the other's family (an IPv6 wildcard may take IPv4 too: a dual-stack socket)."""
    for x in _addresses(a):
        for y in _addresses(b):
            if x == y:
                return True
            if x.version == y.version and (x.is_unspecified or y.is_unspecified):
                return True
    return False


def _listeners(sections: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    listen = sections.get("listen")
    if listen is not None:
        yield "listen.mixed", listen.mixed.host, listen.mixed.port
        if listen.transparent is not None:
            yield "listen.transparent", listen.transparent.host, listen.transparent.port
    api = sections.get("api")
    if api is not None and api.listen is not None:
        yield "api.listen", api.listen.host, api.listen.port
    for name in ("mtproto_proxy", "signal_proxy"):
        proxy = sections.get(name)
        if proxy is not None and proxy.listen is not None:
            yield f"{name}.listen", proxy.listen.host, proxy.listen.port
    whatsapp = sections.get("whatsapp_proxy")
    if whatsapp is not None and whatsapp.listen is not None:
        for key in ("tls_port", "chat_port", "http_port"):
            if getattr(whatsapp, key):
                yield f"whatsapp_proxy.{key}", whatsapp.listen, getattr(whatsapp, key)
        for number in whatsapp.media_ports:
            yield "whatsapp_proxy.media_ports", whatsapp.listen, number


def check_ports(sections: dict[str, Any], problems: Problems) -> None:
    """A problem for each listener whose TCP address another section's listener takes too
    (port 0, any free port, never collides; whatsapp_proxy checks its own ports)."""
    seen: list[tuple[str, str, int]] = []
    for key, host, port in _listeners(sections):
        for other, other_host, other_port in seen:
            same_section = key.split(".")[0] == other.split(".")[0] == "whatsapp_proxy"
            if port and port == other_port and not same_section and _overlap(host, other_host):
                problems.add(key, f"port {port} on {host} is also {other}'s; give it another")
                break
        seen.append((key, host, port))
