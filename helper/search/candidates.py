"""What a strategy search tries: chains of detour's own evasion layers that need no server,
in the order that finds the usual answer first (docs/search.md).

1. `tlsfrag:sni` -- the ClientHello as two TLS records, cut inside the server name (DPI that
   reads one record or one segment);
2. `oob:sni | tlsfrag:sni` -- plus an urgent byte inside the name (DPI that keeps urgent
   data in the stream);
3. `disorder:sni | tlsfrag:sni` -- plus the first piece sent so that it arrives last (DPI
   that reads in arrival order);
4. `fake:ttl=T | tlsfrag:sni` -- plus a decoy hello that expires between the DPI and the
   server; T is searched (ttl.py);
5. other cut points: records and segments at other places, their combinations;
6. the resolver: an encrypted resolver from the config, alone and with records.

Packet layers (2-4) exist on Linux only; elsewhere they are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config.routes import FOUND_PREFIX

__all__ = [
    "FIRST",
    "OTHER_CUTS",
    "Candidate",
    "fake",
    "with_resolver",
]

ROUTE_PREFIX = FOUND_PREFIX  # reserved in config files: no configured route is named so


@dataclass(frozen=True)
class Candidate:
    """One strategy: a chain, the technique it stands for, whether it acts on packets."""

    chain: str
    technique: str  # tlsfrag, oob, disorder, fake, cut, resolver
    packets: bool = False

    @property
    def key(self) -> str:
        """A short name made of the chain: `oob:sni | tlsfrag:sni` -> `oob-sni-tlsfrag-sni`."""
        chain = re.sub(r"resolve:(doh|dot|udp|tcp)=[^|]*", r"\1", self.chain)
        return re.sub(r"[^a-z0-9]+", "-", chain.lower()).strip("-")[:58]

    @property
    def route_name(self) -> str:
        """The route a winner becomes: `found-tlsfrag-sni`."""
        return ROUTE_PREFIX + self.key


def fake(ttl: int) -> Candidate:
    return Candidate(f"fake:ttl={ttl} | tlsfrag:sni", "fake", packets=True)


FIRST = (
    Candidate("tlsfrag:sni", "tlsfrag"),
    Candidate("oob:sni | tlsfrag:sni", "oob", packets=True),
    Candidate("disorder:sni | tlsfrag:sni", "disorder", packets=True),
)
# After the fake TTL search: other cut points, in records and in segments.
OTHER_CUTS = (
    Candidate("tlsfrag:1", "cut"),
    Candidate("tlsfrag:1,sni", "cut"),
    Candidate("tlsfrag:sni,segments", "cut"),
    Candidate("split:1 | tlsfrag:sni", "cut"),
    Candidate("split:1", "cut"),
    Candidate("oob:1 | tlsfrag:1,sni", "cut", packets=True),
    Candidate("disorder:1 | tlsfrag:1,sni", "cut", packets=True),
)


def with_resolver(resolve: str) -> tuple[Candidate, ...]:
    """An encrypted resolver (`resolve:doh=...`), alone and with records."""
    return (
        Candidate(resolve, "resolver"),
        Candidate(f"{resolve} | tlsfrag:sni", "resolver"),
    )
