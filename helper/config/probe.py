"""`[probe]`: probing services through routes, and racing routes for connections
(docs/routing.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transports import Endpoint

from .schema import setting
from .values import duration_or_off, flag, limit, parse_duration, rate

# Public resolvers' addresses, reached by IP (no DNS needed) on 443: reachable from censored
# networks (Yandex's, in Russia, stays up on Russian networks; the others are not blocked
# by address where the services are) and from uncensored ones. docs/routing.md "Offline".
CONTROL_TARGETS = ["77.88.8.8:443", "1.1.1.1:443", "9.9.9.9:443", "8.8.8.8:443"]


def control_target(value: Any) -> Endpoint:
    """An `IP:PORT` a control measurement connects to: an address, so that no DNS is needed."""
    if not isinstance(value, str):
        raise ValueError('expected "IP:PORT", e.g. "77.88.8.8:443"')
    try:
        endpoint = Endpoint.parse(value)
    except ValueError as exc:
        raise ValueError(f'{exc} (e.g. "77.88.8.8:443" or "[2a02:6b8::feed:0ff]:443")') from None
    if endpoint.ip is None:
        raise ValueError(f"{value!r}: an IP address, not a name (a control needs no DNS)")
    return endpoint


def patience(value: Any) -> float:
    """How many times its deadlines a probe may take on a slow machine: a number >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number of times the deadlines, 1 to 10 (1: never more)")
    if not 1 <= value <= 10:
        raise ValueError(f"{value}: from 1 (deadlines never stretch) to 10")
    return float(value)


@dataclass(frozen=True)
class ProbeConfig:
    interval: float = setting(
        "5m",
        parse_duration,
        "How often the services clients use are re-probed (jittered by 10%).",
    )
    timeout: float = setting("5s", parse_duration, "How long one probe target may take.")
    stagger: float = setting(
        "250ms",
        parse_duration,
        "Delay before the next route starts when a connection races its routes.",
    )
    min_rate: int = setting(
        "32KB",
        rate,
        "A probe download slower than this many bytes per second counts as `throttled`; `0` "
        "turns it off.",
    )
    first_answer: float = setting(
        "3s",
        duration_or_off,
        "How long a route may take to answer a client's TLS ClientHello before detour sends it "
        "through the next route; `0` turns retrying off.",
    )
    control_targets: tuple[Endpoint, ...] = setting(
        CONTROL_TARGETS,
        each=control_target,
        doc="Addresses (`IP:PORT`) that answer from censored and uncensored networks alike: "
        "when no service, no DNS and none of these answers, detour says the network is down "
        "instead of blaming censorship, and probes again as soon as one answers "
        "([routing.md](routing.md#offline-or-censored)). `[]`: only a missing route says "
        "the network is down.",
    )
    handshakes: int = setting(
        3,
        limit,
        "At most this many TLS handshakes to one server name within `handshake_window`, from "
        "probes, strategy searches and the later routes of a connection's race together; "
        "background work leaves one of them to client connections, whose first route is never "
        "held back -- except a tunnel to a front (`front:`), which always waits its turn by the "
        "front's name, with at most this many under way at once. `0` turns the budget off. "
        "See [search.md](search.md#the-handshake-budget) and [relay.md](relay.md).",
    )
    handshake_window: float = setting("1s", parse_duration, "The window `handshakes` counts in.")
    handshake_gap: float = setting(
        "400ms",
        parse_duration,
        "The least time between two handshakes to one server name (a client's first route aside).",
    )
    stall_timeout: float = setting(
        "10s",
        duration_or_off,
        "A client connection whose server stops sending in the middle of a TLS record (or "
        "leaves a client that repeats itself unanswered) for this long counts against its "
        "route: the route fails for that service (`frozen_after_16KB`) and the next "
        "connections take another one. Idle connections never count. `0` turns it off. See "
        "[routing.md](routing.md#frozen-connections).",
    )
    stall_close: bool = setting(
        False,
        flag,
        "Also close a connection once it is seen frozen (its application then reconnects, "
        "through another route); by default it is left open.",
    )
    patience: float = setting(
        3,
        patience,
        "At most this many times `timeout` a probe target may take, and its freeze check's "
        "silence may last, on a machine or network measured slow: the time the event loop "
        "lost while the target ran, and connects and handshakes that take long, stretch "
        "them (a quiet machine's deadlines are the configured ones). `1` turns it off. See "
        "[routing.md](routing.md#a-slow-machine).",
    )
