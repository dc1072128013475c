"""Shadowsocks, spoken by detour itself: the AEAD ciphers (SIP004) and the 2022 edition
(SIP022), and Outline's access keys (static `ss://` and dynamic `ssconf://`).

    methods.py  ciphers, password and key derivation (cryptography; BLAKE3 for 2022)
    codec.py    the stream formats without sockets: request, response, replay checks
    server.py   a server as a client knows it (address, cipher, key, prefix)
    dialer.py   the `ss://` and `ssconf://` layers' Dialers and the stream they give
    outline.py  Outline's dynamic key configs and fetching them over HTTPS

The link texts (ss://, ssconf://) are parsed in transports/links.py.
"""

from .codec import ClientCodec, SaltPool, ServerCodec, ShadowsocksKey, StreamError
from .dialer import OutlineDialer, ShadowsocksDialer, ShadowsocksStream
from .methods import METHODS, Method, MethodError, method_named
from .outline import OutlineKey, OutlineKeyError, parse_outline_config
from .server import ShadowsocksServer, shadowsocks_server

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
