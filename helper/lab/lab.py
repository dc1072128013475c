"""The lab: a mock network on one machine -- the host table's servers, the lab resolver
(UDP, TCP and DoH), the censor in front of every server, and the routes the lab offers --
started and stopped as one thing, in-process (the test suite's fixture) or by `detour lab`.

A scenario sets the censor's policy and the resolver's rules; `set_scenario` changes them
while the lab runs (new flows and queries see the change). `helper_config` writes the detour
configuration that uses the lab: its resolver, its CA, its routes, its services.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import shutil
import tempfile
from collections.abc import Awaitable
from pathlib import Path

from aiohttp import web

from transports.resolver import StaticResolver

from ..files import write_private
from .ca import LabCA
from .censor import Censor
from .dns import LabResolver
from .dnsserver import DnsServer, doh_routes
from .hosts import DEFAULT_NETWORK, PUBLIC_RESOLVERS, HostTable, LabHost
from .scenario import Scenario, load_scenario
from .servers import Backend, start_backend, websocket_echo_app
from .telegram import DcLog

__all__ = ["Lab", "LabError"]

log = logging.getLogger("detour.lab")

# Hidden backends behind the CDN front, by the Host name a fronted request carries.
CDN_BACKENDS = ("ws-echo.lab.test",)
# Routes whose tricks act on packets, in the kernel-level lab's config: its censor reads
# packets one hop from the client and its servers are two hops away, so a decoy with TTL 2
# reaches the censor and expires before the servers.
PACKET_ROUTES = (
    ("split", "split:1"),
    ("disorder", "disorder:sni"),
    ("oob", "oob:sni"),
    ("fake", "fake:ttl=2"),
)


class LabError(Exception):
    """The lab cannot start; the message says why and what to do."""


class Lab:
    netns = False  # userland: every flow passes the censor in this process

    def __init__(
        self,
        scenario: Scenario | str = "baseline",
        *,
        network: str | ipaddress.IPv4Network = DEFAULT_NETWORK,
        directory: Path | None = None,
        routable: bool = False,
        stand_in: bool = False,
    ) -> None:
        # routable: the lab runs in its own network namespace (netns.py) on a private network
        # instead of loopback addresses; stand_in: on a public-looking one (netns.py).
        self.table = HostTable(ipaddress.IPv4Network(network), routable=routable, stand_in=stand_in)
        self._routable = routable
        self.scenario = self._runnable(
            load_scenario(scenario, self.table) if isinstance(scenario, str) else scenario
        )
        self._given_directory = directory
        self.directory: Path | None = None
        self._ca: LabCA | None = None
        # The network's resolver (UDP and TCP on port 53), which lies as the scenario says,
        # and an honest encrypted one (DoH), as a public DoH service is, unless blocked.
        self.resolver = LabResolver(
            self.table.dns_table(),
            self.scenario.dns,
            blockpage_v4=self.table.address("blockpage"),
        )
        self.honest_resolver = LabResolver(self.table.dns_table())
        self.dns: DnsServer | None = None
        self.censor: Censor | None = None
        self._backends: list[Backend] = []
        # What the mock Telegram DCs saw from clients (userland lab: in this process).
        self.dc_events = DcLog()

    @property
    def dns_address(self) -> tuple[str, int]:
        return self.table.dns_address, 53

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    @property
    def ca(self) -> LabCA:
        if self._ca is None:
            raise LabError("the lab is not running")
        return self._ca

    async def _start(self) -> None:
        if self._given_directory is not None:
            self.directory = self._given_directory
        else:
            self.directory = Path(tempfile.mkdtemp(prefix="detour-lab-"))
        self._ca = LabCA(self.directory / "ca")
        self.dns = DnsServer(self.resolver, self.table.dns_address, 53)
        await _bind(self.dns.start(), f"{self.table.dns_address}:53")
        hidden: dict[str, tuple[str, int]] = {}
        for name in CDN_BACKENDS:
            backend = await _serve_hidden(websocket_echo_app())
            self._backends.append(backend)
            hidden[name] = ("127.0.0.1", backend.port)
        hidden["relay.lab.test"] = await self._start_relay()
        routes: dict[tuple[str, int], tuple[str, int]] = {}
        # The DCs' servers, for the web endpoints (which reach them inside "Telegram's
        # network", not through the censor); the host table lists the DCs first.
        web_dcs: dict[int, tuple[str, int]] = {}
        for host in self.table:
            context = self.ca.server_context(*self._cert_names(host))
            dc = int(host.key[-1]) if host.kind == "telegram-dc" else 0
            for port in host.ports:
                backend = await start_backend(
                    host.kind,
                    context=context,
                    port=port,
                    dns_table=self.table.dns_table(),
                    local_address=self.table.address(host),
                    cdn_backends=hidden,
                    doh=lambda app: app.add_routes(doh_routes(self.honest_resolver)),
                    dot=self.honest_resolver,
                    dc=dc,
                    dc_events=self.dc_events,
                    web_dcs=web_dcs,
                )
                self._backends.append(backend)
                routes[(self.table.address(host), port)] = ("127.0.0.1", backend.port)
                if dc and port == 443:
                    web_dcs[dc] = ("127.0.0.1", backend.port)
        # The lab's own routes dial from their lab addresses; the censor lets those through.
        outside = {self.table.address(key) for key in ("socks", "http-proxy", "cdn", "relay")}
        self.censor = Censor(routes, self.scenario.policy(self.table), outside=outside)
        await _bind(self.censor.start(), f"the addresses of {self.table.network}")
        log.info("lab running on %s, scenario %s", self.table.network, self.scenario.name)

    async def _start_relay(self) -> tuple[str, int]:
        """A detour relay behind the CDN, and an access key to it for the helper's config."""
        from transports import Endpoint

        from ..relay.config import RelayConfig
        from ..relay.keys import RelayKeys
        from ..relay.server import RelayServer

        assert self.directory is not None
        keys = RelayKeys(self.directory / "relay")
        keys.generate()
        config = RelayConfig(
            listen=Endpoint("127.0.0.1", 0),
            state=keys.directory,
            allow="any",
            public_networks=(self.table.network,),
        )
        server = RelayServer(
            config,
            keys,
            resolver=StaticResolver(self.table.dns_table()),
            local_address=self.table.address("relay"),
        )
        _, port = await server.start()
        self._backends.append(Backend(port, server.stop))
        key = keys.add_client(
            "lab", Endpoint(self.table.address("cdn"), 443), "cdn.lab.test", "relay.lab.test"
        )
        write_private(self.front_key_path, key.encode() + "\n")
        return "127.0.0.1", port

    @property
    def front_key_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "front.key"

    def _cert_names(self, host: LabHost) -> tuple[str, ...]:
        extra = PUBLIC_RESOLVERS if host.kind == "doh" else ()
        return (*host.names, self.table.address(host), *extra)

    async def stop(self) -> None:
        if self.censor is not None:
            await self.censor.stop()
            self.censor = None
        if self.dns is not None:
            await self.dns.stop()
            self.dns = None
        for backend in reversed(self._backends):
            await backend.stop()
        self._backends.clear()
        if self.directory is not None and self._given_directory is None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        self._ca = None

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def set_scenario(self, scenario: Scenario | str) -> None:
        """Switch to another scenario while running: new flows and queries follow it."""
        if isinstance(scenario, str):
            scenario = load_scenario(scenario, self.table)
        self.scenario = self._runnable(scenario)
        self.resolver.rules = scenario.dns
        if self.censor is not None:
            await self.censor.set_policy(scenario.policy(self.table))

    def _runnable(self, scenario: Scenario) -> Scenario:
        """The scenario, if this lab can run it: some need the kernel-level lab. (Inside
        the kernel-level lab's namespace this class runs the userland part of any.)"""
        why = scenario.needs_netns
        if why and not self._routable:
            raise LabError(
                f"scenario {scenario.name!r} needs the kernel-level lab (--netns): {why}"
            )
        return scenario

    def helper_config(self, listen: str = "127.0.0.1:1080") -> str:
        """A detour config that uses this lab: its resolver, CA, routes and services."""
        front = self.front_key_path.read_text().strip()
        return helper_config(self.table, self.ca.ca_path, self.scenario.name, listen, front)


def helper_config(
    table: HostTable,
    ca_path: Path,
    scenario: str,
    listen: str,
    front_key: str,
    *,
    packets: bool = False,
    system_resolver: bool = False,
) -> str:
    """The detour configuration for a lab on `table`'s network. `packets`: with the routes
    whose tricks act on packets (the kernel-level lab, where packets cross hops);
    `system_resolver`: detour resolves with the system's resolver."""
    t = table
    doh = f"resolve:doh={t.doh_url};bootstrap={t.address('doh')};public={t.network}"
    resolver = f"udp://{t.dns_address}:53;public={t.network}"
    if system_resolver:
        resolver = f"system;public={t.network}"
    # The lab's DCs are not at Telegram's addresses: the route says which DC each is.
    tgws = "tgws:" + ";".join(f"dc{n}={t.address(f'telegram-dc{n}')}" for n in range(1, 6))
    lines = [
        f"# detour configuration for the lab on {t.network}, scenario {scenario!r}",
        "# (written by `detour lab`; valid while that lab runs)",
        "",
        "# The lab's routes and services only, not the built-in ones.",
        "[base]",
        'config = "none"',
        "",
        "[listen]",
        f'mixed = "{listen}"',
        "",
        "[dns]",
        "# The network's resolver, which the scenario may make lie. The lab's addresses",
        "# stand for the public internet: private answers there are not tampering.",
        f'resolver = "{resolver}"',
        "",
        "[tls]",
        f'extra_ca = ["{ca_path}"]',
        "",
        "[default]",
        'policy = "direct"',
        "",
        "[probe]",
        "# Everything in the lab answers at once: a short timeout keeps probing quick.",
        'timeout = "3s"',
        "# The lab's resolver answers on TCP too: the control target that shows the network",
        "# is up (the public ones are not reachable from a lab).",
        f'control_targets = ["{t.dns_address}:53"]',
        "# The lab's servers count nobody's handshakes: every route is probed at once (the",
        "# built-in handshake budget is docs/search.md's).",
        "handshakes = 0",
        "",
        "[search]",
        "# Searches run when asked (`detour probe --search`), not on their own, so what the",
        "# lab's routes do is what a test sees.",
        "auto = false",
        "",
    ]
    for name, chain in (
        ("direct", "direct"),
        ("tls-fragment", "tlsfrag:sni"),
        ("doh", doh),
        ("doh-fragment", f"{doh} | tlsfrag:sni"),
        ("tgws", tgws),  # Telegram's DCs through their web endpoints (docs/telegram.md)
        ("tgws-fragment", f"tlsfrag:sni | {tgws}"),
        ("lab-socks", t.socks_url),
        ("lab-http", t.http_proxy_url),
        ("front", f"front:{front_key}"),  # a tunnel to the lab's relay, fronted by cdn.lab.test
        *PACKET_ROUTES * packets,
    ):
        lines += ["[[route]]", f'name = "{name}"', f'chain = "{chain}"', ""]
    for service, third, domains, probes in (
        (
            "telegram",
            1,
            ("telegram.org", "t.me"),
            (
                "https://web.telegram.org/bytes/65536",
                f"mtproto://{t.address('telegram-dc2')}:443",
            ),
        ),
        (
            "whatsapp",
            2,
            ("whatsapp.net", "whatsapp.com"),
            (
                "tcp://g.whatsapp.net:5222",
                "tls://web.whatsapp.com:443",
                "https://mmg.whatsapp.net/bytes/65536",
            ),
        ),
        (
            "signal",
            3,
            ("signal.org",),
            ("tls://chat.signal.org:443", "tls://storage.signal.org:443"),
        ),
    ):
        lines += [
            "[[service]]",
            f'name = "{service}"',
            "domains = [" + ", ".join(f'"{d}"' for d in domains) + "]",
            f'cidrs = ["{t.subnet(third)}"]',
            "probes = [" + ", ".join(f'"{p}"' for p in probes) + "]",
            "",
        ]
    return "\n".join(lines)


async def _serve_hidden(app: web.Application) -> Backend:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return Backend(runner.addresses[0][1], runner.cleanup)


async def _bind(start: Awaitable[None], what: str) -> None:
    try:
        await start
    except PermissionError:
        raise LabError(
            f"cannot listen on {what}: the lab serves the real ports (53, 80, 443, 5222). "
            "Run it as root, give Python CAP_NET_BIND_SERVICE, or allow low ports with "
            "`sysctl net.ipv4.ip_unprivileged_port_start=0`."
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise LabError(
                f"cannot listen on {what}: address in use (another lab on this network? "
                "use --network to pick another, e.g. 127.78.0.0/16)"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise LabError(
                f"cannot listen on {what}: address not available. On Linux every 127.x.y.z "
                "is loopback; on other systems add the lab addresses to lo first."
            ) from None
        raise
