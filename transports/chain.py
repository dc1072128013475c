"""Chain strings: the user-facing syntax for a route, parsed into nested Dialers.

    direct
    socks5://alice:secret@10.0.0.2:1080
    socks5://127.0.0.1:9050 | http://proxy.example:3128
    resolve:doh=https://1.1.1.1/dns-query | tlsfrag:sni
    pt:obfs4 192.0.2.3:443 cert=... iat-mode=0 | socks5://127.0.0.1:1080
    resolve:doh=https://1.1.1.1/dns-query | tlsfrag:sni | tgws

Layers are separated by `|`; the left-most is closest to the network and each layer to its
right is reached through the ones before it. A chain that does not start with a base layer
(`direct`, or `resolve:` which is `direct` with its own resolver) starts with an implicit
`direct`. `tlsfrag` and `split` wrap what the layers before them produce: after a proxy
layer they shape the bytes that go through the tunnel.

A `pt:` layer (transports/pt) makes its own connections through a child process, so only
`direct` and one upstream proxy (which the child is told to use) may come before it; its
stream ends at whatever the bridge forwards to, so the layer after it must be a proxy
there that names the destination (`pt:... | socks5://127.0.0.1:1080`).

A `tgws` layer (transports/tgws.py) carries MTProto to a Telegram DC through the DC's web
endpoint: the layers before it reach the endpoint, and nothing can come after it (what it
returns is an MTProto stream, not a way to reach anywhere else).

Parsing (`parse_chain`) checks everything without building anything, so a config can be
validated without side effects; `Chain.build` turns it into a Dialer. Chains are shown with
credentials redacted (`str(chain)`, `redact`), everywhere.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from .base import Dialer, Endpoint
from .desync import SYNTAX as DESYNC_SYNTAX
from .desync import DesyncDialer, Trick, parse_desync
from .direct import DirectDialer
from .http_connect import HttpConnectDialer
from .pt import PtDialer, PtManager, PtSpecError, parse_pt
from .resolver import Resolver, StaticResolver, parse_resolver
from .socks import Socks4aDialer, Socks5Dialer
from .split import SplitDialer
from .tlsfrag import MAX_RECORD, Fragmenting, TlsFragDialer

if TYPE_CHECKING:
    from .fronted.client import HandshakePacer
    from .mtproto.dcs import DcTable

__all__ = [
    "Chain",
    "ChainError",
    "DialOptions",
    "Layer",
    "known_layers",
    "parse_chain",
    "parse_layer",
    "redact",
]


class ChainError(ValueError):
    """A chain string is not valid; the message says what would be."""


@dataclass(frozen=True)
class DialOptions:
    """What building a chain needs from its surroundings."""

    resolver: Resolver | None = None
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    attempt_delay: float = 0.25
    # For `resolve:` layers: fixed answers that go before their resolver ([dns] hosts), the
    # TLS settings for DoH/DoT servers, and where resolvers that hold connections are
    # registered to be closed (the engine closes it when it stops).
    hosts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    dns_timeout: float = 5.0  # a lookup's own limit ([dns] timeout)
    tls: ssl.SSLContext | None = None
    resources: contextlib.AsyncExitStack | None = None
    # For `pt:` layers: the pluggable transport children every route of an engine shares
    # (without one, each pt layer gets its own, closed with `resources`).
    pluggable: PtManager | None = None
    # For vless/vmess/trojan layers: the proxy core to run (a name or a path; None: the
    # first of xray, sing-box, v2ray on PATH). Its children live in `pluggable` too.
    core_program: str | None = None
    # For `tgws` layers: Telegram's DCs and their web endpoints (None: the built-in table,
    # transports/mtproto/dcs.py). A `tgws:dcN=ADDR` option adds to it for its route.
    telegram_dcs: DcTable | None = None
    # For `front:` layers: what paces the TLS handshakes with the front per name (the
    # engine's handshake budget, helper/search/budget.py; None: not paced).
    handshakes: HandshakePacer | None = None


@dataclass(frozen=True)
class Layer:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # as written, secrets included: never show it, show str(layer)
    implicit: bool = False  # added by the parser, not written by the user

    def __str__(self) -> str:
        if self.name == "pt":
            return f"pt:{self.params['spec'].transport} ***"  # a bridge line is a secret
        kind = _KINDS.get(self.name)
        if kind is not None and kind.show is not None and self.params:
            return kind.show(self)
        return redact(self.text or self.name)

    def __repr__(self) -> str:
        return f"Layer({str(self)!r})"


@dataclass(frozen=True)
class _LayerKind:
    parse: Callable[[str, str], dict[str, Any]]  # (name, text) -> params
    build: Callable[[Dialer | None, dict[str, Any], DialOptions], Dialer]
    base: bool = False  # only as the first layer: it makes the connection itself
    syntax: str = ""
    show: Callable[[Layer], str] | None = None  # how str(layer) shows it (secrets hidden)


def _parse_direct(name: str, text: str) -> dict[str, Any]:
    if text != name:
        raise ChainError(f"'{name}' takes no arguments (got {redact(text)!r})")
    return {}


def _build_direct(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return DirectDialer(
        opts.resolver, attempt_delay=opts.attempt_delay, connect_timeout=opts.connect_timeout
    )


# What urlsplit drops from a URL without a word (WHATWG: tab, CR, LF anywhere): written in a
# password, they would silently make it another one. Percent-encoded, they stay in it.
_URL_DROPPED = {"\t": "%09", "\r": "%0D", "\n": "%0A"}


def _parse_proxy_url(name: str, text: str) -> dict[str, Any]:
    # One URL (a layer): its userinfo to its last '@' is hidden whole, whatever it holds (a
    # blank and a '://' in a user name made redact() see a second URL in its password).
    shown = _redact_url(text) if text.startswith(f"{name}://") else redact(text)
    if not text.startswith(f"{name}://"):
        raise ChainError(f"write {name} layers as {_KINDS[name].syntax} (got {shown!r})")
    for raw, encoded in _URL_DROPPED.items():
        text = text.replace(raw, encoded)
    rest = text[len(name) + 3 :]
    if "@" not in rest and _open_userinfo(rest):
        # "h:port" or "alice:pa" of "alice:pa|ss@h:1" (a '|' cut it): a password, maybe.
        host = rest[: rest.find("]") + 1] if rest.startswith("[") else rest.partition(":")[0]
        shown = f"{name}://{host}:***"
    invalid = ChainError(
        f"{shown!r} is not a valid proxy address ({_KINDS[name].syntax}; "
        "percent-encode '@', ':', '/', '?', '#' and '|' in user names and passwords)"
    )  # (not urlsplit's own message: it may quote part of a password)
    try:
        url = urlsplit(text)
    except ValueError:
        raise invalid from None
    if "@" in f"{url.path}{url.query}{url.fragment}":  # a userinfo cut at a '/', '?', '#'
        raise ChainError(
            f"{shown!r}: an '@' after the proxy address; percent-encode '/' (%2F), '?' "
            "(%3F) and '#' (%23) in user names and passwords"
        )
    try:
        port = url.port
    except ValueError:
        port_text = url.netloc.rpartition(":")[2]
        if port_text.isascii() and port_text.isdigit() and int(port_text) > 65535:
            raise ChainError(f"{shown!r}: port {port_text} is out of range (1-65535)") from None
        raise invalid from None
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ChainError(f"{shown!r}: a proxy address takes no path or query")
    if not url.hostname:
        raise ChainError(f"{shown!r}: missing proxy host ({_KINDS[name].syntax})")
    if any(ch.isspace() or ord(ch) < 32 or ch in '"<>\\^`{}' for ch in url.hostname) or (
        "%" in url.hostname and ":" not in url.hostname  # (an IPv6 zone: [fe80::1%25eth0])
    ):
        raise ChainError(f"{shown!r}: the proxy host is not a host name or IP address")
    if port is None:
        raise ChainError(f"{shown!r}: missing proxy port ({_KINDS[name].syntax})")
    if port == 0:
        raise ChainError(f"{shown!r}: port 0 is not a valid proxy port")
    username = unquote(url.username) if url.username is not None else None
    password = unquote(url.password) if url.password is not None else None
    params: dict[str, Any] = {"proxy": Endpoint(url.hostname, port)}
    if name == "socks4a":
        if password is not None:
            raise ChainError(f"{shown!r}: SOCKS4a has no passwords (socks4a://USERID@HOST:PORT)")
        params["user_id"] = username or ""
        return params
    if (username is None) != (password is None) or username == "":
        raise ChainError(f"{shown!r}: give both a username and a password (USER:PASS@HOST:PORT)")
    if name == "http" and username is not None and ":" in username:
        raise ChainError(f"{shown!r}: an HTTP proxy username cannot contain ':'")
    for value, what in ((username, "username"), (password, "password")):
        if value is not None and not 0 < len(value.encode()) < 256:
            raise ChainError(f"{shown!r}: the {what} must be 1-255 bytes")
    params["username"] = username
    params["password"] = password
    return params


# Userinfo characters that stay as written when a layer is shown (RFC 3986 unreserved and
# sub-delims); the rest ('@', ':', '/', '|', blanks, '%') are percent-encoded, so what is
# shown parses back to the same layer.
_USERINFO_SAFE = "!$&'()*+,;="


def _show_proxy_url(layer: Layer) -> str:
    """A proxy layer from what was parsed: `socks5://alice:***@10.0.0.2:1080`. The password
    is never shown, whatever it holds (blanks, '|', '@'): it is not in the text at all."""
    params = layer.params
    userinfo = ""
    if layer.name == "socks4a":
        if params["user_id"]:
            userinfo = quote(params["user_id"], safe=_USERINFO_SAFE) + "@"
    elif params["username"] is not None:
        userinfo = quote(params["username"], safe=_USERINFO_SAFE) + ":***@"
    return f"{layer.name}://{userinfo}{params['proxy']}"


def _require_inner(inner: Dialer | None) -> Dialer:
    assert inner is not None, "only base layers come first"
    return inner


def _arguments(name: str, text: str) -> list[str]:
    """The comma-separated arguments after `name:`."""
    if not text.startswith(f"{name}:") or not text[len(name) + 1 :].strip():
        raise ChainError(f"write {name} layers as {_KINDS[name].syntax} (got {redact(text)!r})")
    return [arg.strip().lower() for arg in text[len(name) + 1 :].split(",")]


def _offset(name: str, arg: str, limit: int) -> int:
    if not (arg.isascii() and arg.isdigit()) or not 0 < int(arg) <= limit:
        raise ChainError(f"{name}: {arg!r} is not a byte offset 1-{limit} ({_KINDS[name].syntax})")
    return int(arg)


def _parse_tlsfrag(name: str, text: str) -> dict[str, Any]:
    args = _arguments(name, text)
    if len(set(args)) != len(args):
        raise ChainError(f"{name}: an argument is given twice in {text!r}")
    offsets = tuple(_offset(name, a, MAX_RECORD - 1) for a in args if a not in ("sni", "segments"))
    how = Fragmenting(offsets, sni="sni" in args, segments="segments" in args)
    if not how.offsets and not how.sni:
        raise ChainError(f"{name}: give where to cut, an offset or sni ({_KINDS[name].syntax})")
    return {"how": how}


def _build_tlsfrag(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return TlsFragDialer(_require_inner(inner), params["how"])


def _parse_front(name: str, text: str) -> dict[str, Any]:
    from .fronted.accesskey import AccessKey, AccessKeyError

    body = text[len(name) + 1 :] if text.startswith(f"{name}:") else ""
    key_text, *options = body.split(";")
    if not key_text:
        raise ChainError(f"write front layers as {_KINDS[name].syntax}")
    try:
        key = AccessKey.decode(key_text)
    except AccessKeyError as exc:
        raise ChainError(f"{name}: {exc}") from None
    changes: dict[str, Any] = {}
    mux = True
    carrier: dict[str, Any] = {}
    for option in options:
        field_name, _, value = option.partition("=")
        field_name, value = field_name.strip().lower(), value.strip()
        if field_name == "mux" and value.lower() in ("on", "off"):
            mux = value.lower() == "on"
        elif field_name in ("carrier", "budget"):
            carrier.update(_carrier_option(name, field_name, value))
        elif field_name == "addr" and value:
            try:
                changes["address"] = Endpoint.parse(value, 443)
            except ValueError as exc:
                raise ChainError(f"{name}: addr={value!r}: {exc}") from None
        elif field_name in ("front", "host") and value:
            changes[field_name] = value
        else:
            raise ChainError(
                f"{name}: unknown option {option.strip()!r} (valid: addr=HOST:PORT, front=NAME, "
                "host=NAME, mux=on|off, carrier=auto|long|capped, budget=BYTES)"
            )
    return {"key": key.with_overrides(**changes), "mux": mux, **carrier}


def _carrier_option(name: str, field_name: str, value: str) -> dict[str, Any]:
    """`carrier=auto|long|capped` and `budget=BYTES` (fronted/modes.py)."""
    from .fronted.capped import MIN_BUDGET
    from .fronted.modes import MODES

    if field_name == "carrier":
        if value.lower() not in MODES:
            raise ChainError(f"{name}: carrier={value!r}: one of {', '.join(MODES)}")
        return {"carrier": value.lower()}
    if not (value.isascii() and value.isdigit()) or not MIN_BUDGET <= int(value) <= 1 << 30:
        raise ChainError(f"{name}: budget={value!r}: bytes, at least {MIN_BUDGET}")
    return {"budget": int(value)}


def _build_front(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    from .fronted.client import FrontDialer

    dialer = FrontDialer(
        _require_inner(inner),
        params["key"],
        tls=opts.tls,
        handshake_timeout=opts.handshake_timeout,
        mux=params["mux"],
        pacer=opts.handshakes,
        **{k: params[k] for k in ("carrier", "budget") if k in params},
    )
    if opts.resources is not None:
        opts.resources.push_async_callback(dialer.aclose)  # its open tunnels
    return dialer


_MAX_SPLIT = 65535


def _parse_split(name: str, text: str) -> dict[str, Any]:
    offsets = tuple(_offset(name, a, _MAX_SPLIT) for a in _arguments(name, text))
    if any(b <= a for a, b in pairwise(offsets)):
        raise ChainError(f"{name}: offsets must be strictly increasing (got {text!r})")
    return {"offsets": offsets}


def _build_split(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return SplitDialer(_require_inner(inner), params["offsets"])


def _parse_desync(name: str, text: str) -> dict[str, Any]:
    try:
        return {"desync": parse_desync(Trick(name), _arguments(name, text))}
    except ValueError as exc:
        raise ChainError(str(exc)) from None


def _build_desync(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return DesyncDialer(_require_inner(inner), params["desync"])


def _parse_resolve(name: str, text: str) -> dict[str, Any]:
    if not text.startswith(f"{name}:"):
        raise ChainError(f"write {name} layers as {_KINDS[name].syntax} (got {redact(text)!r})")
    try:
        return {"resolver": parse_resolver(text[len(name) + 1 :])}
    except ValueError as exc:
        raise ChainError(f"{name}: {redact(str(exc))}") from None


def _build_resolve(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    # A lookup may take half the route's timeout when that is longer than [dns] timeout: a
    # route given long for a slow network gives its resolver longer too, and the connect
    # after the lookup still has time left (docs/configuration.md, [[route]] timeout).
    lookup = max(opts.dns_timeout, (opts.connect_timeout or 0.0) / 2)
    resolver = params["resolver"].build(opts.tls, lookup)
    close = getattr(resolver, "aclose", None)
    if close is not None and opts.resources is not None:
        opts.resources.push_async_callback(close)
    if opts.hosts:
        resolver = StaticResolver(opts.hosts, fallback=resolver)
    return DirectDialer(
        resolver, attempt_delay=opts.attempt_delay, connect_timeout=opts.connect_timeout
    )


def _build_socks5(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return Socks5Dialer(
        _require_inner(inner),
        params["proxy"],
        params["username"],
        params["password"],
        handshake_timeout=opts.handshake_timeout,
    )


def _build_socks4a(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return Socks4aDialer(
        _require_inner(inner),
        params["proxy"],
        params["user_id"],
        handshake_timeout=opts.handshake_timeout,
    )


def _build_http(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    return HttpConnectDialer(
        _require_inner(inner),
        params["proxy"],
        params["username"],
        params["password"],
        handshake_timeout=opts.handshake_timeout,
    )


def _parse_pt(name: str, text: str) -> dict[str, Any]:
    try:
        return {"spec": parse_pt(text[len(name) + 1 :])}
    except PtSpecError as exc:
        raise ChainError(str(exc)) from None


def _build_pt(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    # `inner` is not used: the layers before a pt layer became its TOR_PT_PROXY (parse_chain).
    manager = opts.pluggable
    if manager is None:
        manager = PtManager()
        if opts.resources is not None:
            opts.resources.push_async_callback(manager.aclose)
    return PtDialer(
        params["spec"],
        manager,
        proxy_url=params.get("upstream"),
        connect_timeout=opts.connect_timeout,
        handshake_timeout=opts.handshake_timeout,
    )


def _parse_tgws(name: str, text: str) -> dict[str, Any]:
    from .tgws import parse_options

    if text != name and not text.startswith(f"{name}:"):
        raise ChainError(f"write {name} layers as {_KINDS[name].syntax}")
    try:
        options = parse_options(text[len(name) + 1 :])
    except ValueError as exc:
        raise ChainError(f"{name}: {exc}") from None
    return {"options": options}


def _build_tgws(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    from .mtproto.dcs import DEFAULT_DCS
    from .tgws import TgWsDialer

    options = params["options"]
    table = opts.telegram_dcs or DEFAULT_DCS
    if options.addresses:
        table = table.with_addresses(options.addresses)
    return TgWsDialer(
        _require_inner(inner),
        table=table,
        connect_to=options.connect_to,
        tls=opts.tls,
        handshake_timeout=opts.handshake_timeout,
    )


def _parse_mtproxy(name: str, text: str) -> dict[str, Any]:
    from .mtproxy import SYNTAX, parse_options

    if not text.startswith(f"{name}:"):
        raise ChainError(f"write {name} layers as {SYNTAX}")
    try:
        return {"options": parse_options(text[len(name) + 1 :])}
    except ValueError as exc:
        raise ChainError(f"{name}: {exc}") from None


def _build_mtproxy(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    from .mtproto.dcs import DEFAULT_DCS
    from .mtproxy import MTProxyDialer

    return MTProxyDialer(
        _require_inner(inner),
        params["options"],
        table=opts.telegram_dcs or DEFAULT_DCS,
        handshake_timeout=opts.handshake_timeout,
    )


def _show_mtproxy(layer: Layer) -> str:
    from .mtproxy import show

    return show(layer.params["options"])


_KINDS: dict[str, _LayerKind] = {
    "direct": _LayerKind(_parse_direct, _build_direct, base=True, syntax="direct"),
    "socks5": _LayerKind(
        _parse_proxy_url,
        _build_socks5,
        syntax="socks5://[USER:PASS@]HOST:PORT",
        show=_show_proxy_url,
    ),
    "socks4a": _LayerKind(
        _parse_proxy_url,
        _build_socks4a,
        syntax="socks4a://[USERID@]HOST:PORT",
        show=_show_proxy_url,
    ),
    "http": _LayerKind(
        _parse_proxy_url, _build_http, syntax="http://[USER:PASS@]HOST:PORT", show=_show_proxy_url
    ),
    "resolve": _LayerKind(
        _parse_resolve,
        _build_resolve,
        base=True,
        syntax="resolve:system, resolve:udp=IP[:PORT], resolve:tcp=IP[:PORT], "
        "resolve:dot=HOST[:PORT], resolve:doh=https://HOST/PATH",
    ),
    "tlsfrag": _LayerKind(
        _parse_tlsfrag, _build_tlsfrag, syntax="tlsfrag:N|sni[,N|sni...][,segments]"
    ),
    "split": _LayerKind(_parse_split, _build_split, syntax="split:N[,M...]"),
    **{
        trick.value: _LayerKind(_parse_desync, _build_desync, syntax=syntax)
        for trick, syntax in DESYNC_SYNTAX.items()
    },
    "front": _LayerKind(
        _parse_front,
        _build_front,
        syntax="front:ACCESS_KEY[;front=NAME][;addr=HOST:PORT][;mux=off][;carrier=MODE][;budget=N]",
    ),
    "pt": _LayerKind(
        _parse_pt,
        _build_pt,
        syntax="pt:NAME?addr=HOST:PORT&KEY=VALUE..., or pt: and a bridge line",
    ),
    "tgws": _LayerKind(
        _parse_tgws, _build_tgws, syntax="tgws[:dcN=ADDRESS[,ADDRESS...][;addr=HOST[:PORT]]]"
    ),
    "mtproxy": _LayerKind(
        _parse_mtproxy, _build_mtproxy, syntax="mtproxy:HOST:PORT;secret=SECRET", show=_show_mtproxy
    ),
}
# Layers that carry the destination name to something else, which resolves it.
_NAME_TAKING = {"socks5", "socks4a", "http", "front"}


# --- Links for people's own servers (transports/links.py): Shadowsocks spoken by detour,
# vless/vmess/trojan through a proxy core run as a child (transports/core). ----------------


def _parse_link_layer(name: str, text: str) -> dict[str, Any]:
    from . import links

    try:
        if name == "ss":
            return {"server": links.parse_ss(text)}
        if name == "ssconf":
            return {"key": links.parse_ssconf(text)}
        return {"link": links.parse_core_link(text)}
    except links.LinkError as exc:
        raise ChainError(str(exc)) from None


def _show_link_layer(layer: Layer) -> str:
    from .links import show_link

    return show_link(layer)


def _build_ss(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    from .shadowsocks import ShadowsocksDialer

    return ShadowsocksDialer(_require_inner(inner), params["server"])


def _build_ssconf(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    from .links import parse_ss
    from .shadowsocks import OutlineDialer

    return OutlineDialer(
        _require_inner(inner),
        params["key"],
        tls=opts.tls,
        timeout=opts.handshake_timeout,
        parse_ss=parse_ss,
    )


def _build_core(inner: Dialer | None, params: dict[str, Any], opts: DialOptions) -> Dialer:
    # `inner` is not used: only `direct` may come before a core layer (_place_core).
    from .core import CoreDialer

    manager = opts.pluggable
    if manager is None:
        manager = PtManager()
        if opts.resources is not None:
            opts.resources.push_async_callback(manager.aclose)
    return CoreDialer(
        params["link"],
        manager,
        program=opts.core_program,
        tls=opts.tls,
        connect_timeout=opts.connect_timeout,
        handshake_timeout=opts.handshake_timeout,
    )


CORE_LAYERS = ("vless", "vmess", "trojan")
_KINDS.update(
    {
        "ss": _LayerKind(
            _parse_link_layer,
            _build_ss,
            syntax="ss://BASE64(METHOD:PASSWORD)@HOST:PORT or ss://METHOD:PASSWORD@HOST:PORT",
            show=_show_link_layer,
        ),
        "ssconf": _LayerKind(
            _parse_link_layer, _build_ssconf, syntax="ssconf://HOST/PATH", show=_show_link_layer
        ),
        **{
            name: _LayerKind(
                _parse_link_layer,
                _build_core,
                syntax=f"{name}://...@HOST:PORT?... (a share link)",
                show=_show_link_layer,
            )
            for name in CORE_LAYERS
        },
    }
)
_NAME_TAKING |= {"ss", "ssconf", *CORE_LAYERS}


def _place_core(layers: list[Layer]) -> None:
    """A core makes its own connections: only `direct` may come before it."""
    for position, layer in enumerate(layers):
        if layer.name in CORE_LAYERS and any(b.name != "direct" for b in layers[:position]):
            raise ChainError(
                f"{layer.name}: only direct can come before a {layer.name} layer (a proxy "
                "core makes its own connections); put other layers after it"
            )


def base_dialer(dialer: Dialer) -> Dialer:
    """The innermost dialer of a built chain (the one that makes the connection)."""
    while (inner := getattr(dialer, "inner", None)) is not None:
        dialer = inner
    return dialer


# Names people write for the same thing (curl's socks5h means "proxy resolves names",
# which is what socks5 always does here).
_ALIASES = {"socks5h": "socks5"}


def known_layers() -> list[str]:
    return sorted(_KINDS)


_LAYER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(?=://|:|$)")


def parse_layer(text: str) -> Layer:
    """One layer's text (no '|'), validated; ChainError names what is wrong."""
    return _parse_layer(text)


def _parse_layer(text: str) -> Layer:
    match = _LAYER_NAME.match(text)
    known = ", ".join(known_layers())
    if match is None:
        # Show only what precedes any ':' (a URL's user:password comes after one).
        leading = re.match(r"[^:/@\s]*", text)
        shown = leading.group(0) if leading else ""
        raise ChainError(f"'{shown}' does not start with a layer name (known: {known})")
    written = match.group(0)
    name = _ALIASES.get(written.lower(), written.lower())
    kind = _KINDS.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, list(_KINDS) + list(_ALIASES), n=1)
        hint = f"; did you mean '{_ALIASES.get(close[0], close[0])}'?" if close else ""
        raise ChainError(f"unknown layer '{written}' (known: {known}){hint}")
    # Layer names are case-insensitive; aliases become the canonical name.
    text = name + text[len(written) :]
    return Layer(name, kind.parse(name, text), text)


@dataclass(frozen=True)
class Chain:
    layers: tuple[Layer, ...]

    def __str__(self) -> str:
        return " | ".join(str(layer) for layer in self.layers if not layer.implicit)

    def __repr__(self) -> str:
        return f"Chain({str(self)!r})"

    @property
    def resolves_locally(self) -> bool:
        """Whether detour resolves destination names itself on this route (no proxy layer
        that takes names)."""
        return not any(layer.name in _NAME_TAKING for layer in self.layers)

    @property
    def splits_client_hello(self) -> bool:
        return any(layer.name in ("tlsfrag", "split", "disorder", "oob") for layer in self.layers)

    @property
    def telegram_web(self) -> bool:
        """Whether the route ends at a Telegram web endpoint (`tgws`): its handshakes are
        with that endpoint, on behalf of a DC."""
        return self.layers[-1].name == "tgws"

    @property
    def resolver_kind(self) -> str:
        """How the base resolves: "system" for `direct` (or whatever the engine's resolver
        is: "default"), else the `resolve:` layer's kind (udp, tcp, dot, doh)."""
        base = self.layers[0]
        return base.params["resolver"].kind if base.name == "resolve" else "default"

    def build(self, options: DialOptions | None = None) -> Dialer:
        options = options or DialOptions()
        dialer: Dialer | None = None
        for layer in self.layers:
            dialer = _KINDS[layer.name].build(dialer, layer.params, options)
        assert dialer is not None
        return dialer


def parse_chain(text: str) -> Chain:
    """Parse a chain string; raise ChainError with a message naming what is valid."""
    if not isinstance(text, str) or not text.strip():
        raise ChainError(f"empty chain (known layers: {', '.join(known_layers())})")
    parts = [part.strip() for part in text.split("|")]
    if any(not part for part in parts):
        _check_bar_in_userinfo([part for part in parts if part])  # `alice:a||b@host`
        raise ChainError("empty layer between '|' separators")
    _check_bar_in_userinfo(parts)
    layers = [_parse_layer(part) for part in parts]
    for position, layer in enumerate(layers):
        if position > 0 and _KINDS[layer.name].base:
            raise ChainError(f"'{layer.name}' can only be the first layer of a chain")
    if not _KINDS[layers[0].name].base:
        layers.insert(0, Layer("direct", {}, "direct", implicit=True))
    _place_pt(layers)
    _place_desync(layers)
    _place_core(layers)
    _place_tgws(layers)
    return Chain(tuple(layers))


_PROXY_SCHEMES = ("socks5", "socks4a", "http")


def _check_bar_in_userinfo(parts: list[str]) -> None:
    """'|' separates layers, so one written in a user name or password cuts its URL in two:
    `socks5://alice:pa|ss@host:1080`. Say so without quoting either half (both are secret):
    after a URL, a part with an '@' before any '://' of its own (no layer has one there), or
    after a URL cut short ("alice:pa", no HOST:PORT), any part with an '@'."""
    url, cut, first = None, False, 0
    for at, part in enumerate(parts):
        head, sep, _ = part.partition("://")
        if url is not None and ("@" in head or (cut and "@" in part)):
            raise ChainError(
                f"{_cut_url_shown(url, parts[first:])}: not a proxy address; if a "
                "user name or password holds '|', write it %7C ('|' separates layers; "
                "percent-encode '@', ':', '/' and '|' there)"
            )
        if sep and _URL_START.match(part):
            url, rest, first = head, part[len(head) + 3 :], at
            cut = "@" not in rest and _open_userinfo(rest)  # "alice:pa" of alice:pa|...@


def _cut_url_shown(scheme: str, parts: list[str]) -> str:
    """A URL a '|' cut, as a message may show it: the chain from it on, redacted as a whole
    (its userinfo runs to the last '@': `socks5://alice:***@host:1080`, the user name and
    never a part of the password), up to the next layer; just its scheme when the redaction
    finds no password to hide in it."""
    shown = redact("|".join(parts))
    hidden = shown.find("***")
    if hidden < 0 or "\n" in shown:
        return f"{scheme if _LAYER_NAME.fullmatch(scheme) else '...'}://***"
    end = shown.find("|", hidden)
    return shown if end < 0 else shown[:end]


def _place_pt(layers: list[Layer]) -> None:
    """Check where a pt layer stands, and hand it the upstream proxy written before it."""
    at = [i for i, layer in enumerate(layers) if layer.name == "pt"]
    if not at:
        return
    if len(at) > 1:
        raise ChainError("a chain can hold only one pt layer")
    i = at[0]
    layer = layers[i]
    where = f"pt:{layer.params['spec'].transport}"
    before = [b for b in layers[:i] if b.name != "direct"]
    if len(before) > 1 or any(b.name not in _PROXY_SCHEMES for b in before):
        raise ChainError(
            f"{where}: only direct and one upstream proxy (socks5://, socks4a://, http://) can "
            "come before a pt layer: the transport's client program makes its own connections"
        )
    after = layers[i + 1 : i + 2]
    if not after or after[0].name not in _NAME_TAKING:
        raise ChainError(
            f"{where}: the bridge forwards every connection to one address, a proxy that "
            "must be named next, e.g. '| socks5://127.0.0.1:1080' (its address as the bridge "
            "server sees it); see docs/transports.md"
        )
    if before:
        upstream = _proxy_url(before[0], where)
        layers[i] = Layer(layer.name, {**layer.params, "upstream": upstream}, layer.text)


def _place_tgws(layers: list[Layer]) -> None:
    """A tgws layer ends its chain: it hands over an MTProto stream to one Telegram DC (so
    does an mtproxy layer)."""
    for i, layer in enumerate(layers[:-1]):
        if layer.name == "mtproxy":
            raise ChainError(
                f"mtproxy must be the last layer: it carries MTProto to a Telegram DC, and "
                f"'{layers[i + 1].name}' cannot run inside that (put it before mtproxy: "
                "'socks5://... | mtproxy:...' reaches the proxy through another proxy)"
            )
        if layer.name == "tgws":
            after = layers[i + 1].name
            raise ChainError(
                f"tgws must be the last layer: it carries MTProto to a Telegram DC, and "
                f"'{after}' cannot run inside that (put it before tgws: 'tlsfrag:sni | "
                "tgws' shapes the ClientHello to the web endpoint, 'socks5://... | tgws' "
                "reaches it through a proxy)"
            )


_PACKET_LAYERS = tuple(trick.value for trick in Trick)


def _place_desync(layers: list[Layer]) -> None:
    """Packet layers act on the socket of the connection detour opens: one per chain, right
    after its base, and followed only by layers whose first bytes are a TLS ClientHello."""
    at = [i for i, layer in enumerate(layers) if layer.name in _PACKET_LAYERS]
    if not at:
        return
    if len(at) > 1:
        raise ChainError(
            f"{layers[at[0]]} and {layers[at[1]]}: a chain can hold only one of "
            f"{', '.join(_PACKET_LAYERS)} (each plays its trick on the same first packets)"
        )
    i = at[0]
    layer = layers[i]
    before = [b for b in layers[1:i]]
    tunnels = [b for b in before if b.name in _NAME_TAKING or b.name == "pt"]
    if tunnels:
        raise ChainError(
            f"{layer}: it acts on the TCP packets of the connection detour opens itself; after "
            f"{tunnels[-1]} those packets go to the proxy, not to the destination, and its "
            "first bytes are the proxy's protocol. Use it on a route without a proxy layer"
        )
    if before:
        shown = " | ".join(str(x) for x in [layer, *before, *layers[i + 1 :]])
        raise ChainError(
            f"{layer}: write it right after {layers[0].name}, before {before[0]} (the packet "
            f"layer sends the bytes the layers after it produce): {shown!r}"
        )
    for after in layers[i + 1 :]:
        if after.name in ("tlsfrag", "front", "tgws"):
            continue
        if after.name == "split":
            raise ChainError(
                f"{after} after {layer}: {layer.name} sends the first bytes in pieces itself; "
                "give it the cut point instead"
            )
        raise ChainError(
            f"{after} after {layer}: the trick would act on {after.name}'s own first bytes "
            "(a proxy handshake), not on the destination's TLS ClientHello; only tlsfrag, "
            "front: and tgws can follow a packet layer"
        )


def _proxy_url(layer: Layer, where: str) -> str:
    """TOR_PT_PROXY for the proxy layer before a pt layer (pt-spec 3.2.2: an IP address)."""
    proxy: Endpoint = layer.params["proxy"]
    if proxy.ip is None:
        raise ChainError(
            f"{where}: write the proxy before a pt layer with an IP address, not a name "
            "(the transport's client does not resolve it)"
        )
    userinfo = ""
    if layer.name == "socks4a":
        if layer.params["user_id"]:
            userinfo = quote(layer.params["user_id"], safe="") + "@"
    elif layer.params["username"] is not None:
        userinfo = (
            f"{quote(layer.params['username'], safe='')}:"
            f"{quote(layer.params['password'], safe='')}@"
        )
    return f"{layer.name}://{userinfo}{proxy}"


# key=value parameters whose values are secrets.
_SECRET_PARAM = re.compile(
    r"(?P<key>\b(?:key|pass|password|passwd|secret|token|cert|psk|auth|sid|uuid)=)[^&|\s]*", re.I
)
_SEGMENT = re.compile(r"[^\s|]+")
# The last separator before a position (searched with an end): where its segment starts.
_SEGMENT_START = re.compile(r"[\s|](?=[^\s|]*\Z)")
# A pt layer (where a layer starts) and its bridge up to the next layer or line: all of it
# is secret, down to the address, also when it is malformed (a quote in it ends nothing).
# "pt:obfs4: ..." (a message about one) and "pt://" (a URL, not this layer) are left alone.
_PT_LAYER = re.compile(
    r"(?<![^\s|'\"`(])pt:(?!//)(?![A-Za-z0-9_]+:)(?:bridge\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)?[^|\n]*",
    re.I,
)
# Where a URL starts: a scheme (a letter, then anything but separators; a typo in it is
# still a URL) and '://', where a layer, a quote or a `key=` value starts. A '://' inside a
# password is not one (it follows ':' or a letter), nor one after '?', '#' or '%' (a user
# name's `a?#://`: no scheme starts or holds those).
_URL_START = re.compile(r"(?<![^\s|'\"`(=])[A-Za-z][^\s|'\"`(=:/@?#%]*://")
# Link schemes (transports/links.py) whose userinfo is secret whole: a password, a UUID,
# base64 of a cipher and password. vmess's base64 JSON and the legacy ss form have no '@'
# and are secret whole; a dynamic key's path is its secret.
_LINK_SCHEMES = ("ss", "vless", "vmess", "trojan")
_LINK_WHOLE = ("ss", "vmess")


def _redact_url(url: str) -> str:
    """One URL and what follows it up to the next URL or the end of its line.

    Its userinfo runs to the last '@' (as URL parsers read it): a space, a tab or a '|'
    written in a password stays inside it, so the whole password goes, not the words after
    its first blank. In a message the text after the URL may hold an '@' too; hiding up to
    it hides more than needed, never less."""
    scheme, _, rest = url.partition("://")
    name = scheme.lower()
    if name == "ssconf":
        host = re.match(r"[^/\s|#?]*", rest)
        after = re.search(r"[\s|#]", rest)
        tail = rest[after.start() :] if after else ""
        return f"{scheme}://{host.group(0) if host else ''}/***{tail}"
    at = rest.rfind("@")
    if name in _LINK_SCHEMES:
        if at >= 0:
            return f"{scheme}://***{rest[at:]}"
        if name in _LINK_WHOLE and rest and rest[0] not in " \t|#":
            after = re.search(r"[\s|#]", rest)
            return f"{scheme}://***{rest[after.start() :] if after else ''}"
        return url
    if at < 0:
        return url
    colon = rest.find(":", 0, at)
    if colon < 0:
        return url  # a user name alone is not a secret
    return f"{scheme}://{rest[: colon + 1]}***{rest[at:]}"


def _open_userinfo(rest: str) -> bool:
    """Whether what follows a URL's '://' (no '@' in it) looks like a user name and part of
    a password cut short, not HOST[:PORT]: `alice:pa` of `socks5://alice:pa|ss@host:1`.
    A '[' starts an IP literal, never a user name (RFC 3986 §3.2.1 has no '[' in userinfo):
    `[::1:3128`, its ']' missing, is a broken host, shown as it is."""
    if rest.startswith("["):
        authority = re.match(r"[^\s|/?#'\"`]*", rest)
        if authority is None or "]" not in authority.group(0):
            return False
    host = rest.find("]") + 1 if rest.startswith("[") else 0
    authority = re.match(r"[^\s|/?#'\"`]*", rest[host:])
    colon = authority.group(0).find(":") if authority else -1
    return colon >= 0 and not authority.group(0)[colon + 1 :].isdigit()  # type: ignore[union-attr]


def _redact_userinfo(segment: str) -> str:
    """`user:password@host` outside a URL -> `user:***@host`."""
    at = segment.rfind("@")
    colon = segment.find(":", 0, at)
    if at < 0 or colon < 0:
        return segment
    return f"{segment[: colon + 1]}***{segment[at:]}"


def _redact_urls(line: str) -> str:
    starts = [m.start() for m in _URL_START.finditer(line)]
    if not starts:
        return _SEGMENT.sub(lambda m: _redact_userinfo(m.group(0)), line)
    head = _SEGMENT.sub(lambda m: _redact_userinfo(m.group(0)), line[: starts[0]])
    # A URL cut short before its '@' by a '|' in its password runs on into the next one.
    kept = [starts[0]]
    for start in starts[1:]:
        rest = line[kept[-1] : start].partition("://")[2]
        if "@" in rest or not _open_userinfo(rest):
            kept.append(start)
    ends = [*kept[1:], len(line)]
    return head + "".join(_redact_url(line[a:b]) for a, b in zip(kept, ends, strict=True))


# A relay access key holds a private key: all of it is secret.
_ACCESS_KEY = re.compile(r"\bdtr1:[A-Za-z0-9_=-]*")


def _redact_pt(match: re.Match[str]) -> str:
    text = match.group(0)
    # "pt:" inside a URL's user name ("socks5://joe'pt:PASSWORD@host") is no layer: the
    # userinfo redaction hides that password, and calling it a transport would show it.
    start = match.start()
    segment = _SEGMENT_START.search(match.string, 0, start)
    if "://" in match.string[segment.end() if segment else 0 : start]:
        return text
    tail = text[len(text.rstrip()) :]  # the space before a following '|' stays
    return f"pt:{match['name'] or ''} ***{tail}"


def redact(text: str) -> str:
    """Hide passwords, keys and bridges in a chain (or any text that may quote one).

    It reads the text as chain syntax, not as words: a URL's userinfo runs from its '://' to
    its last '@' before the next URL or line, whatever blanks or '|' a password holds; a
    pt layer's bridge runs to the next layer; key=value parameters named like secrets lose
    their values. A parsed chain shows its layers from what was parsed (`str(chain)`); this
    is for text: error messages, and a config as its file wrote it (`detour config show`)."""
    text = _ACCESS_KEY.sub("dtr1:***", text)
    text = "".join(_redact_urls(line) for line in text.splitlines(keepends=True))
    text = _PT_LAYER.sub(_redact_pt, text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}***", text)
