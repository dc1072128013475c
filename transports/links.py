"""Links people are handed for their own servers, as route layers, and back.

    ss://BASE64(method:password)@host:port/?prefix=...#name     SIP002 (also Outline keys)
    ss://method:password@host:port#name                         SIP002, plain (2022 keys)
    ss://BASE64(method:password@host:port)#name                 the legacy form
    ssconf://host/path#name                                     Outline dynamic key
    vless://UUID@host:port?type=ws&security=tls&sni=...#name    the Xray share-link form
    vmess://BASE64(JSON)                                        v2rayN's form (and the
    vmess://UUID@host:port?...                                  URL form, as vless)
    trojan://password@host:port?security=tls&sni=...#name

`parse_link(text)` gives a validated chain Layer (`ss`, `ssconf`, `vless`, `vmess`,
`trojan`) or raises LinkError with one line naming the problem; `link_text(layer)` gives
the link back (the round trip keeps everything detour uses; a link's unknown parameters
are dropped). Nothing here quotes a password, key, UUID or dynamic-key URL: errors name
the part that is wrong, and `show_link` / str(layer) print links with the secret as ***.

These are what `detour add` and subscriptions read; a chain string may hold the same link
as one of its layers (`socks5://127.0.0.1:9050 | ss://...`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .base import Endpoint, format_hostport
from .core.spec import CoreLink, CoreLinkError
from .shadowsocks.methods import MethodError, method_named
from .shadowsocks.outline import OutlineKey, OutlineKeyError, prefix_bytes
from .shadowsocks.server import ShadowsocksServer

if TYPE_CHECKING:
    from .chain import Layer

__all__ = [
    "LINK_SCHEMES",
    "LinkError",
    "Recognised",
    "link_text",
    "parse_core_link",
    "parse_link",
    "parse_ss",
    "parse_ssconf",
    "recognise_link",
    "show_link",
    "suggested_name",
]

LINK_SCHEMES = ("ss", "ssconf", "vless", "vmess", "trojan")
MAX_LINK = 8192


class LinkError(ValueError):
    """A link is not valid: one line naming the problem, never the secret."""


def parse_link(text: str) -> Layer:
    """A link as a validated chain layer; LinkError (one line) when it is not valid."""
    from .chain import ChainError, parse_layer

    scheme = _scheme(text)
    try:
        return parse_layer(text.strip())
    except ChainError as exc:
        message = str(exc)
        prefix = f"{scheme}: "
        raise LinkError(message if message.startswith(prefix) else prefix + message) from None


def link_text(layer: Layer) -> str:
    """The link for a layer this module parses (secrets included: for the config file and
    the user's clipboard only)."""
    params = layer.params
    if layer.name == "ss":
        return format_ss(params["server"])
    if layer.name == "ssconf":
        return format_ssconf(params["key"])
    if layer.name in ("vless", "vmess", "trojan"):
        return format_core_link(params["link"])
    raise LinkError(f"a {layer.name} layer is not a link ({', '.join(LINK_SCHEMES)})")


def _scheme(text: str) -> str:
    if not isinstance(text, str):
        raise LinkError("a link is text")
    if len(text) > MAX_LINK:
        raise LinkError(f"the link is longer than {MAX_LINK} characters")
    scheme, sep, _ = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in LINK_SCHEMES:
        raise LinkError(f"not a link detour reads (links start with {', '.join(LINK_SCHEMES)}://)")
    return scheme


# --- common pieces ------------------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    """Base64 as links write it: standard or URL-safe alphabet, padding optional."""
    cleaned = re.sub(r"\s", "", text)
    if not cleaned or not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", cleaned):
        raise LinkError(f"{what} is not base64")
    cleaned = cleaned.rstrip("=").replace("-", "+").replace("_", "/")
    if len(cleaned) % 4 == 1:
        raise LinkError(f"{what} is not base64 (its length is wrong)")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise LinkError(f"{what} is not base64") from None


def _host_port(netloc: str, where: str) -> Endpoint:
    """host:port after the userinfo; IPv6 in brackets; the port is required."""
    if not netloc:
        raise LinkError(f"{where}: the server address is missing")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise LinkError(f"{where}: an IPv6 address is missing its ']'")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if not rest.startswith(":"):
            raise LinkError(f"{where}: the port is missing (HOST:PORT)")
        port_text = rest[1:]
    else:
        host, colon, port_text = netloc.rpartition(":")
        if not colon:
            raise LinkError(f"{where}: the port is missing (HOST:PORT)")
        if ":" in host:
            raise LinkError(f"{where}: write IPv6 addresses in brackets ([ADDRESS]:PORT)")
    if not host:
        raise LinkError(f"{where}: the server's host is missing")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise LinkError(f"{where}: the port must be a number 1-65535")
    if any(ch.isspace() or ch in "/?#@\\" or ord(ch) < 32 for ch in host):
        raise LinkError(f"{where}: the server's host is not a valid name or address")
    try:
        return Endpoint(host, int(port_text))
    except ValueError:
        raise LinkError(f"{where}: the server address is not valid") from None


def _split(text: str, scheme: str) -> tuple[str, str, str, str]:
    """(userinfo, host:port, query, fragment) of scheme://userinfo@host:port/?query#fragment.
    The userinfo runs to the last '@' of the authority (passwords in sloppy links hold '@'
    unescaped), as transports/chain.py reads proxy URLs (urlsplit)."""
    body = text.strip()[len(scheme) + 3 :]
    body, _, fragment = body.partition("#")
    # RFC 3986: the authority ends at the first '/' or '?', its userinfo at its last '@'
    # (a query's `path=/ws@x` is no userinfo). With no '@' there, one further on ends a
    # userinfo holding '/' or '?' unescaped (standard base64 in ss:// links has '/').
    authority = re.match(r"[^/?]*", body).group(0)  # type: ignore[union-attr]
    at = authority.rfind("@") if "@" in authority else body.rfind("@")
    userinfo, rest = (body[:at], body[at + 1 :]) if at >= 0 else ("", body)
    end = len(rest)
    for mark in "/?":
        position = rest.find(mark)
        if position >= 0:
            end = min(end, position)
    netloc, tail = rest[:end], rest[end:]
    if "@" in fragment or (at >= 0 and "@" in tail):  # a password cut at a '/', '?', '#'?
        try:
            _host_port(netloc, scheme)
        except LinkError:
            raise LinkError(
                f"{scheme}: no server address before the first '/', '?' or '#' (an '@' comes "
                "after it); percent-encode '/' (%2F), '?' (%3F) and '#' (%23) in a password"
            ) from None
    query = tail.partition("?")[2]
    return userinfo, netloc, query, unquote(fragment)


def _query(query: str, where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in values and values[key] != value:
            raise LinkError(f"{where}: {key}= is given twice")
        values[key] = value
    return values


def _quote(text: str) -> str:
    return quote(text, safe="")


# --- ss:// ----------------------------------------------------------------------------------


def parse_ss(text: str) -> ShadowsocksServer:
    """An ss:// link (SIP002, plain or base64 userinfo, or the legacy all-base64 form)."""
    if not text.strip().lower().startswith("ss://"):
        raise LinkError("ss: a Shadowsocks link starts with ss://")
    userinfo, netloc, query, name = _split(text, "ss")
    if not userinfo:
        # Legacy: ss://BASE64(method:password@host:port)
        decoded = _decoded_text(_b64decode(unquote(netloc), "ss: the link"), "ss: the link")
        userinfo, _, netloc = decoded.rpartition("@")
        if not userinfo:
            raise LinkError("ss: the link names no cipher and password (METHOD:PASSWORD@HOST:PORT)")
        method, colon, password = userinfo.partition(":")
    else:
        plain = unquote(userinfo)
        if ":" in plain:
            method, colon, password = plain.partition(":")
        else:
            decoded = _decoded_text(_b64decode(plain, "ss: the user info"), "ss: the user info")
            method, colon, password = decoded.partition(":")
    if not colon:
        raise LinkError("ss: the user info is not METHOD:PASSWORD")
    address = _host_port(netloc, "ss")
    params = _query(query, "ss")
    plugin = params.get("plugin", "")
    if plugin:
        plugin_name = plugin.split(";")[0].strip()[:40]
        raise LinkError(
            f"ss: the plugin {plugin_name!r} is not supported (detour speaks plain Shadowsocks; "
            "run the plugin's client yourself and chain through it)"
        )
    prefix = b""
    if "prefix" in params:
        try:
            prefix = prefix_bytes(params["prefix"], "ss: prefix")
        except OutlineKeyError as exc:
            raise LinkError(str(exc)) from None
    try:
        return ShadowsocksServer(address, method_named(method), password, prefix, name)
    except MethodError as exc:
        raise LinkError(f"ss: {exc}") from None


def _decoded_text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LinkError(f"{what} is not text once decoded from base64") from None


def format_ss(server: ShadowsocksServer) -> str:
    """SIP002: base64url user info for the AEAD ciphers, plain for the 2022 ones (as SIP022's
    URL document writes them); Outline's prefix as a query parameter."""
    method = server.method.name
    if server.method.edition == 2022:
        userinfo = f"{_quote(method)}:{_quote(server.password)}"
    else:
        raw = f"{method}:{server.password}".encode()
        userinfo = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    text = f"ss://{userinfo}@{_netloc(server.address)}"
    if server.prefix:
        text += "/?prefix=" + _quote(server.prefix.decode("latin-1"))
    if server.name:
        text += "#" + _quote(server.name)
    return text


def _netloc(address: Endpoint) -> str:
    return format_hostport(address.host, address.port)


# --- ssconf:// ------------------------------------------------------------------------------


def parse_ssconf(text: str) -> OutlineKey:
    """An Outline dynamic key: ssconf://HOST[:PORT]/PATH -> https://HOST[:PORT]/PATH."""
    stripped = text.strip()
    if not stripped.lower().startswith("ssconf://"):
        raise LinkError("ssconf: a dynamic key starts with ssconf://")
    rest, _, fragment = stripped[len("ssconf://") :].partition("#")
    if any(ch.isspace() or ord(ch) < 32 for ch in rest):
        raise LinkError("ssconf: the key holds spaces or control characters")
    url = "https://" + rest
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise LinkError("ssconf: the key's host or port is not valid") from None
    if not parts.hostname:
        raise LinkError("ssconf: the key names no host (ssconf://HOST/PATH)")
    if port == 0:
        raise LinkError("ssconf: port 0 is not valid")
    if parts.username is not None:
        raise LinkError("ssconf: the key must not hold a user name")
    return OutlineKey(url, unquote(fragment))


def format_ssconf(key: OutlineKey) -> str:
    text = "ssconf://" + key.url[len("https://") :]
    if key.name:
        text += "#" + _quote(key.name)
    return text


# --- vless:// vmess:// trojan:// --------------------------------------------------------------


def parse_core_link(text: str) -> CoreLink:
    """A vless://, vmess:// or trojan:// link."""
    scheme = _scheme(text)
    if scheme not in ("vless", "vmess", "trojan"):
        raise LinkError(f"{scheme}: not a vless, vmess or trojan link")
    stripped = text.strip()
    body = stripped[len(scheme) + 3 :]
    try:
        if scheme == "vmess" and "@" not in body.partition("#")[0]:
            return _vmess_json(body)
        return _url_link(scheme, stripped)
    except CoreLinkError as exc:
        message = str(exc)
        raise LinkError(message if message.startswith(scheme) else f"{scheme}: {message}") from None


_BOOLEAN_TRUE = ("1", "true", "yes", "on")


def _url_link(scheme: str, text: str) -> CoreLink:
    userinfo, netloc, query, name = _split(text, scheme)
    if not userinfo:
        what = "password" if scheme == "trojan" else "user id (UUID)"
        raise LinkError(f"{scheme}: the {what} before '@' is missing")
    address = _host_port(netloc, scheme)
    params = _query(query, scheme)
    network = params.get("type", "tcp").lower() or "tcp"
    network = {"http": "h2", "splithttp": "xhttp"}.get(network, network)
    if network in ("kcp", "mkcp", "quic"):
        raise LinkError(f"{scheme}: transport type={network} is not supported (UDP transports)")
    security = params.get("security", "tls" if scheme == "trojan" else "none").lower() or "none"
    if security == "xtls":
        raise LinkError(f"{scheme}: security=xtls is obsolete (XTLS moved to flow= with tls)")
    # headerType means something only for tcp (http camouflage); other transports' header
    # types (kcp, quic) do not apply.
    header_type = (
        (params.get("headerType", "none").lower() or "none") if network == "tcp" else "none"
    )
    mode = params.get("mode", "")
    if network == "grpc" and mode == "":
        mode = "multi" if params.get("multiMode", "").lower() in _BOOLEAN_TRUE else ""
    return CoreLink(
        protocol=scheme,
        address=address,
        secret=unquote(userinfo),
        network=network,
        security=security,
        sni=params.get("sni", params.get("peer", "")),
        alpn=tuple(p for p in params.get("alpn", "").split(",") if p),
        fingerprint=params.get("fp", ""),
        insecure=params.get("allowInsecure", params.get("insecure", "")).lower() in _BOOLEAN_TRUE,
        host=params.get("host", ""),
        path=params.get("path", ""),
        service_name=params.get("serviceName", ""),
        mode=mode,
        header_type=header_type,
        flow=params.get("flow", ""),
        cipher=_cipher(scheme, params.get("encryption", "")),
        public_key=params.get("pbk", ""),
        short_id=params.get("sid", ""),
        spider_x=params.get("spx", ""),
        name=name,
    )


def _cipher(scheme: str, value: str) -> str:
    """VLESS has no cipher ("none" is the only one: kept as ""); VMess's default is auto."""
    if scheme == "vless":
        return "" if value in ("", "none") else value
    if scheme == "vmess":
        return value or "auto"
    return ""


def _vmess_json(body: str) -> CoreLink:
    encoded, _, fragment = body.partition("#")
    data = _b64decode(unquote(encoded), "vmess: the link")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LinkError("vmess: the link is not base64 of a JSON object") from None
    if not isinstance(document, dict):
        raise LinkError("vmess: the link is not base64 of a JSON object")

    def text(key: str, default: str = "") -> str:
        value = document.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise LinkError(f"vmess: {key!r} must be text")
        return str(value).strip()

    host = text("add")
    port = text("port")
    address = _host_port(
        f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}",
        "vmess",
    )
    aid = text("aid", "0") or "0"
    if not aid.isdigit():
        raise LinkError("vmess: aid (alterId) must be a number")
    network = text("net", "tcp").lower() or "tcp"
    network = {"http": "h2", "splithttp": "xhttp"}.get(network, network)
    if network in ("kcp", "mkcp", "quic"):
        raise LinkError(f"vmess: transport net={network} is not supported (UDP transports)")
    header_type = (text("type", "none").lower() or "none") if network == "tcp" else "none"
    mode = ""
    if network == "grpc":
        mode = "multi" if text("type").lower() == "multi" else ""
        service_name = text("path")
        path = ""
    else:
        service_name = ""
        path = text("path")
    tls = text("tls").lower()
    return CoreLink(
        protocol="vmess",
        address=address,
        secret=text("id"),
        network=network,
        security="tls" if tls == "tls" else ("reality" if tls == "reality" else "none"),
        sni=text("sni"),
        alpn=tuple(p for p in text("alpn").split(",") if p),
        fingerprint=text("fp"),
        insecure=text("allowInsecure").lower() in _BOOLEAN_TRUE,
        host=text("host"),
        path=path,
        service_name=service_name,
        mode=mode,
        header_type=header_type,
        cipher=text("scy", "auto") or "auto",
        alter_id=int(aid),
        name=unquote(fragment) or text("ps"),
    )


def format_core_link(link: CoreLink) -> str:
    if link.protocol == "vmess":
        return _format_vmess(link)
    params: dict[str, str] = {}
    if link.protocol == "vless":
        params["encryption"] = link.cipher or "none"
    if link.flow:
        params["flow"] = link.flow
    params["type"] = link.network
    params["security"] = link.security
    _common_params(link, params)
    text = f"{link.protocol}://{_quote(link.secret)}@{_netloc(link.address)}?"
    text += "&".join(f"{key}={_quote(value)}" for key, value in params.items())
    if link.name:
        text += "#" + _quote(link.name)
    return text


def _common_params(link: CoreLink, params: dict[str, str]) -> None:
    pairs = (
        ("sni", link.sni),
        ("alpn", ",".join(link.alpn)),
        ("fp", link.fingerprint),
        ("allowInsecure", "1" if link.insecure else ""),
        ("host", link.host),
        ("path", link.path),
        ("serviceName", link.service_name),
        ("mode", link.mode),
        ("headerType", link.header_type if link.header_type != "none" else ""),
        ("pbk", link.public_key),
        ("sid", link.short_id),
        ("spx", link.spider_x),
    )
    for key, value in pairs:
        if value:
            params[key] = value


def _format_vmess(link: CoreLink) -> str:
    document: dict[str, Any] = {
        "v": "2",
        "ps": link.name,
        "add": link.address.host,
        "port": str(link.address.port),
        "id": link.secret,
        "aid": str(link.alter_id),
        "scy": link.cipher or "auto",
        "net": "http" if link.network == "h2" else link.network,
        "type": link.header_type
        if link.network == "tcp"
        else ("multi" if link.mode == "multi" else "none"),
        "host": link.host,
        "path": link.service_name if link.network == "grpc" else link.path,
        "tls": "" if link.security == "none" else link.security,
        "sni": link.sni,
        "alpn": ",".join(link.alpn),
        "fp": link.fingerprint,
    }
    if link.insecure:
        document["allowInsecure"] = "1"
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return "vmess://" + base64.b64encode(data).decode()


# --- showing links -----------------------------------------------------------------------


def show_link(layer: Layer) -> str:
    """A layer's link for people: the secret as ***, everything else as it is used."""
    params = layer.params
    if layer.name == "ss":
        server: ShadowsocksServer = params["server"]
        text = f"ss://{server.method.name}:***@{_netloc(server.address)}"
        if server.prefix:
            text += "/?prefix=" + _quote(server.prefix.decode("latin-1"))
        return text
    if layer.name == "ssconf":
        key: OutlineKey = params["key"]
        return f"ssconf://{urlsplit(key.url).netloc}/***"
    link: CoreLink = params["link"]
    shown: dict[str, str] = {"type": link.network, "security": link.security}
    if link.flow:
        shown["flow"] = link.flow
    _common_params(link, shown)
    shown.pop("sid", None)
    if link.short_id:
        shown["sid"] = "***"
    query = "&".join(
        f"{key}={value if value == '***' else _quote(value)}" for key, value in shown.items()
    )
    return f"{link.protocol}://***@{_netloc(link.address)}?{query}"


# --- recognising what people paste --------------------------------------------------------

# Tor pluggable transports a bridge line may name (transports/pt runs any; these are the
# ones a pasted line is recognised by without `pt:` in front).
BRIDGE_TRANSPORTS = ("obfs4", "webtunnel", "meek_lite", "snowflake", "scramblesuit", "obfs3")
_TELEGRAM_WEB = ("t.me", "telegram.me", "telegram.dog", "www.t.me")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Recognised:
    """What a pasted link is: `kind`, the chain a route would take (`chain`, secrets
    included: for the config file only), a route name suggested by the link (its #name, or
    the kind and host), and how to show it (`shown`, secrets hidden). A subscription has no
    chain: `url` is where its list is (a secret too)."""

    kind: str
    chain: str
    name: str
    shown: str
    url: str = ""
    note: str = ""

    def __repr__(self) -> str:
        return f"Recognised({self.kind!r}, {self.shown!r})"


KINDS = (
    "ss (Shadowsocks, Outline static key)",
    "ssconf (Outline dynamic key)",
    "vless",
    "vmess",
    "trojan",
    "socks5/socks4/socks4a/http proxy",
    "tg://socks and t.me/socks",
    "tg://proxy and t.me/proxy (MTProto proxy)",
    "relay access key (dtr1:...)",
    "obfs4/webtunnel bridge line followed by '| PROXY'",
    "subscription (https://...)",
)


def recognise_link(text: str) -> Recognised:
    """What a pasted link is, validated; LinkError (one line, no secret) when it is nothing
    detour can use. Pure: nothing is fetched or connected to."""
    if not isinstance(text, str):
        raise LinkError("a link is text")
    if len(text) > MAX_LINK:
        raise LinkError(f"the link is longer than {MAX_LINK} characters")
    stripped = text.strip()
    if not stripped:
        raise LinkError("the link is empty")
    if "\n" in stripped or "\r" in stripped:
        raise LinkError("give one link (the text holds several lines)")
    head = stripped.split(None, 1)[0]
    scheme, sep, _ = head.partition("://")
    scheme = scheme.lower()
    if sep and scheme in LINK_SCHEMES:
        return _from_layer(stripped)
    path = _url_path(stripped) if sep and scheme == "http" else ""
    after = re.sub(r"^[^/?#]*", "", stripped.partition("://")[2])
    if path not in ("", "/") and "@" not in after:  # (an '@' there: a login cut at a '/')
        raise LinkError(
            "http: a URL with a path is read as a subscription, and a subscription over plain "
            "http:// can be read and changed on the way: use its https:// URL"
        )
    if sep and scheme in ("socks5", "socks5h", "socks", "socks4", "socks4a", "http"):
        return _proxy(scheme, stripped)
    if sep and scheme == "https":
        return _https(stripped)
    if sep and scheme == "tg":
        return _telegram(stripped[len("tg://") :], "tg://")
    if stripped.lower().startswith(("dtr1:", "front:dtr1:")):
        return _relay_key(stripped)
    if _is_bridge(stripped):
        return _bridge(stripped)
    if sep:
        raise LinkError(f"{scheme[:20]}:// is not a kind of link detour reads ({_kinds()})")
    raise LinkError(f"not a link detour reads ({_kinds()})")


def _url_path(text: str) -> str:
    try:
        return urlsplit(text).path
    except ValueError:
        return ""  # the proxy layer's parser says what is wrong


def _kinds() -> str:
    return "it reads " + ", ".join(KINDS)


def suggested_name(text: str, fallback: str) -> str:
    """A route name (1-64 of letters, digits, '.', '_', '-') from a link's #name, else the
    fallback."""
    cleaned = _NAME_CHARS.sub("-", text).strip("-._")[:64].strip("-._")
    if cleaned and cleaned[0].isalnum():
        return cleaned
    cleaned = _NAME_CHARS.sub("-", fallback).strip("-._")[:64].strip("-._")
    return cleaned if cleaned and cleaned[0].isalnum() else "link"


def _from_layer(text: str) -> Recognised:
    layer = parse_link(text)
    if layer.name == "ss":
        server: ShadowsocksServer = layer.params["server"]
        label, host = server.name, server.address.host
        what = f"Shadowsocks ({server.method.name}) to {_netloc(server.address)}"
        if server.prefix:
            what += " with Outline's prefix"
    elif layer.name == "ssconf":
        key: OutlineKey = layer.params["key"]
        label, host = key.name, urlsplit(key.url).hostname or "outline"
        what = f"Outline dynamic key at {urlsplit(key.url).netloc} (fetched when used)"
    else:
        link: CoreLink = layer.params["link"]
        label, host = link.name, link.address.host
        what = f"{link.protocol} over {link.network}"
        if link.security != "none":
            what += f"+{link.security}"
        what += f" to {_netloc(link.address)} (through the proxy core)"
    chain = link_text(layer)
    _chain_or_error(chain, layer.name)  # what the config will hold reads back
    return Recognised(
        layer.name,
        chain,
        suggested_name(label, f"{layer.name}-{host}"),
        f"{what}: {show_link(layer)}",
    )


def _chain_or_error(chain: str, kind: str) -> Any:
    from .chain import ChainError, parse_chain

    try:
        return parse_chain(chain)
    except ChainError as exc:
        message = str(exc)
        raise LinkError(message if message.startswith(kind) else f"{kind}: {message}") from None


def _proxy(scheme: str, text: str) -> Recognised:
    layer_name = {"socks5h": "socks5", "socks": "socks5", "socks4": "socks4a"}.get(scheme, scheme)
    text, _, label = text.partition("#")  # a name, as lists of proxies give them
    chain_text = layer_name + text[len(scheme) :]
    cut = LinkError(
        f"{scheme}: an '@' after the '#' that starts the link's name: percent-encode a "
        "'#' in the user name or password as %23"
    )
    if "@" in label and "@" not in text:  # `socks5://alice:12#34@host:1`: a password cut at
        # its '#' (read as RFC 3986 says: host alice, port 12, no login, named "34@host:1")
        raise cut
    try:
        chain = _chain_or_error(chain_text, layer_name)
    except LinkError:
        if "@" in label:
            raise cut from None
        raise
    if len(chain.layers) != 2:
        raise LinkError(f"{scheme}: give one proxy address ({scheme}://[USER:PASS@]HOST:PORT)")
    proxy: Endpoint = chain.layers[-1].params["proxy"]
    what = {"socks5": "SOCKS5", "socks4a": "SOCKS4a", "http": "HTTP"}[layer_name]
    note = "SOCKS4 servers that resolve names (4a) are needed" if scheme == "socks4" else ""
    return Recognised(
        layer_name,
        chain_text,
        suggested_name(unquote(label), f"{layer_name}-{proxy.host}"),
        f"{what} proxy at {proxy}: {chain}",
        note=note,
    )


def _https(text: str) -> Recognised:
    try:
        parts = urlsplit(text)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise LinkError("https: the address is not valid (host or port)") from None
    if not hostname:
        raise LinkError("https: the URL names no host")
    if hostname.lower() in _TELEGRAM_WEB:
        return _telegram(parts.path.lstrip("/") + ("?" + parts.query if parts.query else ""), "")
    if parts.username is not None or (parts.path in ("", "/") and not parts.query):
        raise LinkError(
            "https: a proxy reached over TLS (an HTTPS proxy) is not a layer detour has; "
            "http:// proxies are, and an https:// URL with a path is read as a subscription"
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in text.partition("#")[0]):
        raise LinkError("https: the URL holds spaces or control characters")
    shown_host = hostname + (f":{port}" if port else "")
    return Recognised(
        "subscription",
        "",
        suggested_name(unquote(parts.fragment), f"sub-{hostname}"),
        f"subscription at https://{shown_host}/*** (a list of servers, fetched when used)",
        url=text.partition("#")[0],
    )


def _telegram(rest: str, prefix: str) -> Recognised:
    """tg://socks?server=..&port=..&user=..&pass=.., t.me/socks?... (a SOCKS5 proxy);
    tg://proxy and t.me/proxy (an MTProto proxy: an `mtproxy:` route, for Telegram only)."""
    action, _, query = rest.partition("?")
    action = action.strip("/").lower()
    params = _query(query, "tg")
    if action == "proxy":
        return _mtproxy(params)
    if action != "socks":
        raise LinkError(f"tg: {prefix or 't.me/'}{action[:20]}... is not a proxy link (socks)")
    server = params.get("server", "").strip()
    port = params.get("port", "").strip()
    if not server:
        raise LinkError("tg: the link names no server (server=)")
    if not port:
        raise LinkError("tg: the port is missing (port=)")
    user, password = params.get("user", ""), params.get("pass", "")
    if bool(user) != bool(password):
        raise LinkError("tg: give both user= and pass=, or neither")
    if any(ch.isspace() or ch in "/?#@\\|" or ord(ch) < 32 for ch in server):
        raise LinkError("tg: server= is not a host name or address")
    host = f"[{server}]" if ":" in server and not server.startswith("[") else server
    userinfo = f"{_quote(user)}:{_quote(password)}@" if user else ""
    chain_text = f"socks5://{userinfo}{host}:{port}"
    chain = _chain_or_error(chain_text, "tg")
    return Recognised(
        "socks5",
        chain_text,
        suggested_name("", f"tg-socks-{server}"),
        f"SOCKS5 proxy from a Telegram link: {chain}",
    )


def _mtproxy(params: dict[str, str]) -> Recognised:
    """tg://proxy?server=..&port=..&secret=.. (and t.me/proxy): an `mtproxy:` route."""
    server = params.get("server", "").strip().strip("[]")
    port = params.get("port", "").strip()
    # A '+' of a base64 secret reads as a space in a query: no secret holds one.
    secret = params.get("secret", "").strip().replace(" ", "+")
    if not server:
        raise LinkError("tg: the link names no server (server=)")
    if not port:
        raise LinkError("tg: the port is missing (port=)")
    if not secret:
        raise LinkError("tg: the secret is missing (secret=)")
    if any(ch in server for ch in ";|/@ ") or any(ch in secret for ch in ";| "):
        raise LinkError("tg: server= or secret= holds characters no address or secret has")
    host = f"[{server}]" if ":" in server else server
    chain_text = f"mtproxy:{host}:{port};secret={secret}"
    chain = _chain_or_error(chain_text, "mtproxy")
    options = chain.layers[-1].params["options"]
    kind = {"plain": "plain secret", "dd": "dd secret", "ee": "ee secret, fake TLS"}
    return Recognised(
        "mtproxy",
        chain_text,
        suggested_name("", f"mtproxy-{server}"),
        f"MTProto proxy at {options.server} ({kind[options.secret.mode.value]}): {chain}",
        note="it carries only Telegram (connections to Telegram's data centres)",
    )


def _relay_key(text: str) -> Recognised:
    body = text[len("front:") :] if text.lower().startswith("front:") else text
    chain_text = "front:" + body
    chain = _chain_or_error(chain_text, "relay access key")
    key = chain.layers[-1].params["key"]
    return Recognised(
        "relay",
        chain_text,
        suggested_name("", f"relay-{key.host or key.front}"),
        f"detour relay (access key for {key.name!r}) behind {key.front}: front:dtr1:***",
    )


def _is_bridge(text: str) -> bool:
    words = text.split()
    if words[0].lower() == "bridge" and len(words) > 1:
        words = words[1:]
    first = words[0].lower()
    return first.startswith("pt:") or first in BRIDGE_TRANSPORTS


def _bridge(text: str) -> Recognised:
    line, bar, after = text.partition("|")
    line = line.strip()
    if line.lower().startswith("pt:"):
        line = line[3:].strip()
    words = line.split()
    transport = (words[1] if words[0].lower() == "bridge" and len(words) > 1 else words[0]).lower()
    if not bar:
        raise LinkError(
            f"{transport}: a bridge forwards to one fixed address, so add the proxy behind it: "
            "'BRIDGE LINE | socks5://127.0.0.1:1080' (a bridge into the Tor network: use Tor "
            "with the bridge, and add its socks5://127.0.0.1:9050)"
        )
    chain_text = f"pt:{line} | {after.strip()}"
    chain = _chain_or_error(chain_text, transport)
    return Recognised(
        "bridge",
        chain_text,
        suggested_name("", f"bridge-{transport}"),
        f"{transport} bridge, then {' | '.join(str(x) for x in chain.layers[2:])}: {chain}",
    )
