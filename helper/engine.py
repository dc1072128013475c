"""The running proxy, built from a Config: the router with its routes and services, the
prober and the monitor that keep route health fresh, the event stream, and the listeners
applications connect to. The headless runner and the terminal UI are two front ends on the
same Engine.

A reload (`Engine.reload`, SIGHUP when headless) builds a new router from a new Config and
switches new connections to it; connections already relayed keep the router (and the
resolvers) they started with, which are closed when the last of them ends. Draining
(`Engine.drain`) stops accepting and lets established connections finish, up to a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transports import DialError, Endpoint
from transports.chain import base_dialer
from transports.core import CoreDialer
from transports.pt import ManagedClient, PtDialer, PtManager
from transports.resolver import Resolver, StaticResolver

from .config import Config
from .events import EventBus
from .probe.probe import Prober
from .proxy import MixedListener, TransparentListener
from .proxy.serving import ClientListener
from .proxy.whatsapp import WhatsAppProxy
from .routing import Router
from .routing.monitor import HealthMonitor
from .routing.present import present_routes
from .routing.state import HealthStore, network_id, state_dir

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
        self._generation = self._build(config, contextlib.AsyncExitStack())
        self._retiring: set[asyncio.Task[None]] = set()
        self._old: list[_Generation] = []  # replaced by a reload, connections still open
        self._reloading = asyncio.Lock()
        self.prober, self.monitor = self._monitoring(self._generation, store)
        self._probe_on_start = probe_on_start
        self.listener = MixedListener(
            config.listen,
            self.router,
            address=listen,
            events=self.events,
            first_answer=config.probe.first_answer,
        )
        # Redirected connections share the mixed listener's limits, destination policy and
        # connection table (so every status view shows them).
        self.transparent: TransparentListener | None = None
        if config.listen.transparent is not None:
            self.transparent = TransparentListener(
                config.listen,
                self.router,
                events=self.events,
                first_answer=config.probe.first_answer,
                book=self.listener.book,
                policy=self.listener.policy,
                connections=self.listener.connections,
                ids=self.listener.ids,
            )
        # The status API (off unless [api] listen is set) subscribes to the events now, so
        # its metrics count the first probes too.
        self.api: StatusApi | None = None
        if config.api.listen is not None:
            from .api import StatusApi

            self.api = StatusApi(self, config.api)
        # [whatsapp_proxy]: its connections go into the mixed listener's table, so every
        # status view shows them.
        self.whatsapp: WhatsAppProxy | None = None
        if config.whatsapp_proxy is not None:
            self.whatsapp = WhatsAppProxy(
                config.whatsapp_proxy,
                self.router,
                allow=config.listen.allow,
                state=state_dir() / "whatsapp-proxy",
                events=self.events,
                connections=self.listener.connections,
                ids=self.listener.ids,
                first_answer=config.probe.first_answer,
            )

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
            resolver = config.dns.resolver.build(tls, checked=checked)
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
        )
        return _Generation(config, router, resolver, resources, tls, _pt_clients(router))

    def _monitoring(
        self, generation: _Generation, store: HealthStore | None
    ) -> tuple[Prober, HealthMonitor]:
        config = generation.config
        prober = Prober(
            timeout=config.probe.timeout,
            tls=generation.tls,
            min_rate=config.probe.min_rate,
            compare_resolver=_encrypted_resolver(generation.router),
            events=self.events,
        )
        monitor = HealthMonitor(
            generation.router,
            prober,
            interval=config.probe.interval,
            store=store,
            network=self._network,
        )
        return prober, monitor

    @property
    def listeners(self) -> list[ClientListener]:
        """Every listener clients connect to: reload gives each the new router, drain stops
        them accepting and waits for their connections (helper/proxy/serving.py)."""
        found: list[ClientListener] = [self.listener]
        if self.transparent is not None:
            found.append(self.transparent)
        if self.whatsapp is not None:
            found.append(self.whatsapp)
        return found

    @property
    def mixed_address(self) -> tuple[str, int]:
        """Where the mixed listener actually listens (port 0 in a config means any)."""
        return self.listener.sockets[0]

    async def start(self) -> None:
        if self.api is not None:
            await self.api.start()
        try:
            await _listen(self.listener, "listen.mixed")
            try:
                if self.transparent is not None:
                    await _listen(self.transparent, "listen.transparent")
                    log.info("transparent listener on %s", Endpoint(*self.transparent.sockets[0]))
                if self.whatsapp is not None:
                    await self.whatsapp.start()
            except BaseException:
                if self.transparent is not None:
                    await self.transparent.stop()
                await self.listener.stop()
                raise
        except BaseException:
            if self.api is not None:
                await self.api.stop()
            raise
        await self.monitor.start(probe_now=self._probe_on_start)
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
            _carry_over(old.router, new.router)
            # The switch itself does not wait for anything: no connection can start between
            # the old router and the new one.
            old_monitor = self.monitor
            self._generation = new
            self.prober, self.monitor = self._monitoring(new, None)
            for listener in self.listeners:
                listener.router = new.router
                listener.first_answer = config.probe.first_answer
            self._retire(old)
            await old_monitor.stop()
            # Probe at once (the routes or services may be new); the health carried over
            # orders connections meanwhile. The store is not re-read: what this run learnt
            # is fresher than what it remembers.
            await self.monitor.start(probe_now=self._probe_on_start)
            self.monitor.store = self._store
            return ReloadResult(tuple(changed), tuple(restart))

    def _retire(self, old: _Generation) -> None:
        """Close the old router's resources once no connection uses it any more."""

        self._old.append(old)

        async def retire() -> None:
            try:
                for listener in self.listeners:
                    await listener.released(old.router)
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
        for listener in self.listeners:
            listener.stop_accepting()
        waiter = asyncio.ensure_future(
            asyncio.gather(*(listener.idle() for listener in self.listeners))
        )
        waits: set[asyncio.Future[object]] = {waiter}
        if force is not None:
            waits.add(asyncio.ensure_future(force.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return sum(listener.open_connections for listener in self.listeners)

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.stop()
        await self.monitor.stop()
        for listener in reversed(self.listeners):
            await listener.stop()
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
_RELOADABLE = frozenset({"dns", "tls", "probe", "routes", "services", "default_policy", "source"})


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


def _carry_over(old: Router, new: Router) -> None:
    """Keep what the old router learnt about routes that did not change (same name, same
    chain), and the user's pins and disabled routes where they still make sense."""
    before = {route.name: route.chain for route in old.routes}
    same = {route.name for route in new.routes if before.get(route.name) == route.chain}
    for (service, route), health in old.health.items():
        if route in same:
            new.health.set(service, route, health)
    names = {route.name for route in new.routes}
    services = {service.name for service in new.services}
    new.pins.update({s: r for s, r in old.pins.items() if s in services and r in names})
    new.disabled.update(name for name in old.disabled if name in names)


async def _listen(listener: MixedListener, key: str) -> None:
    """Start `listener`; a failure says which setting and address, in a sentence (as the
    status API's and the WhatsApp proxy's do)."""
    try:
        await listener.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if isinstance(exc, PermissionError):
            reason += "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
        raise OSError(exc.errno, f"{key} {listener.address}: {reason}") from None


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
