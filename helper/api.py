"""The headless status API: what a router's owner, a monitoring system or a script asks a
running detour (docs/status-api.md).

    GET /status     the probe JSON of `detour probe --json`, from the latest probes, plus
                    listeners, open connections, version and uptime
    GET /metrics    Prometheus text format (helper/metrics.py)
    GET /proxy.pac  a proxy auto-config file: the services' destinations through detour,
                    everything else direct
    GET /healthz    "ok" (200) or why not (503), for watchdogs
    GET /mtproto/links   the MTProto proxy endpoint's links with their secrets (in /status
                    they are hidden); never public

Served by the small HTTP/1.1 server in helper/http_server.py (one request per connection).
Off unless `[api] listen` is set. Clients on other machines must send `Authorization:
Bearer TOKEN`; loopback clients need it only with `loopback_token = true`; endpoints in
`public` need it from nobody. Nothing served carries a secret: chains are redacted, listener
passwords are never read here, and the token is kept only as a digest to compare against.
The one exception is /mtproto/links, which exists to hand the MTProto proxy's secrets to the
owner (docs/status-api.md says who may ask).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from transports import Endpoint, Stream
from transports.base import IPNetwork
from transports.children import printable
from transports.wire import format_hostport

from . import __version__
from .config import ApiConfig
from .http_server import (
    LINGER_BYTES,
    LINGER_TIMEOUT,
    WRITE_TIMEOUT,
    HttpServer,
    Request,
    Response,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .pac import proxy_pac
from .probe.report import ServiceReport
from .proxy.limits import Admission, ConnectionBook, Limits, ThrottledLog
from .proxy.listener import LOOPBACK_NETWORKS, ClientConnection, Listener
from .proxy.server import ClientServer
from .status import Snapshot

__all__ = ["StatusApi", "status_document"]

log = logging.getLogger("detour.api")

_HOST_NAME = re.compile(r"[A-Za-z0-9.:-]{1,253}")

# Status is live: no cache on the way may keep an answer (errors included).
_NO_STORE = (("Cache-Control", "no-store"),)
_ALLOWED = "GET, HEAD"


# Who may connect, and how many at once: the API's connections go through the same
# admission as every listener's (helper/proxy/server.py, limits.py). Each address outside
# loopback may hold API_PER_CLIENT of them (an idle one is answered 408 and closed after the
# head timeout); loopback clients (the machine's own watchdogs) count apart, so no number of
# LAN sockets can lock them out.
API_CONNECTIONS = 64
API_PER_CLIENT = 8
_LIMIT_KEYS = ("the status API's limit", "its limit per client") * 2


class ApiAdmission(Admission):
    """The API's admission: loopback clients in a book of their own."""

    def __init__(self, allow: tuple[IPNetwork, ...], allow_key: str) -> None:
        remote = Limits(
            API_CONNECTIONS, API_PER_CLIENT, API_CONNECTIONS, API_PER_CLIENT, _LIMIT_KEYS
        )
        super().__init__(remote, allow, logger=log, prefix="status API: ", allow_key=allow_key)
        local = API_CONNECTIONS
        self.local_book = ConnectionBook(Limits(local, local, local, local, _LIMIT_KEYS))

    def book_for(self, key: str) -> ConnectionBook:
        return self.local_book if _is_loopback(_parse_ip(key)) else self.book


class ApiListener(Listener):
    """The API's port on the client server: its handshake is one HTTP request, answered."""

    kind = "api"

    def __init__(self, http: HttpServer, address: Endpoint, admission: Admission) -> None:
        # The handshake bounds itself: the head must come within the head timeout (408),
        # the answer be taken within the write timeout.
        super().__init__(
            address, admission, setting="status API on", handshake_timeout=None, idle_timeout=0
        )
        self.http = http

    async def handshake(self, conn: ClientConnection) -> Request | None:
        stream = conn.stream
        answer = await self.http.answer(stream)
        if answer is None:
            return None  # the client left mid-head
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                stream.write(answer)
                await stream.drain()
            await _linger(stream)
        except TimeoutError:
            stream.abort()  # it stopped reading
        return None

    def cannot_listen(self, exc: OSError) -> OSError:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return OSError(exc.errno, f"status API on {self.address}: {reason}")


async def _linger(stream: Stream) -> None:
    """Half-close, then read and drop what the client still sends until it closes too (a
    short while at most): closing with unread bytes would reset the connection, and a reset
    can make the client lose the answer it has not read yet."""
    if stream.can_write_eof():
        stream.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_TIMEOUT):
            while dropped < LINGER_BYTES:
                chunk = await stream.read(LINGER_BYTES)
                if not chunk:
                    return
                dropped += len(chunk)


class StatusApi:
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        config: ApiConfig,
        listen_allow: tuple[IPNetwork, ...] = (),
    ) -> None:
        """`snapshot`: takes a status snapshot of the running detour (Engine.snapshot).
        `listen_allow`: [listen] allow, the clients admitted when `api.allow` is empty."""
        assert config.listen is not None
        self.snapshot = snapshot
        self.config = config
        allow, allow_key = (
            (config.allow, "api.allow") if config.allow else (listen_allow, "listen.allow")
        )
        # Loopback clients are always let in (the machine's own watchdogs and scripts).
        self.allow = (*allow, *LOOPBACK_NETWORKS) if allow else ()
        self._allow_key = allow_key
        self.metrics = Metrics()
        self.throttled = ThrottledLog(log)  # refused requests (401, 404, 405)
        self.started = time.time()
        self._token_digest = (
            hashlib.sha256(config.token.encode()).digest() if config.token is not None else None
        )
        self._endpoints = {
            "/status": self._status,
            "/metrics": self._metrics,
            "/proxy.pac": self._pac,
            "/healthz": self._healthz,
            "/mtproto/links": self._mtproto_links,
        }
        self._server: ClientServer | None = None
        self._listener: ApiListener | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the API actually listens (port 0 in a config means any)."""
        if self._listener is None or not self._listener.sockets:
            return None
        return self._listener.sockets[0]

    @property
    def admission(self) -> Admission | None:
        return self._listener.admission if self._listener is not None else None

    async def start(self) -> None:
        assert self.config.listen is not None
        self.started = time.time()
        self.metrics.started = self.started
        listen = self.config.listen
        # Served by a client server of its own (the same admission, handshake deadline and
        # connection table as every listener's; none of the engine's routing), so that the
        # engine's drain and its connection counts leave it alone. Requests are parsed and
        # answered by the HTTP server's code, on the stream the client server accepted.
        http = HttpServer(self.handle, listen.host, listen.port, name="status API",
                          headers=_NO_STORE)  # fmt: skip
        server = ClientServer(None)  # type: ignore[arg-type]  # no routing: no router
        self._listener = server.add(
            ApiListener(http, listen, ApiAdmission(self.allow, self._allow_key))
        )
        try:
            await server.start()  # an address in use: OSError "status API on HOST:PORT: ..."
        except BaseException:
            self._listener = None
            raise
        self._server = server
        host, port = self.address or (listen.host, listen.port)
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
        endpoint = self._endpoints.get(request.path)
        if request.header_count("Authorization") > 1:  # which one would be meant?
            why = "more than one Authorization field"
            self._refused(request, logging.WARNING, why, endpoint)
            return Response.text(400, why + "\n")
        if self._needs_token(request) and not self._token_ok(request):
            self._refused(request, logging.WARNING, self._token_problem(request), endpoint)
            return Response.text(
                401,
                "a bearer token is required (Authorization: Bearer TOKEN)\n",
                (("WWW-Authenticate", 'Bearer realm="detour"'),),
            )
        if endpoint is None:
            self._refused(request, logging.INFO, "no such endpoint", endpoint)
            return Response.text(404, f"no such endpoint; there are {', '.join(self._endpoints)}\n")
        if request.method not in ("GET", "HEAD"):
            self._refused(request, logging.INFO, "only GET and HEAD are served", endpoint)
            return Response.text(405, "only GET and HEAD\n", (("Allow", _ALLOWED),))
        try:
            return await endpoint(request)
        except Exception:
            log.exception("status API: %s %s failed", request.method, request.path)
            return Response.text(500, "internal error; see detour's log\n")

    def _refused(self, request: Request, level: int, why: str, endpoint: object) -> None:
        """A refused request in the log, at most 20 lines per 10 s per status: the client,
        the method and the path (escaped, shortened; an unknown path is not shown to a
        client without the token), never the query or a header (a token may be there)."""
        client = format_hostport(*request.peer) if request.peer else "?"
        if level == logging.WARNING and endpoint is None:
            path = "an unknown path"
        else:
            path = printable(request.path, 80)
        self.throttled.log(
            "unauthorized" if level == logging.WARNING else "not-served",
            level,
            "status API: refused client %s: %s %s: %s",
            client,
            printable(request.method, 20),
            path,
            why,
        )

    def _token_problem(self, request: Request) -> str:
        """Why a request's token is not taken, without a word of what it sent."""
        if self._token_digest is None:
            return "no api.token is set, so only loopback clients are served"
        given = request.header("Authorization")
        if given is None:
            return "no token (Authorization: Bearer TOKEN)"
        if given.partition(" ")[0].lower() != "bearer":
            return "an Authorization header that is not Bearer"
        return "a wrong token"

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

    async def _mtproto_links(self, request: Request) -> Response:
        snapshot = self.snapshot()
        if not snapshot.mtproto_links:
            return Response.text(404, "no MTProto proxy endpoint ([mtproto_proxy] is off)\n")
        document = {"users": mtproto_links(snapshot, reveal=True)}
        body = (json.dumps(document, indent=2) + "\n").encode()
        return Response(200, body, "application/json; charset=utf-8")


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
        # Live connections that froze (helper/routing/progress.py), by route.
        entry["stalled"] = [
            {"route": name, "diagnosis": health.diagnosis, "at": round(health.checked_at, 3)}
            for name in service.routes
            if (health := snapshot.health_of(service.name, name)).source == "connection"
        ]
        if snapshot.search is not None and service.name in snapshot.search.services:
            entry["search"] = dict(snapshot.search.services[service.name])
        if service.service.udp_probes:  # UDP health, apart from TCP's (docs/udp.md)
            entry["udp"] = [
                udp.to_json()
                for name in service.routes
                if (udp := snapshot.udp_health.get((service.name, name))) is not None
            ]
        services.append(entry)
    document: dict[str, Any] = {
        "version": __version__,
        "started_at": round(started, 3),
        "uptime_s": round(max(0.0, now - started), 3),
        "network": snapshot.network.to_json(),
        "services": services,
        "listeners": [
            {"kind": listener.kind, "address": str(Endpoint(listener.host, listener.port))}
            for listener in snapshot.listeners
        ],
        "links": [
            {"kind": link.kind, "host": link.host, "port": link.port, "urls": list(link.urls)}
            for link in snapshot.links
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
        "mtproto_proxy": (
            {"users": mtproto_links(snapshot, reveal=False)} if snapshot.mtproto_links else None
        ),
        "udp": [view.to_json() for view in snapshot.udp],  # UDP associations and drops
        # Each route's UDP (carried at all, latest probes), the UDP monitor's rounds.
        "udp_routes": [view.to_json() for view in snapshot.udp_routes],
        "udp_probes": None if snapshot.udp_probes is None else snapshot.udp_probes.to_json(),
    }
    if snapshot.search is not None:  # the latest strategy search (docs/search.md)
        search = snapshot.search
        document["search"] = {
            "running": search.running,
            "started": round(search.started, 3),
            "finished": None if search.finished is None else round(search.finished, 3),
        }
    return document


def mtproto_links(snapshot: Snapshot, *, reveal: bool) -> list[dict[str, str]]:
    """Each user of the MTProto proxy endpoint and their links (secrets *** unless `reveal`)."""
    return [
        {
            "user": link.user,
            "mode": link.mode,
            "link": link.link(reveal=reveal),
            "web_link": link.link(web=True, reveal=reveal),
        }
        for link in snapshot.mtproto_links
    ]


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


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
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
    if _HOST_NAME.fullmatch(name) and (":" not in name or _parse_ip(name) is not None):
        return name, port  # (a ':' only in an IPv6 address: "[evil:::]" is no host)
    return ("127.0.0.1" if ip.version == 4 else "::1"), port


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
