"""The running proxy, built from a Config: the router with its routes and services, the
prober and the monitor that keep route health fresh, the event stream, the counters, and the
client server with the listeners applications connect to. The headless runner and the
terminal UI are two front ends on the same Engine; they and the status API see it through
status snapshots (`Engine.snapshot`).

A reload (`Engine.reload`, SIGHUP when headless) builds a new router from a new Config and
switches new connections to it; connections already relayed keep the router (and the
resolvers) they started with, which are closed when the last of them ends. Draining
(`Engine.drain`) stops accepting and lets established connections finish, up to a deadline.

Why this module is long: the engine owns every part's lifetime (build, reload, drain, stop)
and the snapshot that gathers them; each part's logic lives in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transports import DialError, Endpoint
from transports.chain import base_dialer
from transports.core import CoreDialer
from transports.guard import AddressPolicy, LocalAddresses
from transports.heap import keep_large_buffers
from transports.pt import ManagedClient, PtDialer, PtManager
from transports.resolver import Resolver, StaticResolver

from .config import Config
from .events import EventBus
from .probe.network import NetworkWatch
from .probe.probe import Prober
from .proxy import ClientServer, MixedListener, TransparentListener
from .proxy.mixed import listen_admission
from .proxy.mtproto import MTProtoProxy
from .proxy.signal import SignalProxy
from .proxy.whatsapp import WhatsAppProxy
from .routing import Router
from .routing.monitor import HealthMonitor
from .routing.present import present_routes
from .routing.state import HealthStore, network_id, state_dir
from .routing.udp_monitor import UdpMonitor
from .search.budget import HandshakeBudget
from .search.control import Searches
from .search.runner import StrategySearch, restore_strategies
from .status import ListenerView, Snapshot, Tally, frozen_mapping

if TYPE_CHECKING:
    from .api import StatusApi

__all__ = ["Engine", "ReloadResult"]

log = logging.getLogger("detour")


@dataclass
class _Generation:
    """One config's router and the resources only it uses (resolvers that keep
    connections), closed when its last connection has ended."""

    config: Config
    router: Router
    resolver: Resolver
    resources: contextlib.AsyncExitStack
    tls: ssl.SSLContext  # one per config: each holds its own copy of the CA store
    # The pluggable transport children its routes use (shared with other generations).
    pt_clients: frozenset[ManagedClient] = frozenset()


@dataclass(frozen=True)
class ReloadResult:
    """What a reload changed (applied to new connections) and what needs a restart."""

    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        resolver: Resolver | None = None,
        listen: Endpoint | None = None,
        store: HealthStore | None = None,
        network: str | None = None,
        probe_on_start: bool = True,
    ) -> None:
        """`store` remembers route health per network (None: nothing remembered); `network`
        names the network (default: detected from the gateway and subnet)."""
        self.events = EventBus()
        # Counters kept where their events happen, shared by every config a reload brings in.
        self.tally = Tally()
        # Pluggable transport clients (`pt:` routes) start on first use, keep their state
        # under the state directory, and stop with the engine. They are shared by every
        # config a reload brings in: a child is keyed by program, transport and proxy, so an
        # unchanged `pt:` route keeps its running (bootstrapped) child across a reload.
        self.pluggable = PtManager(state_dir() / "pt")
        self._resources = contextlib.AsyncExitStack()
        self._resources.push_async_callback(self.pluggable.aclose)
        self._given_resolver = resolver
        self._store = store
        self._network = network_id() if network is None and store is not None else (network or "")
        # One handshake budget for probes, searches and races (its limits follow reloads).
        self.budget = HandshakeBudget(
            config.probe.handshakes, config.probe.handshake_window, config.probe.handshake_gap
        )
        # The strategy searches (helper/search/): on demand and on their triggers.
        self.searches = Searches(self)
        self._generation = self._build(config, contextlib.AsyncExitStack())
        # Whether the network is up at all (offline is not censorship): kept across reloads.
        self.network = NetworkWatch(config.probe.control_targets, timeout=config.probe.timeout)
        self._retiring: set[asyncio.Task[None]] = set()
        self._old: list[_Generation] = []  # replaced by a reload, connections still open
        self._reloading = asyncio.Lock()
        self.prober, self.monitor, self.search = self._monitoring(self._generation, store)
        # UDP health, probed apart from TCP's (docs/udp.md "UDP health and probes").
        self.udp_monitor = UdpMonitor(
            lambda: self.router, interval=config.probe.interval, network=self.network
        )
        self._probe_on_start = probe_on_start
        # Every client connection, whichever listener it came in on (helper/proxy/server.py).
        self.server = ClientServer(
            self.router,
            events=self.events,
            tally=self.tally,
            first_answer=config.probe.first_answer,
        )
        self.server.stall_timeout = config.probe.stall_timeout
        self.server.stall_close = config.probe.stall_close
        # The mixed and transparent listeners count their clients together and let clients
        # not on this machine reach the same destinations.
        admission = listen_admission(config.listen)
        policy = AddressPolicy(config.listen.remote_public, LocalAddresses())
        self.listener = self.server.add(
            MixedListener(config.listen, admission, policy, address=listen)
        )
        self.transparent: TransparentListener | None = None
        if config.listen.transparent is not None:
            self.transparent = self.server.add(
                TransparentListener(config.listen, admission, policy)
            )
        # Transparent UDP (TPROXY): LAN devices' calls, under the mixed listener's rules.
        self.transparent_udp = None
        if config.listen.transparent_udp is not None:
            from .proxy.tproxy_udp import TransparentUdp

            self.transparent_udp = TransparentUdp(
                config.listen.transparent_udp, self.server, self.listener
            )
        # [whatsapp_proxy]: its ports, with their own limits.
        self.whatsapp: WhatsAppProxy | None = None
        if config.whatsapp_proxy is not None:
            self.whatsapp = WhatsAppProxy(
                config.whatsapp_proxy,
                allow=config.listen.allow,
                state=state_dir() / "whatsapp-proxy",
            )
            for port in self.whatsapp.ports:
                self.server.add(port)
        # [mtproto_proxy]: Telegram's apps set to use detour as an MTProto proxy.
        self.mtproto: MTProtoProxy | None = None
        if config.mtproto_proxy is not None:
            self.mtproto = self.server.add(
                MTProtoProxy(
                    config.mtproto_proxy,
                    allow=config.listen.allow,
                    dcs=config.telegram.dc_table(),
                )
            )
        # [signal_proxy]: its port, with its own limits.
        self.signal: SignalProxy | None = None
        if config.signal_proxy is not None:
            self.signal = self.server.add(
                SignalProxy(config.signal_proxy, allow=config.listen.allow)
            )
        # The status API (off unless [api] listen is set) reads snapshots of this engine.
        self.api: StatusApi | None = None
        if config.api.listen is not None:
            from .api import StatusApi

            self.api = StatusApi(self.snapshot, config.api, config.listen.allow)

    # The current generation's parts, as the front ends and the status views know them.
    @property
    def config(self) -> Config:
        return self._generation.config

    @config.setter
    def config(self, config: Config) -> None:
        """What the front ends show as the config; the routes stay (reload() rebuilds them)."""
        self._generation.config = config

    @property
    def router(self) -> Router:
        return self._generation.router

    @property
    def resolver(self) -> Resolver:
        return self._generation.resolver

    def _build(self, config: Config, resources: contextlib.AsyncExitStack) -> _Generation:
        tls = config.tls.client_context()
        resolver = self._given_resolver
        if resolver is None:
            # The services' names are public: the system resolver's answers for them get
            # the bogon check (a private address there is the network's resolver lying).
            checked = [domain for service in config.services for domain in service.domains]
            resolver = config.dns.resolver.build(tls, config.dns.timeout, checked=checked)
            close = getattr(resolver, "aclose", None)
            if close is not None:
                resources.push_async_callback(close)
            if config.dns.hosts:
                # Names in [dns] hosts never reach the resolver (nor its bogon check).
                resolver = StaticResolver(config.dns.hosts, fallback=resolver)
        router = Router.from_config(
            present_routes(config),
            resolver,
            tls=tls,
            resources=resources,
            events=self.events,
            pluggable=self.pluggable,
            tally=self.tally,
            budget=self.budget,
        )
        return _Generation(config, router, resolver, resources, tls, _pt_clients(router))

    def _monitoring(
        self, generation: _Generation, store: HealthStore | None
    ) -> tuple[Prober, HealthMonitor, StrategySearch]:
        config = generation.config
        prober = Prober(
            timeout=config.probe.timeout,
            tls=generation.tls,
            min_rate=config.probe.min_rate,
            compare_resolver=_encrypted_resolver(generation.router),
            events=self.events,
            budget=self.budget,
            patience=config.probe.patience,
        )
        monitor = HealthMonitor(
            generation.router,
            prober,
            interval=config.probe.interval,
            store=store,
            network=self._network,
            tally=self.tally,
            network_watch=self.network,
        )
        # The search probes candidates that are no routes yet: no events for them.
        search_prober = Prober(
            timeout=config.probe.timeout,
            tls=generation.tls,
            min_rate=config.probe.min_rate,
            budget=self.budget,
            patience=config.probe.patience,
        )
        monitor.on_probed = self.searches.after_probe
        search = StrategySearch(
            generation.router,
            search_prober,
            confirm=config.search.confirm,
            attempts=config.search.attempts,
            packets=config.search.packets,
            store=self._store,
            network=self._network,
        )
        return prober, monitor, search

    @property
    def mixed_address(self) -> tuple[str, int]:
        """Where the mixed listener actually listens (port 0 in a config means any)."""
        return self.listener.sockets[0]

    def snapshot(self) -> Snapshot:
        """What detour is doing now, as one immutable value (helper/status.py): what the
        status API, the metrics and the terminal UI show."""
        router = self.router
        results, probes = self.monitor.probe_status()
        listeners = self.server.listener_views()
        if self.api is not None and self.api.address is not None:
            listeners.append(ListenerView("api", *self.api.address))
        return Snapshot(
            taken_at=time.time(),
            monotonic=time.monotonic(),
            services=router.service_views(self.monitor.probing),
            routes=router.route_views(),
            health=frozen_mapping(router.health.frozen()),
            results=frozen_mapping(results),
            probes=probes,
            connections=self.server.connection_views(),
            listeners=tuple(listeners),
            counters=self.tally.freeze(),
            default_policy=router.default_policy,
            network=self.network.state,
            search=self.searches.view(),
            mtproto_links=tuple(self.mtproto.links()) if self.mtproto is not None else (),
            links=(self.signal.link_view(),) if self.signal is not None else (),
            udp=self._udp_views(),
            udp_health=frozen_mapping(router.udp_health.latest()),
            udp_routes=self.udp_monitor.route_views(),
            udp_probes=self.udp_monitor.view(),
        )

    def _udp_views(self) -> tuple:
        """The UDP listeners' associations and counters (helper/proxy/udp.py)."""
        views = [self.listener.udp.view("mixed")]
        if self.transparent_udp is not None:
            views.append(self.transparent_udp.budget.view("transparent-udp"))
        return tuple(views)

    async def start(self) -> None:
        keep_large_buffers()  # relayed streams' 128-256 KiB buffers without page faults
        if self.api is not None:
            await self.api.start()
        try:
            if self.whatsapp is not None:
                await self.whatsapp.prepare()
            if self.signal is not None:
                self.signal.load()
            await self.server.start()
            if self.transparent_udp is not None:
                try:
                    self.transparent_udp.start()
                except BaseException:
                    await self.server.stop()
                    raise
        except BaseException:
            if self.api is not None:
                await self.api.stop()
            raise
        if self.transparent is not None:
            log.info("transparent listener on %s", Endpoint(*self.transparent.sockets[0]))
        if self.transparent_udp is not None:
            log.info("transparent UDP on %s", self.transparent_udp.bound)
        if self.whatsapp is not None:
            self.whatsapp.announce(self.router.services, self.router.default_policy)
        # Without a memory of networks, every network is one detour has not seen.
        self.searches.new_network = self._store is None or not self._store.knows(self._network)
        if self._store is not None:
            restored = restore_strategies(self.router, self._store, self._network)
            if restored:
                log.info("using %d strategies a search found on this network before", restored)
        if self.mtproto is not None:
            self.mtproto.announce()
        if self.signal is not None:
            self.signal.announce(self.router.services, self.router.default_policy)
        await self.monitor.start(probe_now=self._probe_on_start)
        self.udp_monitor.start(probe_now=self._probe_on_start)
        from .subscriptions.refresh import SubscriptionRefresher

        # [[subscription]] lists fetched when due (it idles without any).
        self.subscriptions = SubscriptionRefresher(self)
        self.subscriptions.start()
        host, port = self.mixed_address
        log.info(
            "listening on %s (SOCKS5, SOCKS4a, HTTP); routes: %s; services: %s",
            Endpoint(host, port),
            ", ".join(str(route) for route in self.router.routes),
            ", ".join(s.name for s in self.router.services) or "none",
        )

    async def reload(self, config: Config) -> ReloadResult:
        """Switch new connections to a router built from `config`. Established connections
        keep theirs. Raises what building the routes raises (the old config stays)."""
        async with self._reloading:
            old = self._generation
            changed, restart = describe_changes(old.config, config)
            # What cannot change without a restart keeps its running value.
            config = dataclasses.replace(
                config, **{name: getattr(old.config, name) for name in _restart_sections()}
            )
            resources = contextlib.AsyncExitStack()
            try:
                new = self._build(config, resources)
            except BaseException:
                await resources.aclose()
                raise
            new.router.adopt(old.router)
            new.router.udp_health.adopt(old.router.udp_health)
            # The switch itself does not wait for anything: no connection can start between
            # the old router and the new one.
            old_monitor = self.monitor
            self._generation = new
            self.network.configure(config.probe.control_targets, config.probe.timeout)
            self.budget.limit = config.probe.handshakes
            self.budget.window = config.probe.handshake_window
            self.budget.gap = config.probe.handshake_gap
            latest = self.search.report  # what the status shows until the next search
            self.prober, self.monitor, self.search = self._monitoring(new, None)
            self.search.report = latest
            self.server.router = new.router
            self.server.first_answer = config.probe.first_answer
            self.server.stall_timeout = config.probe.stall_timeout
            self.server.stall_close = config.probe.stall_close
            if self.signal is not None:
                self.signal.recheck()  # a renewed certificate, if its files changed
            self._retire(old)
            await old_monitor.stop()
            # Probe at once (the routes or services may be new); the health carried over
            # orders connections meanwhile. The store is not re-read: what this run learnt
            # is fresher than what it remembers.
            await self.monitor.start(probe_now=self._probe_on_start)
            self.monitor.store = self._store
            self.udp_monitor.interval = config.probe.interval
            if self._probe_on_start:
                self.udp_monitor.request()  # the services' UDP probes or routes may be new
            return ReloadResult(tuple(changed), tuple(restart))

    def _retire(self, old: _Generation) -> None:
        """Close the old router's resources once no connection uses it any more."""

        self._old.append(old)

        async def retire() -> None:
            try:
                await self.server.released(old.router)
            finally:
                self._old.remove(old)
                await old.resources.aclose()
                # PT children are shared: stop those no config in use needs any more.
                wanted = self._generation.pt_clients.union(*(g.pt_clients for g in self._old))
                for client in old.pt_clients - wanted:
                    log.info("stopping the %s: no route uses it any more", client.name)
                    await self.pluggable.forget(client)
                log.debug("closed the resources of the previous config (%s)", old.config.source)

        task = asyncio.get_running_loop().create_task(retire(), name="detour-retire-config")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def drain(self, timeout: float, force: asyncio.Event | None = None) -> int:
        """Stop accepting; wait until every connection has ended, `timeout` seconds pass, or
        `force` is set. Returns how many connections were still open (stop() cuts them)."""
        self.server.stop_accepting()
        waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self.server.idle())}
        if force is not None:
            waits.add(asyncio.ensure_future(force.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return self.server.open_connections

    async def stop(self) -> None:
        if getattr(self, "subscriptions", None) is not None:
            await self.subscriptions.stop()
        await self.searches.stop()
        if self.api is not None:
            await self.api.stop()
        await self.monitor.stop()
        await self.udp_monitor.stop()
        await self.network.aclose()
        if self.transparent_udp is not None:
            self.transparent_udp.stop()
        await self.server.stop()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        # A retirement cancelled before it ran has not closed its config's resources.
        for generation in [*self._old, self._generation]:
            await generation.resources.aclose()
        self._old.clear()
        await self._resources.aclose()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# What a reload applies: everything the router, its resolvers and the prober are built
# from. Every other part of a Config (the listeners and who may use them, and any section
# added later) keeps its running value until a restart, and a reload says so.
_RELOADABLE = frozenset(
    {"dns", "tls", "probe", "search", "routes", "services", "default_policy", "source"}
    | {"subscriptions", "pool_base"}  # the pools' nodes are routes
)


def _restart_sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config) if f.name not in _RELOADABLE]


def describe_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """What differs between two configs, as short phrases: (applied by a reload, needing a
    restart). Secrets never appear: routes are named, not shown."""
    changed: list[str] = []
    old_routes = {r.name: r for r in old.routes}
    new_routes = {r.name: r for r in new.routes}
    added = [n for n in new_routes if n not in old_routes]
    removed = [n for n in old_routes if n not in new_routes]
    modified = [n for n in new_routes if n in old_routes and new_routes[n] != old_routes[n]]
    if added:
        changed.append(f"routes added: {', '.join(added)}")
    if removed:
        changed.append(f"routes removed: {', '.join(removed)}")
    if modified:
        changed.append(f"routes changed: {', '.join(modified)}")
    kept = [n for n in new_routes if n in old_routes]
    if not added and not removed and kept != [n for n in old_routes if n in new_routes]:
        changed.append(f"route order: {', '.join(new_routes)}")
    old_services = {s.name: s for s in old.services}
    new_services = {s.name: s for s in new.services}
    for label, names in (
        ("services added", [n for n in new_services if n not in old_services]),
        ("services removed", [n for n in old_services if n not in new_services]),
        (
            "services changed",
            [n for n in new_services if n in old_services and new_services[n] != old_services[n]],
        ),
    ):
        if names:
            changed.append(f"{label}: {', '.join(names)}")
    if old.default_policy != new.default_policy:
        changed.append(f"default policy: {old.default_policy} -> {new.default_policy}")
    for section in ("dns", "tls", "probe"):
        if getattr(old, section) != getattr(new, section):
            changed.append(f"[{section}] settings")
    restart = []
    for section in _restart_sections():
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        if dataclasses.is_dataclass(before) and type(before) is type(after):
            restart += [
                f"{section}.{field.name}"
                for field in dataclasses.fields(before)
                if getattr(before, field.name) != getattr(after, field.name)
            ]
        else:
            restart.append(section)
    return changed, restart


def _pt_clients(router: Router) -> frozenset[ManagedClient]:
    """The children a router's routes dial through (made, not started): pluggable transport
    clients and proxy cores."""
    clients = set()
    for route in router.routes:
        base = base_dialer(route.dialer)
        if isinstance(base, PtDialer | CoreDialer):
            try:
                clients.add(base.client())
            except DialError:
                pass  # its program is not installed (or cannot do the link): nothing runs
    return frozenset(clients)


def _encrypted_resolver(router: Router) -> Resolver | None:
    """A route's encrypted resolver (DoH, DoT), to check the network's DNS answers against."""
    for route in router.routes:
        if route.resolver is not None and route.chain.resolver_kind in ("doh", "dot"):
            return route.resolver
    return None
