"""`[search]`: the strategy search, which finds the evasion that works on this network
(docs/search.md)."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import setting
from .values import count, flag


@dataclass(frozen=True)
class SearchConfig:
    auto: bool = setting(
        True,
        flag,
        "Search on its own: on a network detour has not seen (or when it remembers none), for "
        "services whose direct route fails; and when every route of a service stops "
        "working. Once a service's search finds nothing, it is not searched again until one "
        "of its routes works again (or on demand). `false`: only on demand.",
    )
    confirm: int = setting(
        2,
        count,
        "Successes in a row (through one server name, then through every probe target) that "
        "make a strategy stable; the search of that service stops there.",
    )
    attempts: int = setting(
        30,
        count,
        "At most this many attempts per service in one search; then it ends with a verdict.",
    )
    packets: bool = setting(
        True,
        flag,
        "Whether the search tries the layers that act on packets (`fake`, `disorder`, `oob`; "
        "Linux only).",
    )
