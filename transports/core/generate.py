"""A core's config for one link: a SOCKS5 inbound on loopback with a random login (so no
other program on this computer can use it), and one outbound to the link's server.

The inbound takes UDP ASSOCIATE too (docs/udp.md "UDP through a proxy core"): xray and v2ray
relay the datagrams on the inbound's own port number (`udp`, `ip` below), sing-box on a
port of its own per association; detour's datagrams then go through the upstream-SOCKS5
path (transports/datagram.py) to the core, which carries them to the server inside the
link's protocol. The cores check no login on those datagrams (RFC 1928 has none for them):
any program on this computer that finds the port can send through it, as it can on any
SOCKS5 proxy's UDP relay.

xray and v2ray read the same JSON layout (v2ray's "v4" format); sing-box has its own.
Everything a link carries is written out, including what a core cannot do (REALITY for
v2ray): programs.cannot() refuses such links before a config is ever written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .programs import CoreProgram
from .spec import CoreLink

__all__ = ["Inbound", "core_config"]


@dataclass(frozen=True)
class Inbound:
    """Where the core takes SOCKS5 requests, and the login it wants."""

    port: int
    username: str
    password: str = field(repr=False)


def core_config(
    core: CoreProgram, link: CoreLink, inbound: Inbound, ca_file: str | None = None
) -> str:
    """The config file's text (JSON). `ca_file`: certificates xray is to trust besides its
    own roots (detour's [tls] extra_ca): xray is told in its TLS settings, since the builds
    that carry their own root store read no SSL_CERT_FILE (docs/cores.md)."""
    if core.kind == "sing-box":
        document = _sing_box(link, inbound)
    else:
        document = _v4(core, link, inbound, ca_file if core.kind == "xray" else None)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- xray / v2ray -------------------------------------------------------------------------


def _v4(core: CoreProgram, link: CoreLink, inbound: Inbound, ca_file: str | None) -> dict[str, Any]:
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {
                "tag": "detour",
                "listen": "127.0.0.1",
                "port": inbound.port,
                "protocol": "socks",
                "settings": {
                    "auth": "password",
                    "accounts": [{"user": inbound.username, "pass": inbound.password}],
                    "udp": True,
                    "ip": "127.0.0.1",  # the relay address UDP ASSOCIATE answers
                },
            }
        ],
        "outbounds": [
            {
                "tag": "server",
                "protocol": link.protocol,
                "settings": _v4_settings(link),
                "streamSettings": _v4_stream(core, link, ca_file),
            }
        ],
    }


def _v4_settings(link: CoreLink) -> dict[str, Any]:
    server: dict[str, Any] = {"address": link.address.host, "port": link.address.port}
    if link.protocol == "trojan":
        server["password"] = link.secret
        return {"servers": [server]}
    user: dict[str, Any] = {"id": link.secret}
    if link.protocol == "vless":
        user["encryption"] = "none"
        if link.flow:
            user["flow"] = link.flow
    else:
        user["alterId"] = link.alter_id
        user["security"] = link.cipher or "auto"
    server["users"] = [user]
    return {"vnext": [server]}


def _v4_stream(core: CoreProgram, link: CoreLink, ca_file: str | None) -> dict[str, Any]:
    network = {"h2": "http"}.get(link.network, link.network)
    stream: dict[str, Any] = {"network": network, "security": link.security}
    if link.security == "tls":
        tls: dict[str, Any] = {"serverName": link.server_name, "allowInsecure": link.insecure}
        if link.alpn:
            tls["alpn"] = list(link.alpn)
        if link.fingerprint:
            tls["fingerprint"] = link.fingerprint
        if ca_file:
            # Added to xray's roots, not in their place.
            tls["certificates"] = [{"usage": "verify", "certificateFile": ca_file}]
        stream["tlsSettings"] = tls
    elif link.security == "reality":
        stream["realitySettings"] = {
            "serverName": link.sni,
            "fingerprint": link.fingerprint or "chrome",
            "publicKey": link.public_key,
            "shortId": link.short_id,
            "spiderX": link.spider_x,
        }
    if link.network == "tcp" and link.header_type == "http":
        stream["tcpSettings"] = {
            "header": {
                "type": "http",
                "request": {
                    "path": [link.path or "/"],
                    "headers": {"Host": [link.host or link.address.host]},
                },
            }
        }
    elif link.network == "ws":
        ws: dict[str, Any] = {"path": link.path or "/"}
        if link.host:
            ws["headers"] = {"Host": link.host}
        stream["wsSettings"] = ws
    elif link.network == "grpc":
        stream["grpcSettings"] = {
            "serviceName": link.service_name,
            "multiMode": link.mode == "multi",
        }
    elif link.network == "httpupgrade":
        stream["httpupgradeSettings"] = {"path": link.path or "/", "host": link.host}
    elif link.network == "xhttp":
        stream["xhttpSettings"] = {
            "path": link.path or "/",
            "host": link.host,
            "mode": link.mode or "auto",
        }
    elif link.network == "h2":
        http: dict[str, Any] = {"path": link.path or "/"}
        if link.host:
            http["host"] = [link.host]
        stream["httpSettings"] = http
    return stream


# --- sing-box -------------------------------------------------------------------------------


def _sing_box(link: CoreLink, inbound: Inbound) -> dict[str, Any]:
    outbound: dict[str, Any] = {
        "type": link.protocol,
        "tag": "server",
        "server": link.address.host,
        "server_port": link.address.port,
    }
    if link.protocol == "trojan":
        outbound["password"] = link.secret
    else:
        outbound["uuid"] = link.secret
    if link.protocol == "vless" and link.flow:
        outbound["flow"] = link.flow
    if link.protocol == "vmess":
        outbound["security"] = link.cipher or "auto"
        outbound["alter_id"] = link.alter_id
    if link.security != "none":
        tls: dict[str, Any] = {
            "enabled": True,
            "server_name": link.server_name,
            "insecure": link.insecure,
        }
        if link.alpn:
            tls["alpn"] = list(link.alpn)
        if link.fingerprint or link.security == "reality":
            tls["utls"] = {"enabled": True, "fingerprint": link.fingerprint or "chrome"}
        if link.security == "reality":
            tls["reality"] = {
                "enabled": True,
                "public_key": link.public_key,
                "short_id": link.short_id,
            }
        outbound["tls"] = tls
    transport = _sing_box_transport(link)
    if transport:
        outbound["transport"] = transport
    return {
        "log": {"level": "warn"},
        "inbounds": [
            {
                "type": "socks",
                "tag": "detour",
                "listen": "127.0.0.1",
                "listen_port": inbound.port,
                "users": [{"username": inbound.username, "password": inbound.password}],
            }
        ],
        "outbounds": [outbound],
    }


def _sing_box_transport(link: CoreLink) -> dict[str, Any] | None:
    if link.network == "ws":
        ws: dict[str, Any] = {"type": "ws", "path": link.path or "/"}
        if link.host:
            ws["headers"] = {"Host": link.host}
        return ws
    if link.network == "grpc":
        return {"type": "grpc", "service_name": link.service_name}
    if link.network == "httpupgrade":
        upgrade: dict[str, Any] = {"type": "httpupgrade", "path": link.path or "/"}
        if link.host:
            upgrade["host"] = link.host
        return upgrade
    if link.network == "h2":
        http: dict[str, Any] = {"type": "http", "path": link.path or "/"}
        if link.host:
            http["host"] = [link.host]
        return http
    return None
