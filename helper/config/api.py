"""`[api]`: the headless status API (docs/status-api.md); off while `listen` is not set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import Endpoint
from transports.base import IPNetwork

from .schema import Problems, read_section, setting
from .values import flag, is_loopback, network, parse_listen_address, string

# Endpoints served to anyone without the token: what browsers fetch (a PAC) and watchdogs
# poll, which cannot send a token. Neither says who connects where.
API_PUBLIC_PATHS = ("/proxy.pac", "/healthz")

# A token is a password a script stores: long enough not to be guessed over the network.
API_TOKEN_MIN = 16
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: it travels in an HTTP header


def _token(value: Any) -> str:
    token = string(value)
    if not _TOKEN.match(token):
        raise ValueError("use printable ASCII without spaces (it is sent in an HTTP header)")
    if len(token) < API_TOKEN_MIN:
        raise ValueError(
            f"too short ({len(token)} characters; at least {API_TOKEN_MIN}); generate one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def _public_path(value: Any) -> str:
    path = string(value)
    if path not in API_PUBLIC_PATHS:
        valid = ", ".join(f'"{p}"' for p in API_PUBLIC_PATHS)
        raise ValueError(f"{path!r} cannot be public (these can: {valid})")
    return path


@dataclass(frozen=True)
class ApiConfig:
    """The headless status API (docs/status-api.md); off while `listen` is None."""

    listen: Endpoint | None = setting(
        None,
        parse_listen_address,
        'Address of the API: `"127.0.0.1:9080"`, or a LAN address / `"0.0.0.0:9080"` on a '
        "router. Same form as `[listen] mixed`; port `0` picks a free port.",
        shown="none (off)",
    )
    # Loopback clients need the token only with `loopback_token` (a local script should not
    # have to read a secret to see status).
    token: str | None = setting(
        None,
        _token,
        "Bearer token (`Authorization: Bearer TOKEN`) that clients on other machines must "
        "send. **Required** when `listen` is not a loopback address. At least 16 printable "
        "ASCII characters, no spaces; `python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(32))'` makes one. Never logged, never served.",
        secret=True,
    )
    loopback_token: bool = setting(
        False,
        flag,
        "Require the token from loopback clients (127.0.0.0/8, ::1) too. Without it, programs "
        "on the same machine read the API without a token. Needs `token`.",
    )
    allow: tuple[IPNetwork, ...] = setting(
        [],
        each=network,
        doc="Clients that may connect to the API, as IP addresses or CIDR ranges; others are "
        "closed before a byte is read. Empty: `[listen] allow`'s (when that is empty too, "
        "every client; the token still decides). Loopback clients may always connect. Each "
        "client address may hold 8 connections to the API at once, loopback clients 64 of "
        "their own.",
        shown="listen.allow",
    )
    public: frozenset[str] = setting(
        [],
        each=_public_path,
        collect=frozenset,
        doc='Endpoints served to anyone, without the token: `"/proxy.pac"` (browsers cannot '
        'send a token when they fetch a PAC) and `"/healthz"` (watchdogs). `/status` and '
        "`/metrics` cannot be public: they show who connects where.",
    )


def read_api(
    data: Any, problems: Problems, base: Path | None = None, below: ApiConfig | None = None
) -> ApiConfig:
    api: ApiConfig = read_section(ApiConfig, "api", data, problems, base, below)
    # Across keys: where the API listens decides whether the token is required. A token that
    # was given but refused has its own problem already.
    token_given = api.token is not None or (isinstance(data, dict) and "token" in data)
    if api.listen is not None and not is_loopback(api.listen) and not token_given:
        problems.add(
            "api.token",
            f"required because api.listen ({api.listen}) is reachable from other machines "
            "(or listen on 127.0.0.1)",
        )
    if api.loopback_token and not token_given:
        problems.add("api.loopback_token", "needs api.token")
    return api
