"""Lists of servers as Clash (Clash.Meta, mihomo) YAML and sing-box JSON give them, read into
the links detour reads (transports/links.py), so each node is checked as any link is.

    Clash:     proxies: [{name, type: ss|vmess|vless|trojan|socks5|http, server, port, ...}]
    sing-box:  {"outbounds": [{type: shadowsocks|vmess|vless|trojan|socks|http, tag, server,
                server_port, ..., "tls": {...}, "transport": {...}}]}

Pure: a parsed document in, (position, link or the reason it is none) out. A proxy of a
kind detour cannot use is refused with its position and its type, never its text (it holds
a password). sing-box's outbounds that are not servers (direct, block, dns, selector,
urltest) are passed over.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote, urlencode

from transports.base import format_hostport

__all__ = ["Entry", "ListError", "clash_links", "looks_like_clash", "read_yaml", "singbox_links"]

# (where, the link) or (where, None, why not)
Entry = tuple[str, str | None, str]

_CLASH = re.compile(r"^(proxies|Proxy)\s*:", re.M)
_NOT_SERVERS = ("direct", "block", "dns", "selector", "urltest")


class ListError(ValueError):
    """The document as a whole cannot be read (one line, no secret)."""


def looks_like_clash(text: str) -> bool:
    return _CLASH.search(text) is not None


def read_yaml(text: str) -> Any:
    """The YAML document (safe loading: plain data only); ListError when it is not YAML."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # a safe loader: plain data only
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        raise ListError("the list is not valid YAML (Clash)") from None


def clash_links(document: Any) -> list[Entry]:
    if not isinstance(document, dict):
        raise ListError("the Clash list is not a YAML mapping")
    proxies = document.get("proxies", document.get("Proxy"))
    if not isinstance(proxies, list):
        raise ListError("Clash: 'proxies' is not a list")
    out: list[Entry] = []
    for i, proxy in enumerate(proxies):
        where = f"proxy {i}"
        if not isinstance(proxy, dict):
            out.append((where, None, "not a mapping"))
            continue
        kind = _text(proxy, "type").lower()
        make = _CLASH_KINDS.get(kind)
        if make is None:
            out.append((where, None, f"type {kind[:20]!r} is not one detour can use"))
            continue
        try:
            out.append((where, make(proxy), ""))
        except ListError as exc:
            out.append((where, None, f"{kind}: {exc}"))
    return out


def singbox_links(document: dict[str, Any]) -> list[Entry]:
    outbounds = document.get("outbounds")
    if not isinstance(outbounds, list):
        raise ListError("sing-box: 'outbounds' is not a list")
    out: list[Entry] = []
    for i, outbound in enumerate(outbounds):
        where = f"outbound {i}"
        if not isinstance(outbound, dict):
            out.append((where, None, "not an object"))
            continue
        kind = _text(outbound, "type").lower()
        if kind in _NOT_SERVERS:
            continue
        make = _SINGBOX_KINDS.get(kind)
        if make is None:
            out.append((where, None, f"type {kind[:20]!r} is not one detour can use"))
            continue
        try:
            out.append((where, make(outbound), ""))
        except ListError as exc:
            out.append((where, None, f"{kind}: {exc}"))
    return out


# --- values ---------------------------------------------------------------------------------


def _text(table: Any, key: str) -> str:
    value = table.get(key, "") if isinstance(table, dict) else ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


def _flag(table: Any, key: str) -> bool:
    value = table.get(key) if isinstance(table, dict) else None
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


def _table(table: Any, key: str) -> dict[str, Any]:
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, dict) else {}


def _words(table: Any, key: str) -> list[str]:
    value = table.get(key) if isinstance(table, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool)]
    return []


def _where(server: dict[str, Any], port_key: str) -> str:
    host, port = _text(server, "server"), _text(server, port_key)
    if not host:
        raise ListError("the server is missing")
    if not port:
        raise ListError("the port is missing")
    return format_hostport(host, port)  # type: ignore[arg-type] - the link parser checks it


def _name(value: str) -> str:
    return "#" + quote(value, safe="") if value else ""


def _url(scheme: str, secret: str, where: str, params: dict[str, str], name: str) -> str:
    if not secret:
        raise ListError("the password or user id is missing")
    query = urlencode({k: v for k, v in params.items() if v}, quote_via=quote)
    return f"{scheme}://{quote(secret, safe='')}@{where}" + ("?" + query if query else "") + name


def _proxy_url(scheme: str, user: str, password: str, where: str, name: str) -> str:
    login = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user or password else ""
    return f"{scheme}://{login}{where}{_name(name)}"


# --- Clash ----------------------------------------------------------------------------------


def _clash_ss(p: dict[str, Any]) -> str:
    if p.get("plugin"):
        raise ListError(f"the plugin {_text(p, 'plugin')[:30]!r} is not supported")
    method, password = quote(_text(p, "cipher"), safe=""), quote(_text(p, "password"), safe="")
    return f"ss://{method}:{password}@{_where(p, 'port')}{_name(_text(p, 'name'))}"


def _clash_transport(p: dict[str, Any]) -> dict[str, str]:
    network = _text(p, "network").lower() or "tcp"
    params = {"type": network}
    if network == "ws":
        ws = _table(p, "ws-opts")
        params["path"] = _text(ws, "path") or _text(p, "ws-path")
        params["host"] = _text(_table(ws, "headers"), "Host")
    elif network == "grpc":
        params["serviceName"] = _text(_table(p, "grpc-opts"), "grpc-service-name")
    elif network in ("h2", "http"):
        h2 = _table(p, "h2-opts") if network == "h2" else _table(p, "http-opts")
        params["type"] = "h2" if network == "h2" else "tcp"
        if network == "http":
            params["headerType"] = "http"
        params["path"] = ",".join(_words(h2, "path"))[:200]
        params["host"] = ",".join(_words(h2, "host") or _words(_table(h2, "headers"), "Host"))
    return params


def _clash_tls(p: dict[str, Any], on: bool, sni_key: str) -> dict[str, str]:
    reality = _table(p, "reality-opts")
    security = "reality" if reality else ("tls" if on else "none")
    return {
        "security": security,
        "sni": _text(p, sni_key),
        "fp": _text(p, "client-fingerprint"),
        "alpn": ",".join(_words(p, "alpn")),
        "allowInsecure": "1" if _flag(p, "skip-cert-verify") else "",
        "pbk": _text(reality, "public-key"),
        "sid": _text(reality, "short-id"),
    }


def _clash_vless(p: dict[str, Any]) -> str:
    params = {**_clash_transport(p), **_clash_tls(p, _flag(p, "tls"), "servername")}
    params["flow"] = _text(p, "flow")
    return _url("vless", _text(p, "uuid"), _where(p, "port"), params, _name(_text(p, "name")))


def _clash_trojan(p: dict[str, Any]) -> str:
    params = {**_clash_transport(p), **_clash_tls(p, True, "sni")}
    return _url("trojan", _text(p, "password"), _where(p, "port"), params, _name(_text(p, "name")))


def _clash_vmess(p: dict[str, Any]) -> str:
    transport = _clash_transport(p)
    tls = _clash_tls(p, _flag(p, "tls"), "servername")
    _where(p, "port")  # says what is missing
    network = transport["type"]
    document = {
        "v": "2",
        "ps": _text(p, "name"),
        "add": _text(p, "server"),
        "port": _text(p, "port"),
        "id": _text(p, "uuid"),
        "aid": _text(p, "alterId") or "0",
        "scy": _text(p, "cipher") or "auto",
        "net": network,
        "type": transport.get("headerType", "none"),
        "host": transport.get("host", ""),
        "path": transport.get("serviceName", "")
        if network == "grpc"
        else transport.get("path", ""),
        "tls": tls["security"] if tls["security"] != "none" else "",
        "sni": tls["sni"],
        "alpn": tls["alpn"],
        "fp": tls["fp"],
        "allowInsecure": tls["allowInsecure"],
    }
    if not document["id"]:
        raise ListError("the password or user id is missing")
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    return f"vmess://{encoded}"


def _clash_socks5(p: dict[str, Any]) -> str:
    if _flag(p, "tls"):
        raise ListError("a SOCKS5 proxy over TLS is not a layer detour has")
    user, password = _text(p, "username"), _text(p, "password")
    return _proxy_url("socks5", user, password, _where(p, "port"), _text(p, "name"))


def _clash_http(p: dict[str, Any]) -> str:
    if _flag(p, "tls"):
        raise ListError("an HTTP proxy over TLS (HTTPS proxy) is not a layer detour has")
    user, password = _text(p, "username"), _text(p, "password")
    return _proxy_url("http", user, password, _where(p, "port"), _text(p, "name"))


_CLASH_KINDS = {
    "ss": _clash_ss,
    "vmess": _clash_vmess,
    "vless": _clash_vless,
    "trojan": _clash_trojan,
    "socks5": _clash_socks5,
    "http": _clash_http,
}


# --- sing-box -------------------------------------------------------------------------------


def _sb_transport(o: dict[str, Any]) -> dict[str, str]:
    transport = _table(o, "transport")
    kind = _text(transport, "type").lower()
    if not kind:
        return {"type": "tcp"}
    if kind == "ws":
        host = _text(_table(transport, "headers"), "Host")
        return {"type": "ws", "path": _text(transport, "path"), "host": host}
    if kind == "grpc":
        return {"type": "grpc", "serviceName": _text(transport, "service_name")}
    if kind == "http":
        hosts = ",".join(_words(transport, "host"))
        return {"type": "h2", "path": _text(transport, "path"), "host": hosts}
    if kind == "httpupgrade":
        host = _text(transport, "host")
        return {"type": "httpupgrade", "path": _text(transport, "path"), "host": host}
    raise ListError(f"transport {kind[:20]!r} is not supported")


def _sb_tls(o: dict[str, Any], default_on: bool = False) -> dict[str, str]:
    tls = _table(o, "tls")
    on = _flag(tls, "enabled") if tls else default_on
    reality = _table(tls, "reality")
    return {
        "security": "reality" if _flag(reality, "enabled") else ("tls" if on else "none"),
        "sni": _text(tls, "server_name"),
        "fp": _text(_table(tls, "utls"), "fingerprint"),
        "alpn": ",".join(_words(tls, "alpn")),
        "allowInsecure": "1" if _flag(tls, "insecure") else "",
        "pbk": _text(reality, "public_key"),
        "sid": _text(reality, "short_id"),
    }


def _sb_ss(o: dict[str, Any]) -> str:
    if o.get("plugin"):
        raise ListError(f"the plugin {_text(o, 'plugin')[:30]!r} is not supported")
    method, password = quote(_text(o, "method"), safe=""), quote(_text(o, "password"), safe="")
    return f"ss://{method}:{password}@{_where(o, 'server_port')}{_name(_text(o, 'tag'))}"


def _sb_vless(o: dict[str, Any]) -> str:
    params = {**_sb_transport(o), **_sb_tls(o), "flow": _text(o, "flow")}
    return _url("vless", _text(o, "uuid"), _where(o, "server_port"), params, _name(_text(o, "tag")))


def _sb_vmess(o: dict[str, Any]) -> str:
    transport, tls = _sb_transport(o), _sb_tls(o)
    where = _where(o, "server_port")
    if _text(o, "alter_id") not in ("", "0"):
        raise ListError("alter_id other than 0 (the legacy VMess header) is not supported")
    params = {**transport, **tls, "encryption": _text(o, "security")}
    return _url("vmess", _text(o, "uuid"), where, params, _name(_text(o, "tag")))


def _sb_trojan(o: dict[str, Any]) -> str:
    params = {**_sb_transport(o), **_sb_tls(o, default_on=True)}
    where = _where(o, "server_port")
    return _url("trojan", _text(o, "password"), where, params, _name(_text(o, "tag")))


def _sb_socks(o: dict[str, Any]) -> str:
    version = _text(o, "version") or "5"
    scheme = {"5": "socks5", "4a": "socks4a", "4": "socks4a"}.get(version)
    if scheme is None:
        raise ListError(f"SOCKS version {version[:5]!r} is not supported")
    user, password = _text(o, "username"), _text(o, "password")
    return _proxy_url(scheme, user, password, _where(o, "server_port"), _text(o, "tag"))


def _sb_http(o: dict[str, Any]) -> str:
    if _flag(_table(o, "tls"), "enabled"):
        raise ListError("an HTTP proxy over TLS (HTTPS proxy) is not a layer detour has")
    user, password = _text(o, "username"), _text(o, "password")
    return _proxy_url("http", user, password, _where(o, "server_port"), _text(o, "tag"))


_SINGBOX_KINDS = {
    "shadowsocks": _sb_ss,
    "vless": _sb_vless,
    "vmess": _sb_vmess,
    "trojan": _sb_trojan,
    "socks": _sb_socks,
    "http": _sb_http,
}
