"""The lab scenario "only TCP to a front passes": a network that drops all UDP and all TCP
but the connections to one CDN front, where calls can only go through the fronted tunnel
(transports/fronted/datagrams.py: UDP inside it; the relay abroad sends the datagrams on).

    phone/detour --TCP--> [censor: front only] --> relay --UDP (from ABROAD)--> STUN, echo
    phone/detour --UDP--> [UDP censor: drops all but ABROAD's] --x  STUN, echo
    phone/detour --TCP--> [censor: drop] --x  the services' TCP

`FrontOnly.start(relay, abroad)` stands up the STUN server and the UDP echo ("call relay"),
each behind a UDP censor that drops every datagram not sent from `abroad` (the relay's
source address, outside the censored network), and a TCP censor whose front endpoint passes
to the relay and whose service endpoints drop every flow. detour's side reaches the
services at `stun`, `echo` and `tcp_service`, the relay at `front`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transports import Endpoint

from .censor import Censor, Policy, Rule
from .udpmocks import StunServer, UdpCensor, UdpEcho, UdpService, start_censor, start_udp

__all__ = ["FrontOnly"]


@dataclass
class FrontOnly:
    front: Endpoint  # where detour reaches the relay (through the TCP censor)
    stun: Endpoint  # the STUN server, through its UDP censor
    echo: Endpoint  # the UDP echo, through its UDP censor
    tcp_service: Endpoint | None  # a service's TCP endpoint: every flow dropped
    udp_censors: list[UdpCensor] = field(default_factory=list)
    tcp_censor: Censor | None = None
    _services: list[UdpService] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        relay: Endpoint,
        abroad: str,
        *,
        front_port: int,
        tcp_service: tuple[Endpoint, int] | None = None,
        host: str = "127.0.0.1",
    ) -> FrontOnly:
        """`front_port`: where the TCP censor listens for the front (on `host`);
        `tcp_service`: (its backend, the port the censor listens on for it)."""
        services: list[UdpService] = [await start_udp(StunServer()), await start_udp(UdpEcho())]
        censors = [
            await start_censor(
                UdpCensor(s.address, drop=True, allowed_sources=frozenset({abroad})), host
            )
            for s in services
        ]
        backends = {(host, front_port): (relay.host, relay.port)}
        rules: tuple[Rule, ...] = ()
        if tcp_service is not None:
            backend, port = tcp_service
            backends[(host, port)] = (backend.host, backend.port)
            rules = (Rule("drop", name="not the front", ports=frozenset({port})),)
        tcp = Censor(backends, Policy(rules=rules, name="only TCP to a front passes"))
        await tcp.start()
        return cls(
            front=Endpoint(host, front_port),
            stun=censors[0].address,
            echo=censors[1].address,
            tcp_service=Endpoint(host, tcp_service[1]) if tcp_service else None,
            udp_censors=censors,
            tcp_censor=tcp,
            _services=services,
        )

    @property
    def udp_dropped(self) -> int:
        return sum(c.dropped for c in self.udp_censors)

    async def stop(self) -> None:
        if self.tcp_censor is not None:
            await self.tcp_censor.stop()
        for item in (*self.udp_censors, *self._services):
            item.close()
