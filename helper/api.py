"""The headless status API: what a router's owner, a monitoring system or a script asks a
running detour (docs/status-api.md).

    GET /status     the probe JSON of `detour probe --json`, from the latest probes, plus
                    listeners, open connections, version and uptime
    GET /metrics    Prometheus text format (helper/metrics.py)
    GET /proxy.pac  a proxy auto-config file: the services' destinations through detour,
                    everything else direct
    GET /healthz    "ok" (200) or why not (503), for watchdogs

Served by the small HTTP/1.1 server in helper/http_server.py (one request per connection).
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
import re
import time
from collections.abc import Callable
from typing import Any

from transports import Endpoint

from . import __version__
from .config import ApiConfig
from .http_server import HttpServer, Request, Response
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .pac import proxy_pac
from .probe.report import ServiceReport
from .status import Snapshot

__all__ = ["StatusApi", "status_document"]

log = logging.getLogger("detour.api")

_HOST_NAME = re.compile(r"[A-Za-z0-9.:-]{1,253}")

# Status is live: no cache on the way may keep an answer (errors included).
_NO_STORE = (("Cache-Control", "no-store"),)
_ALLOWED = "GET, HEAD"


class StatusApi:
    def __init__(self, snapshot: Callable[[], Snapshot], config: ApiConfig) -> None:
        """`snapshot`: takes a status snapshot of the running detour (Engine.snapshot)."""
        assert config.listen is not None
        self.snapshot = snapshot
        self.config = config
        self.metrics = Metrics()
        self.started = time.time()
        self._token_digest = (
            hashlib.sha256(config.token.encode()).digest() if config.token is not None else None
        )
        self._endpoints = {
            "/status": self._status,
            "/metrics": self._metrics,
            "/proxy.pac": self._pac,
            "/healthz": self._healthz,
        }
        self._server: HttpServer | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the API actually listens (port 0 in a config means any)."""
        return self._server.address if self._server is not None else None

    async def start(self) -> None:
        assert self.config.listen is not None
        self.started = time.time()
        self.metrics.started = self.started
        server = HttpServer(
            self.handle,
            self.config.listen.host,
            self.config.listen.port,
            name="status API",
            headers=_NO_STORE,
        )
        await server.start()  # an address in use: OSError "status API on HOST:PORT: ..."
        self._server = server
        host, port = self.address or (self.config.listen.host, self.config.listen.port)
        log.info("status API on http://%s/status", Endpoint(host, port))

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # --- one request ----------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Authentication first (an unknown path asks for the token too, so that without it
        nobody learns which paths exist), then the endpoint. A bug answers 500 with a plain
        sentence; the traceback goes to the log only."""
        if self._needs_token(request) and not self._token_ok(request):
            return Response.text(
                401,
                "a bearer token is required (Authorization: Bearer TOKEN)\n",
                (("WWW-Authenticate", 'Bearer realm="detour"'),),
            )
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return Response.text(404, f"no such endpoint; there are {', '.join(self._endpoints)}\n")
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, "only GET and HEAD\n", (("Allow", _ALLOWED),))
        try:
            return await endpoint(request)
        except Exception:
            log.exception("status API: %s %s failed", request.method, request.path)
            return Response.text(500, "internal error; see detour's log\n")

    def _needs_token(self, request: Request) -> bool:
        if request.path in self.config.public:
            return False
        if self.config.loopback_token:
            return True
        return not _is_loopback(_peer_ip(request))

    def _token_ok(self, request: Request) -> bool:
        if self._token_digest is None:
            # No token configured: the API listens on loopback only (the config says so),
            # so a client from elsewhere arrives only through a redirect; refuse it.
            return False
        scheme, _, given = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Digests of equal length: the comparison takes the same time whatever was sent.
        digest = hashlib.sha256(given.strip().encode(errors="replace")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    # --- endpoints ------------------------------------------------------------------------

    async def _status(self, request: Request) -> Response:
        document = status_document(self.snapshot(), self.started)
        body = (json.dumps(document, indent=2) + "\n").encode()
        return Response(200, body, "application/json; charset=utf-8")

    async def _metrics(self, request: Request) -> Response:
        body = self.metrics.render(self.snapshot())
        return Response(200, body.encode(), METRICS_CONTENT_TYPE)

    async def _pac(self, request: Request) -> Response:
        snapshot = self.snapshot()
        host, port = _proxy_address(snapshot, request)
        body = proxy_pac([s.service for s in snapshot.services], host, port)
        return Response(200, body.encode(), "application/x-ns-proxy-autoconfig; charset=utf-8")

    async def _healthz(self, request: Request) -> Response:
        healthy, reason = health(self.snapshot())
        return Response.text(200 if healthy else 503, reason + "\n")


# --- documents ----------------------------------------------------------------------------


def status_document(snapshot: Snapshot, started: float | None = None) -> dict[str, Any]:
    """GET /status: the probe JSON from the monitor's latest results, and live state.
    `started`: when the API started (default: now)."""
    now = snapshot.taken_at
    started = now if started is None else started
    services = []
    for service in snapshot.services:
        results = [
            result
            for name in service.routes
            if (result := snapshot.result_of(service.name, name)) is not None
        ]
        entry = ServiceReport(service.name, results).to_json()
        entry["active_route"] = service.active
        entry["probing"] = service.probing
        services.append(entry)
    return {
        "version": __version__,
        "started_at": round(started, 3),
        "uptime_s": round(max(0.0, now - started), 3),
        "network": snapshot.network.to_json(),
        "services": services,
        "listeners": [
            {"kind": listener.kind, "address": str(Endpoint(listener.host, listener.port))}
            for listener in snapshot.listeners
        ],
        "connections": [
            {
                "id": conn.id,
                "client": conn.client,
                "protocol": conn.protocol or None,
                "target": conn.target,
                "service": conn.service,
                "route": conn.route,
                "state": conn.state,
                "bytes_up": conn.up,
                "bytes_down": conn.down,
                "duration_s": round(max(0.0, snapshot.monotonic - conn.started), 3),
            }
            for conn in snapshot.connections
        ],
    }


def health(snapshot: Snapshot) -> tuple[bool, str]:
    """Healthy: the mixed listener accepts connections, the network is not down, and some
    service has a route known to work -- or some service is not checked yet (just started),
    or there are none."""
    if not snapshot.listening("mixed"):
        return False, "listener not running"
    if snapshot.network.offline:
        return False, f"offline: {snapshot.network.reason}"
    if any(service.active is not None for service in snapshot.services):
        return True, "ok"
    for service in snapshot.services:
        if all(snapshot.health_of(service.name, name).ok is None for name in service.routes):
            return True, "ok"  # not checked yet: it may work
    if not snapshot.services:
        return True, "ok"
    return False, "no service has a working route"


def _peer_ip(request: Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not request.peer:
        return None
    try:
        return ipaddress.ip_address(request.peer[0].split("%", 1)[0])
    except ValueError:
        return None


def _is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    return ip is not None and _unmapped(ip).is_loopback


def _proxy_address(snapshot: Snapshot, request: Request) -> tuple[str, int]:
    """The mixed listener as the requester can reach it: its own address, or, when it
    listens on every address (0.0.0.0, ::), the address this request came in on."""
    mixed = snapshot.listening("mixed")
    host, port = (mixed[0].host, mixed[0].port) if mixed else ("127.0.0.1", 0)
    ip = _unmapped(ipaddress.ip_address(host.split("%", 1)[0]))
    if not ip.is_unspecified:
        return str(ip), port
    local = request.local
    if local:
        own = _unmapped(ipaddress.ip_address(local[0].split("%", 1)[0]))
        if own.version == ip.version:
            return str(own), port
    # The listener and this request use different IP versions (asyncio's "::" listeners are
    # IPv6 only): the name the requester used for this host, when it is a plain name.
    name = request.host
    if _HOST_NAME.fullmatch(name):
        return name, port
    return ("127.0.0.1" if ip.version == 4 else "::1"), port


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
