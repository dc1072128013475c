"""The lab's host table: every mock server, the names that resolve to it, the loopback
address it lives on and what it serves. Everything else in the lab is driven by this table
(the DNS answers, the certificates, the censor's listeners, the helper config).

Each host gets its own address in the lab network (127.77.0.0/16 by default; on Linux all of
127.0.0.0/8 is loopback), so IP rules can single it out, and a second lab can run beside the
first on another network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from .telegram import WEB_NAMES

__all__ = ["DEFAULT_NETWORK", "HOSTS", "PUBLIC_RESOLVERS", "HostTable", "LabHost"]

DEFAULT_NETWORK = ipaddress.IPv4Network("127.77.0.0/16")

# What runs on a host:
#   https        web server, TLS on 443 and plain HTTP on 80 (hello page, /bytes/N, POST)
#   echo         TCP echo (WhatsApp chat endpoints speak their own protocol; echo is enough)
#   telegram-dc  plain HTTP on 80 and 443, as Telegram's data centres answer OONI's probe,
#                and MTProto after an obfuscated2 init (the start of a key exchange)
#   telegram-ws  Telegram's web endpoints: TLS, WebSocket on /apiws, carried to the DCs
#   bulk         HTTP and HTTPS large-file downloads, to measure rates
#   blockpage    where a censoring resolver sends people: an HTTP block page
#   doh          DNS over HTTPS on 443 and DNS over TLS on 853 (the lab's honest resolver)
#   socks        an upstream SOCKS5 proxy outside the censor
#   http-proxy   an upstream HTTP CONNECT proxy outside the censor
#   cdn          a CDN front: TLS for front names, routes by Host to hidden backends
#   relay        a detour relay behind the CDN front (the far end of a `front:` route)
KINDS = (
    "https", "echo", "telegram-dc", "telegram-ws", "bulk", "blockpage", "doh", "socks",
    "http-proxy", "cdn", "relay",
)  # fmt: skip


@dataclass(frozen=True)
class LabHost:
    key: str  # short identifier, used in scenario files and logs
    names: tuple[str, ...]  # DNS names that resolve to this host
    offset: int  # address = network address + offset
    kind: str
    ports: tuple[int, ...]
    service: str | None = None  # the messaging service it stands for


def _at(third: int, fourth: int) -> int:
    return (third << 8) + fourth


HOSTS: tuple[LabHost, ...] = (
    # --- infrastructure -------------------------------------------------------------------
    LabHost("doh", ("doh.lab.test", "dns.google"), _at(0, 54), "doh", (443, 853)),
    LabHost("blockpage", ("blocked.lab.test",), _at(0, 80), "blockpage", (80, 443)),
    # --- Telegram ---------------------------------------------------------------------------
    LabHost("telegram-web", ("web.telegram.org",), _at(1, 10), "https", (443,), "telegram"),
    LabHost("telegram-site", ("telegram.org", "t.me"), _at(1, 11), "https", (80, 443), "telegram"),
    *(
        LabHost(f"telegram-dc{n}", (), _at(1, 50 + n), "telegram-dc", (80, 443), "telegram")
        for n in range(1, 6)
    ),
    # The web endpoints (kwsN, kwsN-1, pluto..flora under web.telegram.org), one address as
    # Telegram's share a few; after the DCs, which they carry connections to.
    LabHost("telegram-ws", WEB_NAMES, _at(1, 20), "telegram-ws", (443,), "telegram"),
    # --- WhatsApp ---------------------------------------------------------------------------
    # whatsapp.net itself stands in for the media host WhatsApp's proxy forwards to (:443).
    LabHost(
        "whatsapp-g",
        ("g.whatsapp.net", "whatsapp.net"),
        _at(2, 1),
        "echo",
        (80, 443, 5222),
        "whatsapp",
    ),
    *(
        LabHost(
            f"whatsapp-e{n}",
            (f"e{n}.whatsapp.net",),
            _at(2, 10 + n),
            "echo",
            (443, 5222),
            "whatsapp",
        )
        for n in range(1, 17)
    ),
    LabHost("whatsapp-web", ("web.whatsapp.com",), _at(2, 50), "https", (80, 443), "whatsapp"),
    LabHost("whatsapp-v", ("v.whatsapp.net",), _at(2, 51), "https", (443,), "whatsapp"),
    LabHost("whatsapp-media", ("mmg.whatsapp.net",), _at(2, 52), "bulk", (443,), "whatsapp"),
    # --- Signal -----------------------------------------------------------------------------
    *(
        LabHost(f"signal-{name}", (f"{name}.signal.org",), _at(3, n), "https", (443,), "signal")
        for n, name in enumerate(("chat", "storage", "cdsi", "sfu.voip"), start=1)
    ),
    # --- routes the lab offers, outside the censor (but reached through it) -----------------
    LabHost("socks", ("socks.lab.test",), _at(8, 1), "socks", (1080,)),
    LabHost("http-proxy", ("proxy.lab.test",), _at(8, 2), "http-proxy", (3128,)),
    LabHost("cdn", ("cdn.lab.test", "static.cdn.lab.test"), _at(8, 3), "cdn", (443,)),
    # A detour relay hidden behind the CDN (no port of its own: reached only through the
    # front, by Host); its connections leave from this address.
    LabHost("relay", ("relay.lab.test",), _at(8, 4), "relay", ()),
    # --- controls and measurement -----------------------------------------------------------
    LabHost("bulk", ("files.lab.test",), _at(9, 1), "bulk", (80, 443)),
    LabHost("control", ("control.lab.test",), _at(9, 2), "https", (443,)),
)

# The public encrypted resolvers' addresses the built-in config uses (Cloudflare, Google,
# Quad9): the doh host's certificate names them too, so a lab that stands in for the
# internet (netns.py, `stand_in`) can send them to it.
PUBLIC_RESOLVERS = ("1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9", "149.112.112.112")

# The resolver itself answers on UDP and TCP port 53 at this offset (not through the censor,
# which handles TCP flows only; the lying resolver is where DNS censorship happens).
DNS_OFFSET = _at(0, 53)


class HostTable:
    """The host table placed on a lab network."""

    def __init__(
        self,
        network: ipaddress.IPv4Network = DEFAULT_NETWORK,
        hosts: tuple[LabHost, ...] = HOSTS,
        *,
        routable: bool = False,
        stand_in: bool = False,
    ) -> None:
        if network.prefixlen > 16:
            raise ValueError(f"lab network {network} is too small (use a /16 or larger)")
        if routable and stand_in:
            # Standing in for the internet (netns.py): public-looking addresses, which no
            # resolver's bogon check refuses; they exist only inside the lab's namespaces.
            if network.is_private or network.is_loopback or network.is_multicast:
                raise ValueError(f"a stand-in lab network must look public, not {network}")
        elif routable:
            # In its own network namespace the lab needs addresses a veth can route to.
            if not network.is_private or network.is_loopback:
                raise ValueError(f"lab network {network} must be private, like 10.77.0.0/16")
        elif not network.is_loopback:
            raise ValueError(f"lab network {network} must be inside 127.0.0.0/8")
        self.network = network
        self.hosts = hosts
        self._by_key = {host.key: host for host in hosts}

    def address(self, host: LabHost | str) -> str:
        if isinstance(host, str):
            host = self._by_key[host]
        return str(self.network.network_address + host.offset)

    @property
    def dns_address(self) -> str:
        return str(self.network.network_address + DNS_OFFSET)

    def subnet(self, third: int) -> ipaddress.IPv4Network:
        """The /24 of the lab network whose third octet offset is `third` (1 is Telegram's)."""
        base = self.network.network_address + (third << 8)
        return ipaddress.IPv4Network(f"{base}/24")

    def host(self, key: str) -> LabHost:
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"no lab host {key!r}") from None

    def __iter__(self) -> Iterator[LabHost]:
        return iter(self.hosts)

    @property
    def socks_url(self) -> str:
        return f"socks5://{self.address('socks')}:1080"

    @property
    def http_proxy_url(self) -> str:
        return f"http://{self.address('http-proxy')}:3128"

    doh_url = "https://doh.lab.test/dns-query"

    def dns_table(self) -> dict[str, list[str]]:
        """Name -> addresses, as the honest resolver answers."""
        return {name: [self.address(host)] for host in self.hosts for name in host.names}

    def endpoints(self) -> Iterator[tuple[LabHost, str, int]]:
        """Every (host, address, port) a client can dial."""
        for host in self.hosts:
            for port in host.ports:
                yield host, self.address(host), port
