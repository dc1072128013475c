"""The headless status API: what a router's owner, a monitoring system or a script asks a
running detour (docs/status-api.md).

    GET /status     the probe JSON of `detour probe --json`, from the latest probes, plus
                    listeners, open connections, version and uptime
    GET /metrics    Prometheus text format (helper/metrics.py)
    GET /proxy.pac  a proxy auto-config file: the services' destinations through detour,
                    everything else direct
    GET /healthz    "ok" (200) or why not (503), for watchdogs

Off unless `[api] listen` is set. Clients on other machines must send `Authorization:
Bearer TOKEN`; loopback clients need it only with `loopback_token = true`; endpoints in
`public` need it from nobody. Nothing served carries a secret: chains are redacted, listener
passwords are never read here, and the token is kept only as a digest to compare against.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from transports import Endpoint

from . import __version__
from .config import ApiConfig
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .pac import proxy_pac
from .probe.report import ServiceReport

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["StatusApi", "status_document"]

log = logging.getLogger("detour.api")

_HOST_NAME = re.compile(r"[A-Za-z0-9.:-]{1,253}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusApi:
    def __init__(self, engine: Engine, config: ApiConfig) -> None:
        assert config.listen is not None
        self.engine = engine
        self.config = config
        # Subscribed now, before the engine starts, so the first probes are counted.
        self.metrics = Metrics(engine.events)
        self.started = time.time()
        self._token_digest = (
            hashlib.sha256(config.token.encode()).digest() if config.token is not None else None
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the API actually listens (port 0 in a config means any)."""
        if self._runner is None or not self._runner.addresses:
            return None
        host, port = self._runner.addresses[0][:2]
        return host, port

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth])
        app.on_response_prepare.append(_no_store)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/proxy.pac", self._pac)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self) -> None:
        assert self.config.listen is not None
        self.started = time.time()
        self.metrics.started = self.started
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, self.config.listen.host, self.config.listen.port, reuse_address=True
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(exc.errno, f"status API on {self.config.listen}: {reason}") from None
        self._runner, self._site = runner, site
        self.metrics.start()
        host, port = self.address or (self.config.listen.host, self.config.listen.port)
        log.info("status API on http://%s/status", Endpoint(host, port))

    async def stop(self) -> None:
        await self.metrics.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    # --- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A bug answers 500 with a plain sentence; the traceback goes to the log only."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("status API: %s %s failed", request.method, request.path)
            return web.Response(status=500, text="internal error; see detour's log\n")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._needs_token(request) and not self._token_ok(request):
            return web.Response(
                status=401,
                text="a bearer token is required (Authorization: Bearer TOKEN)\n",
                headers={"WWW-Authenticate": 'Bearer realm="detour"'},
            )
        return await handler(request)

    def _needs_token(self, request: web.Request) -> bool:
        if request.path in self.config.public:
            return False
        if self.config.loopback_token:
            return True
        return not _is_loopback(_peer_ip(request))

    def _token_ok(self, request: web.Request) -> bool:
        if self._token_digest is None:
            # No token configured: the API listens on loopback only (the config says so),
            # so a client from elsewhere arrives only through a redirect; refuse it.
            return False
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Digests of equal length: the comparison takes the same time whatever was sent.
        digest = hashlib.sha256(given.strip().encode(errors="replace")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    # --- endpoints ------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        document = status_document(self.engine, self)
        return web.Response(
            text=json.dumps(document, indent=2) + "\n", content_type="application/json"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render(self.engine)
        response = web.Response(body=body.encode())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    async def _pac(self, request: web.Request) -> web.Response:
        host, port = _proxy_address(self.engine, request)
        body = proxy_pac(list(self.engine.router.services), host, port)
        return web.Response(
            body=body.encode(), content_type="application/x-ns-proxy-autoconfig", charset="utf-8"
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, reason = health(self.engine)
        return web.Response(status=200 if healthy else 503, text=reason + "\n")


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    """Status is live: no cache on the way may keep an answer (errors included)."""
    response.headers["Cache-Control"] = "no-store"


# --- documents ----------------------------------------------------------------------------


def status_document(engine: Engine, api: StatusApi | None = None) -> dict[str, Any]:
    """GET /status: the probe JSON from the monitor's latest results, and live state."""
    now = time.time()
    started = api.started if api is not None else now
    router, monitor = engine.router, engine.monitor
    services = []
    for service in router.services:
        names = service.routes or [route.name for route in router.routes]
        results = [
            monitor.results[(service.name, name)]
            for name in names
            if (service.name, name) in monitor.results
        ]
        entry = ServiceReport(service.name, results).to_json()
        active = router.active_route(service)
        entry["active_route"] = active.name if active is not None else None
        entry["probing"] = service.name in monitor.probing
        services.append(entry)
    return {
        "version": __version__,
        "started_at": round(started, 3),
        "uptime_s": round(max(0.0, now - started), 3),
        "services": services,
        "listeners": listeners(engine, api),
        "connections": connections(engine),
    }


def listeners(engine: Engine, api: StatusApi | None = None) -> list[dict[str, str]]:
    out = [
        {"kind": "mixed", "address": str(Endpoint(host, port))}
        for host, port in engine.listener.sockets
    ]
    if engine.transparent is not None:
        out.extend(
            {"kind": "transparent", "address": str(Endpoint(host, port))}
            for host, port in engine.transparent.sockets
        )
    if engine.whatsapp is not None:
        out.extend(
            {"kind": f"whatsapp-{kind}", "address": str(Endpoint(host, port))}
            for kind, host, port in engine.whatsapp.sockets
        )
    if api is not None and api.address is not None:
        out.append({"kind": "api", "address": str(Endpoint(*api.address))})
    return out


def connections(engine: Engine) -> list[dict[str, Any]]:
    now = time.monotonic()
    out = []
    for conn in sorted(engine.listener.connections.values(), key=lambda c: c.id):
        out.append(
            {
                "id": conn.id,
                "client": conn.client,
                "protocol": conn.protocol or None,
                "target": str(conn.target) if conn.target is not None else None,
                "service": conn.service,
                "route": conn.route,
                "state": "relaying" if conn.route is not None else "connecting",
                "bytes_up": conn.stats.up,
                "bytes_down": conn.stats.down,
                "duration_s": round(max(0.0, now - conn.started), 3),
            }
        )
    return out


def health(engine: Engine) -> tuple[bool, str]:
    """Healthy: the mixed listener accepts connections, and some service has a route known
    to work -- or some service is not checked yet (just started), or there are none."""
    if not engine.listener.sockets:
        return False, "listener not running"
    router = engine.router
    if any(router.active_route(service) is not None for service in router.services):
        return True, "ok"
    for service in router.services:
        names = service.routes or [route.name for route in router.routes]
        if all(router.health.get(service.name, name).ok is None for name in names):
            return True, "ok"  # not checked yet: it may work
    if not router.services:
        return True, "ok"
    return False, "no service has a working route"


def _peer_ip(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return None
    try:
        return ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None


def _is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    return ip is not None and _unmapped(ip).is_loopback


def _proxy_address(engine: Engine, request: web.Request) -> tuple[str, int]:
    """The mixed listener as the requester can reach it: its own address, or, when it
    listens on every address (0.0.0.0, ::), the address this request came in on."""
    host, port = engine.listener.sockets[0] if engine.listener.sockets else ("127.0.0.1", 0)
    ip = _unmapped(ipaddress.ip_address(host.split("%", 1)[0]))
    if not ip.is_unspecified:
        return str(ip), port
    local = request.transport.get_extra_info("sockname") if request.transport else None
    if local:
        own = _unmapped(ipaddress.ip_address(local[0].split("%", 1)[0]))
        if own.version == ip.version:
            return str(own), port
    # The listener and this request use different IP versions (asyncio's "::" listeners are
    # IPv6 only): the name the requester used for this host, when it is a plain name.
    name = (request.url.raw_host or "").strip("[]")
    if _HOST_NAME.fullmatch(name):
        return name, port
    return ("127.0.0.1" if ip.version == 4 else "::1"), port


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
