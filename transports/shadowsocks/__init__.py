"""Shadowsocks, spoken by detour itself: the AEAD ciphers (SIP004) and the 2022 edition
(SIP022), and Outline's access keys (static `ss://` and dynamic `ssconf://`).

    methods.py  ciphers, password and key derivation (cryptography; BLAKE3 for 2022)
    key.py      a method with its key material (no cipher loaded)
    codec.py    the stream formats without sockets: request, response, replay checks
    server.py   a server as a client knows it (address, cipher, key, prefix)
    dialer.py   the `ss://` and `ssconf://` layers' Dialers and the stream they give
    outline.py  Outline's dynamic key configs and fetching them over HTTPS

The link texts (ss://, ssconf://) are parsed in transports/links.py.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codec import ClientCodec, SaltPool, ServerCodec, StreamError
    from .dialer import OutlineDialer, ShadowsocksDialer, ShadowsocksStream
    from .key import ShadowsocksKey
    from .methods import METHODS, Method, MethodError, method_named
    from .outline import OutlineKey, OutlineKeyError, parse_outline_config
    from .server import ShadowsocksServer, shadowsocks_server

# Each name is loaded from its module on first use (PEP 562): reading a link (methods,
# server, outline) must not load the codec and its ciphers (cryptography, 6.6 MB resident).
_WHERE = {
    "ClientCodec": "codec",
    "SaltPool": "codec",
    "ServerCodec": "codec",
    "StreamError": "codec",
    "OutlineDialer": "dialer",
    "ShadowsocksDialer": "dialer",
    "ShadowsocksStream": "dialer",
    "ShadowsocksKey": "key",
    "METHODS": "methods",
    "Method": "methods",
    "MethodError": "methods",
    "method_named": "methods",
    "OutlineKey": "outline",
    "OutlineKeyError": "outline",
    "parse_outline_config": "outline",
    "ShadowsocksServer": "server",
    "shadowsocks_server": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "METHODS",
    "ClientCodec",
    "Method",
    "MethodError",
    "OutlineDialer",
    "OutlineKey",
    "OutlineKeyError",
    "SaltPool",
    "ServerCodec",
    "ShadowsocksDialer",
    "ShadowsocksKey",
    "ShadowsocksServer",
    "ShadowsocksStream",
    "StreamError",
    "method_named",
    "parse_outline_config",
    "shadowsocks_server",
]
