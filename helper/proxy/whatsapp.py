"""The WhatsApp proxy endpoint: the ports WhatsApp's own proxy setting connects to
(Settings > Storage and data > Proxy), so a phone on the LAN can use the router as its
WhatsApp proxy without any other app.

The app speaks no proxy protocol: it opens a plain TCP connection to the proxy host and sends
what it would send to WhatsApp's servers. Which server a connection is for is told by the
port alone, as in WhatsApp's reference proxy (github.com/WhatsApp/proxy, an HAProxy config):

    port   on the wire from the phone            forwarded to
    443    TLS, proxy's own (self-signed) cert   g.whatsapp.net:5222   (chat)
    5222   plain                                 g.whatsapp.net:5222   (chat)
    80     plain                                 g.whatsapp.net:80     (chat over port 80)
    587    plain                                 whatsapp.net:443      (media, *.whatsapp.net)
    7777   plain                                 whatsapp.net:443      (media)

The app uses TLS on port 443 only, and it does not check the proxy's certificate; what it
carries inside is WhatsApp's own end-to-end encrypted protocol. The reference's 8080/8443/8222
ports (PROXY protocol from a load balancer in front) have no use on a router and are left
out, as is its PROXY header towards WhatsApp: detour forwards bytes unchanged.

Flow per connection: allow-list and limits -> (TLS port) TLS handshake within the handshake
timeout -> router.connect(fixed upstream name), exactly as a SOCKS CONNECT to that name would
be, so the whatsapp service's active route, failover, health and events apply -> a TLS
ClientHello from the phone is retried through the next route if the first one swallows it
(retry.py) -> relay until both directions end. Connections appear beside the mixed
listener's, in the same table, for every status view.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transports import Endpoint, Stream
from transports.base import IPNetwork
from transports.tcp import SocketStream, StreamProtocol
from transports.tls import tls_accept

from ..config import WhatsAppProxyConfig
from ..events import EventBus
from ..files import write_private
from ..routing import AllRoutesFailed, Connection, Denied, Router
from .limits import ConnectionBook, Limits, ThrottledLog, client_allowed, client_key
from .listener import ActiveConnection
from .retry import first_exchange
from .serving import RouterSwitch, ServingTasks

__all__ = [
    "UPSTREAMS",
    "WhatsAppEndpoint",
    "WhatsAppProxy",
    "endpoints",
    "ensure_certificate",
    "self_signed",
]

log = logging.getLogger("detour.proxy")

# Where each kind of port forwards to (the reference proxy's backends).
UPSTREAMS: dict[str, Endpoint] = {
    "tls": Endpoint("g.whatsapp.net", 5222),
    "chat": Endpoint("g.whatsapp.net", 5222),
    "http": Endpoint("g.whatsapp.net", 80),
    "media": Endpoint("whatsapp.net", 443),
}

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
CERT_NAME = "detour WhatsApp proxy"


@dataclass(frozen=True)
class WhatsAppEndpoint:
    """One listening port and the fixed destination of what arrives on it."""

    kind: str  # tls, chat, http, media
    port: int  # 0: any free port (tests)
    upstream: Endpoint

    @property
    def tls(self) -> bool:
        return self.kind == "tls"


def endpoints(config: WhatsAppProxyConfig) -> list[WhatsAppEndpoint]:
    """The ports the config turns on, with their destinations."""
    found = [
        WhatsAppEndpoint(kind, number, UPSTREAMS[kind])
        for kind, number in (
            ("tls", config.tls_port),
            ("chat", config.chat_port),
            ("http", config.http_port),
        )
        if number is not None
    ]
    found += [
        WhatsAppEndpoint("media", number, UPSTREAMS["media"]) for number in config.media_ports
    ]
    return found


# --- the certificate ----------------------------------------------------------------------


def kept_certificate(directory: Path) -> tuple[Path, Path] | None:
    """The certificate and key kept in `directory`, if there is a usable pair."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as exc:
            log.warning("WhatsApp proxy: replacing unusable certificate in %s (%s)", directory, exc)
        else:
            return cert_path, key_path
    return None


# Run by ensure_certificate in a child process.
_MAKE_CERTIFICATE = (
    "import sys; from pathlib import Path; from helper.proxy.whatsapp import self_signed; "
    "self_signed(Path(sys.argv[1]))"
)


async def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """The kept certificate, or a new one made in a child process: the library that makes
    it (cryptography) would stay in this long-running process's memory, about 12 MB, for
    nothing (docs/performance.md, "Memory (headless)")."""
    kept = await asyncio.to_thread(kept_certificate, directory)
    if kept is not None:
        return kept
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _MAKE_CERTIFICATE,
        str(directory),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await process.communicate()
    made = await asyncio.to_thread(kept_certificate, directory)
    if process.returncode != 0 or made is None:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise OSError(
            f"whatsapp_proxy: cannot make a certificate in {directory}: "
            f"{lines[-1] if lines else f'exit status {process.returncode}'}"
        )
    log.info("WhatsApp proxy: made a self-signed certificate in %s", directory)
    return made


def self_signed(directory: Path) -> tuple[Path, Path]:
    """The TLS port's certificate and key in `directory`, made once and then reused.

    The app does not verify the proxy's certificate, so a self-signed one is all it needs;
    keeping it (rather than a new one per start) keeps the proxy looking the same on the
    LAN across restarts. The key file is readable by its owner only."""
    kept = kept_certificate(directory)
    if kept is not None:
        return kept
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("WhatsApp proxy: made a self-signed certificate in %s", directory)
    return cert_path, key_path


def server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context


# --- the listeners ------------------------------------------------------------------------


class _ClientProtocol(StreamProtocol):
    def __init__(self, proxy: WhatsAppProxy, endpoint: WhatsAppEndpoint) -> None:
        super().__init__()
        self.proxy = proxy
        self.endpoint = endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.proxy._accepted(self.endpoint, SocketStream(self.transport, self))


class WhatsAppProxy(ServingTasks):
    def __init__(
        self,
        config: WhatsAppProxyConfig,
        router: Router,
        *,
        allow: tuple[IPNetwork, ...] = (),
        state: Path,
        events: EventBus | None = None,
        connections: dict[int, ActiveConnection] | None = None,
        ids: Iterator[int] | None = None,
        first_answer: float = 0.0,
    ) -> None:
        """`state`: where a self-signed certificate is kept. `connections` and `ids`: the
        table status views read and its id counter (the mixed listener's, so one table shows
        every client connection)."""
        self.config = config
        self.switch = RouterSwitch(router)
        self.events = events
        self.first_answer = first_answer
        self.state = state
        self.endpoints = endpoints(config)
        self.connections: dict[int, ActiveConnection] = (
            connections if connections is not None else {}
        )
        self.ids = ids if ids is not None else itertools.count(1)
        self._allow = allow
        self._servers: list[tuple[WhatsAppEndpoint, asyncio.Server]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Its own limits (whatsapp_proxy.*), counted as the listeners count theirs; the TLS
        # handshake is bounded by its timeout alone.
        self.book = ConnectionBook(
            Limits(
                config.max_connections,
                config.max_per_client,
                0,
                0,
                keys=("whatsapp_proxy.max_connections", "whatsapp_proxy.max_per_client", "", ""),
            )
        )
        self.throttled = ThrottledLog(log)
        self._tls: ssl.SSLContext | None = None

    @property
    def sockets(self) -> list[tuple[str, str, int]]:
        """(kind, host, port) of every listening socket."""
        return [
            (endpoint.kind, *sock.getsockname()[:2])
            for endpoint, server in self._servers
            for sock in server.sockets
        ]

    def port(self, kind: str) -> int:
        """The port the first endpoint of `kind` listens on."""
        for found, _host, number in self.sockets:
            if found == kind:
                return number
        raise KeyError(kind)

    async def start(self) -> None:
        if any(endpoint.tls for endpoint in self.endpoints):
            certificate, key = self.config.certificate, self.config.key
            if certificate is None or key is None:
                certificate, key = await ensure_certificate(self.state)
            self._tls = server_context(certificate, key)
        loop = asyncio.get_running_loop()
        for endpoint in self.endpoints:
            try:
                server = await loop.create_server(
                    lambda endpoint=endpoint: _ClientProtocol(self, endpoint),
                    host=self.config.listen,
                    port=endpoint.port,
                    backlog=256,
                )
            except OSError as exc:
                await self.stop()
                # Say which port: 80 and 443 are often the router's own web interface.
                setting = "media_ports" if endpoint.kind == "media" else f"{endpoint.kind}_port"
                where = Endpoint(self.config.listen, endpoint.port)
                hint = (
                    "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                    if isinstance(exc, PermissionError)
                    else ""
                )
                raise OSError(
                    exc.errno, f"whatsapp_proxy.{setting} {where}: {exc.strerror or exc}{hint}"
                ) from exc
            self._servers.append((endpoint, server))
        for upstream in dict.fromkeys(endpoint.upstream for endpoint in self.endpoints):
            if self.router.services.match(upstream) is None:
                log.warning(
                    "WhatsApp proxy: %s belongs to no [[service]]; its connections take the "
                    "[default] policy (%s)",
                    upstream,
                    self.router.default_policy,
                )
        log.info(
            "WhatsApp proxy on %s: %s",
            self.config.listen,
            ", ".join(
                f"{number} ({'TLS, ' if kind == 'tls' else ''}to {UPSTREAMS[kind]})"
                for kind, _host, number in self.sockets
            ),
        )

    def stop_accepting(self) -> None:
        """Close the listening sockets; connections already accepted go on."""
        for _endpoint, server in self._servers:
            server.close()

    async def stop(self) -> None:
        """Stop accepting and end every connection (cut: the clients see a reset)."""
        self.stop_accepting()
        await self._cut_connections()
        # Only now: since Python 3.12 this also waits for every connection to close.
        for _endpoint, server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # --- per connection -------------------------------------------------------------------

    def _accepted(self, endpoint: WhatsAppEndpoint, stream: SocketStream) -> None:
        peer = stream.get_extra_info("peername")
        client = Endpoint(peer[0], peer[1]) if peer else Endpoint("unknown", 1)
        if self._allow and not client_allowed(client, self._allow):
            self.throttled.log(
                "not-allowed",
                logging.INFO,
                "WhatsApp proxy: refused client %s: not in listen.allow",
                client,
            )
            stream.abort()
            return
        over = self.book.admit(client_key(client))
        if over is not None:
            self.throttled.log(
                "limit",
                logging.WARNING,
                "WhatsApp proxy: refused client %s: at the limit of %s",
                client,
                over,
            )
            stream.abort()
            return
        conn_id = next(self.ids)
        self._spawn(
            self._serve(conn_id, endpoint, client, stream), name=f"detour-whatsapp-{conn_id}"
        )

    async def _serve(
        self, conn_id: int, endpoint: WhatsAppEndpoint, client: Endpoint, stream: SocketStream
    ) -> None:
        active = ActiveConnection(
            conn_id, str(client), protocol=f"whatsapp-{endpoint.kind}", target=endpoint.upstream
        )
        self.connections[conn_id] = active
        self.switch.begin(conn_id)
        try:
            await self._serve_client(active, endpoint, stream)
        except asyncio.CancelledError:
            stream.abort()  # cut short (detour is stopping): a reset, never a clean end
            raise
        except Exception:
            log.exception("connection %d from %s: internal error", conn_id, client)
            stream.abort()
        finally:
            self.connections.pop(conn_id, None)
            self.switch.end(conn_id)
            self.book.release(client_key(client), handshaking=True)
            if not stream.is_closing():
                stream.close()

    async def _serve_client(
        self, active: ActiveConnection, endpoint: WhatsAppEndpoint, stream: SocketStream
    ) -> None:
        client: Stream = stream
        if endpoint.tls:
            assert self._tls is not None
            try:
                client = await tls_accept(stream, self._tls, timeout=self.config.handshake_timeout)
            except (OSError, ValueError) as exc:
                log.info("WhatsApp proxy: client %s: TLS handshake failed: %s", active.client, exc)
                stream.abort()
                return
        try:
            connection = await self.router.connect(endpoint.upstream)
        except (Denied, AllRoutesFailed) as exc:
            # The app has no way to hear a reason: a reset tells it to try again.
            log.info("WhatsApp proxy: client %s: %s", active.client, exc)
            client.abort()
            return
        if client.is_closing():
            connection.stream.abort()
            return
        retried = await first_exchange(
            client, connection, self.router, endpoint.upstream, self.first_answer, active.stats
        )
        if retried is None:
            client.abort()
            return
        await self._relay(active, client, retried)

    async def _relay(
        self, active: ActiveConnection, client: Stream, connection: Connection
    ) -> None:
        active.service = connection.service.name if connection.service else None
        active.route = connection.route.name
        try:
            await self._relay_accounted(
                active,
                client,
                connection,
                events=self.events,
                idle_timeout=self.config.idle_timeout,
            )
        finally:
            if not client.is_closing():
                client.close()
