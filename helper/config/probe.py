"""`[probe]`: probing services through routes, and racing routes for connections
(docs/routing.md)."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import setting
from .values import duration_or_off, limit, parse_duration, rate


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
    handshakes: int = setting(
        3,
        limit,
        "At most this many TLS handshakes to one server name within `handshake_window`, from "
        "probes, strategy searches and the later routes of a connection's race together; "
        "background work leaves one of them to client connections, whose first route is never "
        "held back. `0` turns the budget off. See [search.md](search.md#the-handshake-budget).",
    )
    handshake_window: float = setting("1s", parse_duration, "The window `handshakes` counts in.")
    handshake_gap: float = setting(
        "400ms",
        parse_duration,
        "The least time between two handshakes to one server name (a client's first route aside).",
    )
