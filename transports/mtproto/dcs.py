"""Telegram's data centres: which addresses belong to which DC (production, media-only and
test), and where each DC's web endpoint is -- the WebSocket hosts Telegram's web clients use,
which `tgws` carries MTProto to when the DCs' own addresses are blocked.

One table, kept here and nowhere else. `DcTable` takes its data as arguments, so a caller
can replace or extend it (a `tgws:dcN=ADDR` option does, for one route; a config key will,
for all). The addresses change over time; Telegram's clients learn the current ones from
help.getConfig after connecting, so a client may dial an address this table does not know:
tgws then says so (not applicable) and the router moves to the next route.

Web endpoints (from Telegram's web clients, Web K and Web A, and TDLib's Emscripten build):

    wss://kws{N}.web.telegram.org/apiws        DC N, the client's own connection (Web K)
    wss://kws{N}-1.web.telegram.org/apiws      DC N, downloads and uploads ("media")
    wss://{pluto,venus,aurora,vesta,flora}.web.telegram.org/apiws   DC 1..5 (older clients,
                                               TDLib; "-1" for media, as above)
    /apiws_test                                the test DCs, on the same hosts
    /apiws_premium, /apiws_test_premium        media connections of Premium accounts

The upgrade names the `binary` subprotocol. Media hosts may refuse accounts without Premium
(HTTP 302 instead of an upgrade), so a media connection tries kwsN-1, then kwsN. DC 203 (a
CDN DC) and any other DC without such a host has no web endpoint: tgws cannot carry it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

__all__ = [
    "DEFAULT_DCS",
    "DataCentre",
    "DcTable",
    "WebEndpoint",
    "WebNames",
    "canonical_address",
    "planet_names",
]

WEB_PORT = 443
MAIN_PATH, TEST_PATH = "/apiws", "/apiws_test"
SUBPROTOCOL = "binary"


@dataclass(frozen=True, order=True)
class DataCentre:
    id: int
    media: bool = False  # a media-only address (downloads and uploads)
    test: bool = False  # Telegram's test environment

    def __str__(self) -> str:
        text = f"{'test ' if self.test else ''}DC {self.id}"
        return f"{text} (media)" if self.media else text


@dataclass(frozen=True)
class WebEndpoint:
    host: str  # also the TLS server name and the Host header
    path: str = MAIN_PATH
    port: int = WEB_PORT

    def __str__(self) -> str:
        port = "" if self.port == WEB_PORT else f":{self.port}"
        return f"wss://{self.host}{port}{self.path}"


@dataclass(frozen=True)
class WebNames:
    """A DC's web endpoint host names, tried in order: for its own connections, for media."""

    main: tuple[str, ...]
    media: tuple[str, ...]


def canonical_address(address: str) -> str | None:
    """The address as the table keys it (IPv4-mapped IPv6 as IPv4), None if no IP."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass(frozen=True)
class DcTable:
    """Address -> DC, and DC -> web endpoints."""

    addresses: Mapping[str, DataCentre]
    web: Mapping[int, WebNames]
    web_port: int = WEB_PORT
    _by_address: dict[str, DataCentre] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_address = {}
        for address, dc in self.addresses.items():
            key = canonical_address(address)
            if key is None:
                raise ValueError(f"{address!r} is not an IP address")
            by_address[key] = dc
        object.__setattr__(self, "_by_address", by_address)

    def lookup(self, host: str) -> DataCentre | None:
        """The DC at this address (an IP literal; names are no DC), or None."""
        key = canonical_address(host)
        return self._by_address.get(key) if key is not None else None

    def endpoints(self, dc: DataCentre) -> tuple[WebEndpoint, ...]:
        """Where to reach `dc` over WebSocket, in the order to try; empty: nowhere."""
        names = self.web.get(dc.id)
        if names is None:
            return ()
        path = TEST_PATH if dc.test else MAIN_PATH
        hosts = names.media if dc.media else names.main
        return tuple(WebEndpoint(host, path, self.web_port) for host in hosts)

    def addresses_of(self, dc: DataCentre) -> tuple[str, ...]:
        """The addresses known for `dc` (IPv4 first), e.g. to dial the DC an MTProto proxy
        client names in its init."""
        found = [a for a, d in self._by_address.items() if d == dc]
        return tuple(sorted(found, key=lambda a: ":" in a))  # stable: table order within

    def with_addresses(self, extra: Mapping[str, DataCentre]) -> DcTable:
        """This table with more addresses (replacing what it said about them)."""
        return replace(self, addresses={**self._by_address, **extra})

    def with_web_port(self, port: int) -> DcTable:
        return replace(self, web_port=port)


def _dcs(dc: DataCentre, addresses: Iterable[str]) -> dict[str, DataCentre]:
    return dict.fromkeys(addresses, dc)


_PLANETS = ("pluto", "venus", "aurora", "vesta", "flora")

# Production DCs. Sources: Telegram Desktop's built-in DC list (mtproto_dc_options.cpp) and
# the dc_options Telegram's help.getConfig returns (as published by public tools that route
# by them; the media-only ones are flagged media_only there).
_ADDRESSES: dict[str, DataCentre] = {
    **_dcs(
        DataCentre(1),
        ["149.154.175.50", "149.154.175.51", "149.154.175.53", "149.154.175.54",
         "2001:b28:f23d:f001::a"],
    ),
    **_dcs(DataCentre(1, media=True), ["149.154.175.52"]),
    **_dcs(
        DataCentre(2),
        ["149.154.167.51", "149.154.167.50", "149.154.167.41", "95.161.76.100",
         "2001:67c:4e8:f002::a"],
    ),
    **_dcs(
        DataCentre(2, media=True),
        ["149.154.167.151", "149.154.167.222", "149.154.167.223", "149.154.162.123",
         "2001:67c:4e8:f002::b"],
    ),
    **_dcs(
        DataCentre(3), ["149.154.175.100", "149.154.175.101", "2001:b28:f23d:f003::a"]
    ),
    **_dcs(DataCentre(3, media=True), ["149.154.175.102"]),
    **_dcs(
        DataCentre(4), ["149.154.167.91", "149.154.167.92", "2001:67c:4e8:f004::a"]
    ),
    **_dcs(
        DataCentre(4, media=True),
        ["149.154.164.250", "149.154.165.111", "149.154.166.120", "149.154.166.121",
         "149.154.167.118", "2001:67c:4e8:f004::b"],
    ),
    **_dcs(
        DataCentre(5),
        ["149.154.171.5", "91.108.56.130", "91.108.56.100", "91.108.56.101", "91.108.56.116",
         "91.108.56.126", "2001:b28:f23f:f005::a"],
    ),
    **_dcs(DataCentre(5, media=True), ["91.108.56.102", "91.108.56.128", "91.108.56.151"]),
    # A CDN DC (files cached near users); it has no web endpoint.
    **_dcs(DataCentre(203), ["91.105.192.100"]),
    # The test environment (Telegram Desktop's built-in test DCs).
    **_dcs(DataCentre(1, test=True), ["149.154.175.10", "2001:b28:f23d:f001::e"]),
    **_dcs(DataCentre(2, test=True), ["149.154.167.40", "2001:67c:4e8:f002::e"]),
    **_dcs(DataCentre(3, test=True), ["149.154.175.117", "2001:b28:f23d:f003::e"]),
}  # fmt: skip

_WEB: dict[int, WebNames] = {
    n: WebNames(
        main=(f"kws{n}.web.telegram.org",),
        media=(f"kws{n}-1.web.telegram.org", f"kws{n}.web.telegram.org"),
    )
    for n in range(1, 6)
}

DEFAULT_DCS = DcTable(_ADDRESSES, _WEB)


def planet_names(dc: int) -> WebNames:
    """The older names of DC 1..5's web endpoints (pluto ... flora), as TDLib's web build
    uses them: the same endpoints under other names, for a table that prefers them."""
    planet = _PLANETS[dc - 1]
    return WebNames(
        main=(f"{planet}.web.telegram.org",),
        media=(f"{planet}-1.web.telegram.org", f"{planet}.web.telegram.org"),
    )
