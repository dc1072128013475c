"""What a subscription URL serves, read into nodes: each a link detour can use as a route.

    base64 of lines of links    (the common panels' default)
    lines of links              (ss://, vless://, vmess://, trojan://, socks5://, http://, ...)
    SIP008 JSON                 {"version": 1, "servers": [{"server", "server_port",
                                 "password", "method", "remarks", "plugin"}, ...]}
    Outline's ssconf JSON       {"server", "server_port", "password", "method", "prefix"}
    Clash / Clash.Meta YAML     proxies: [{name, type, server, port, ...}]   (clash.py)
    sing-box JSON               {"outbounds": [{type, tag, server, server_port, ...}]}

Pure: bytes in, nodes and refusals out. A line that is not a usable link is refused with
its position and the reason (never its text: it may hold a secret); so is a node whose
address is a private, loopback or link-local one unless the subscription allows those (a
list from elsewhere must not point detour at the user's own network).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from transports import Endpoint, parse_chain
from transports.links import LinkError, recognise_link, suggested_name

from .clash import ListError, clash_links, looks_like_clash, read_yaml, singbox_links

__all__ = [
    "MAX_LIST",
    "MAX_NODES",
    "Node",
    "Parsed",
    "SubscriptionError",
    "parse_list",
    "private_address",
    "private_node",
    "server_address",
]

MAX_LIST = 4 * 1024 * 1024  # bytes of a list (a Clash file with its rules can be large)
MAX_NODES = 500
NODE_KINDS = ("ss", "ssconf", "vless", "vmess", "trojan", "socks5", "socks4a", "http", "mtproxy")


class SubscriptionError(ValueError):
    """The list as a whole cannot be read: one line, no secret."""


@dataclass(frozen=True)
class Node:
    slug: str  # the node's name as a route-name part (from its #name, else kind-host-port)
    kind: str
    chain: str  # secrets included: for the router only
    shown: str  # secrets hidden

    def __repr__(self) -> str:
        return f"Node({self.slug!r}, {self.shown!r})"


@dataclass(frozen=True)
class Parsed:
    format: str  # "base64", "lines", "sip008", "outline", "clash", "sing-box"
    nodes: tuple[Node, ...]
    refused: tuple[str, ...]  # "line 3: ss: unknown cipher ..." (no secret)


def parse_list(data: bytes, allow_private: bool = False) -> Parsed:
    """The nodes of a subscription's body; SubscriptionError when it is none of the
    formats or holds no usable node."""
    if len(data) > MAX_LIST:
        raise SubscriptionError(
            f"the list is too large (more than {MAX_LIST // 1024} KiB, the most detour reads); "
            "nothing of it was used"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubscriptionError("the list is not text (UTF-8)") from None
    stripped = text.strip()
    if not stripped:
        raise SubscriptionError("the list is empty")
    if stripped.startswith("{"):
        form, links = _json(stripped)
    elif looks_like_clash(stripped):
        form, links = "clash", _clash(stripped)
    elif "://" in stripped or stripped.split(None, 1)[0].lower().startswith(("dtr1:",)):
        form, links = "lines", _lines(stripped)
    else:
        form, links = "base64", _lines(_base64(stripped))
    nodes: list[Node] = []
    refused: list[str] = []
    taken: set[str] = set()
    for number, link, *why in links:
        if len(nodes) >= MAX_NODES:
            refused.append(f"nodes after the first {MAX_NODES} are left out")
            break
        if link is None:
            refused.append(f"{number}: {why[0]}")
            continue
        try:
            node = _node(link, allow_private)
        except LinkError as exc:
            refused.append(f"{number}: {exc}")
            continue
        slug, n = node.slug, 2
        while slug.lower() in taken:
            slug = f"{node.slug[:40]}-{n}"
            n += 1
        taken.add(slug.lower())
        nodes.append(Node(slug, node.kind, node.chain, node.shown))
    if not nodes:
        why = f" ({refused[0]})" if refused else ""
        raise SubscriptionError(f"the list holds no node detour can use{why}")
    return Parsed(form, tuple(nodes), tuple(refused))


def _clash(text: str) -> list[tuple[str, str | None, str]]:
    try:
        return clash_links(read_yaml(text))
    except ListError as exc:
        raise SubscriptionError(str(exc)) from None


def _lines(text: str) -> list[tuple[str, str]]:
    return [
        (f"line {number}", line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith(("#", "//"))
    ]


def _base64(text: str) -> str:
    cleaned = re.sub(r"\s", "", text)
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", cleaned):
        raise SubscriptionError(
            "the list is none of the formats (base64 or lines of links, SIP008, Outline or "
            "sing-box JSON, Clash YAML)"
        )
    cleaned = cleaned.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        return decoded.decode("utf-8-sig")
    except (binascii.Error, ValueError):
        raise SubscriptionError("the list is not valid base64 of lines of links") from None


def _json(text: str) -> tuple[str, list[Any]]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise SubscriptionError("the list is not valid JSON") from None
    if not isinstance(document, dict):
        raise SubscriptionError("the JSON list is not an object")
    if "outbounds" in document:
        try:
            return "sing-box", singbox_links(document)
        except ListError as exc:
            raise SubscriptionError(str(exc)) from None
    if "servers" in document:
        servers = document["servers"]
        if not isinstance(servers, list):
            raise SubscriptionError("SIP008: 'servers' is not a list")
        return "sip008", [(f"server {i}", _ss_link(s)) for i, s in enumerate(servers)]
    if "server" in document:
        return "outline", [("the key", _ss_link(document))]
    raise SubscriptionError(
        "the JSON list has neither 'servers' (SIP008), 'server' (Outline) nor 'outbounds' "
        "(sing-box)"
    )


def _ss_link(server: Any) -> str:
    """A SIP008 / Outline server object as an ss:// link (a bad one as a link that says
    what is wrong when read)."""
    if not isinstance(server, dict):
        return "ss://!"
    if server.get("plugin"):
        name = str(server.get("plugin"))[:30]
        return f"ss://YTpi@h:1/?plugin={quote(name)}"  # refused naming the plugin

    def text(key: str) -> str:
        value = server.get(key, "")
        return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""

    host = text("server")
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    userinfo = f"{quote(text('method'), safe='')}:{quote(text('password'), safe='')}"
    link = f"ss://{userinfo}@{host}:{text('server_port')}"
    if text("prefix"):
        link += "/?prefix=" + quote(text("prefix"), safe="")
    name = text("remarks") or text("id")
    return link + ("#" + quote(name, safe="") if name else "")


def _node(link: str, allow_private: bool) -> Node:
    found = recognise_link(link)
    if found.kind not in NODE_KINDS:
        raise LinkError(f"a {found.kind} link is not a server (a subscription lists servers)")
    address = _address(found.chain)
    if address is not None and not allow_private and _private(address.host):
        raise LinkError(
            f"{found.kind}: the server's address {address.host} is private, loopback or "
            "link-local (allow_private = true allows it)"
        )
    fallback = f"{found.kind}-{address.host}-{address.port}" if address else found.kind
    return Node(suggested_name(found.name, fallback), found.kind, found.chain, found.shown)


def server_address(chain: Any) -> Endpoint | None:
    """The server a node's chain (parsed) connects to first, or None (a dynamic key)."""
    params = chain.layers[-1].params
    if "server" in params:
        return params["server"].address
    if "link" in params:
        return params["link"].address
    if "proxy" in params:
        return params["proxy"]
    return getattr(params.get("options"), "server", None)  # an MTProto proxy (mtproxy:)


def private_address(address: Any) -> bool:
    """Whether an IP address is on the user's own networks or this machine."""
    return _private(str(address))


def private_node(chain_text: str) -> bool:
    """Whether a node's server address is on the user's own networks or this machine."""
    address = _address(chain_text)
    return address is not None and _private(address.host)


def _address(chain_text: str) -> Endpoint | None:
    return server_address(parse_chain(chain_text))  # None: a dynamic key, known once fetched


def _private(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False  # a name: what it resolves to is checked by nobody here (docs)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOCAL if network.version == address.version)


# The user's own networks and this machine: private (RFC 1918, carrier-grade NAT, unique
# local), loopback, link-local, unspecified, multicast.
_LOCAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip
