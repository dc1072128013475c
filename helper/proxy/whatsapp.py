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

Each port is a listener of the client server (server.py), whose handshake is all it adds:
on the TLS port, detour's own TLS within the handshake timeout; then the port's fixed
upstream name, routed exactly as a SOCKS CONNECT to that name would be (the whatsapp
service's active route, failover, health and events apply; a TLS ClientHello from the phone
is retried through the next route if the first one swallows it). The ports count their
clients together, against their own limits (`whatsapp_proxy.max_connections`,
`max_per_client`), and their connections appear beside the mixed listener's, in the same
table, for every status view.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transports import Endpoint
from transports.base import IPNetwork
from transports.tls import tls_accept

from ..config import WhatsAppProxyConfig
from ..config.values import load_certificate
from ..files import write_private
from .limits import endpoint_admission
from .listener import ClientConnection, Listener, Request

if TYPE_CHECKING:
    from ..services import ServiceTable

__all__ = [
    "UPSTREAMS",
    "WhatsAppEndpoint",
    "WhatsAppPort",
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
            load_certificate(
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), cert_path, key_path
            )
        except ValueError as exc:
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
    try:  # never a pass phrase prompt; a message naming the file that is wrong
        load_certificate(context, certificate, key)
    except ValueError as exc:
        raise OSError(str(exc)) from None
    return context


# --- the listeners ------------------------------------------------------------------------


class WhatsAppPort(Listener):
    """One port: what arrives goes to its endpoint's WhatsApp server."""

    backlog = 256

    def __init__(self, proxy: WhatsAppProxy, endpoint: WhatsAppEndpoint) -> None:
        config = proxy.config
        super().__init__(
            Endpoint(config.listen, endpoint.port),
            proxy.admission,
            setting="whatsapp_proxy."
            + ("media_ports" if endpoint.kind == "media" else f"{endpoint.kind}_port"),
            handshake_timeout=None,  # the TLS handshake has its own; the others have none
            idle_timeout=config.idle_timeout,
        )
        self.kind = f"whatsapp-{endpoint.kind}"
        self.proxy = proxy
        self.endpoint = endpoint

    async def handshake(self, conn: ClientConnection) -> Request | None:
        conn.protocol, conn.target = self.kind, self.endpoint.upstream
        client = None
        if self.endpoint.tls:
            assert self.proxy.tls is not None
            timeout = self.proxy.config.handshake_timeout
            try:
                client = await tls_accept(conn.stream, self.proxy.tls, timeout=timeout)
            except (OSError, ValueError) as exc:
                # Throttled: a scanner's junk on the port must not flood the log.
                self.admission.throttled.log(
                    "whatsapp-tls",
                    logging.INFO,
                    "WhatsApp proxy: client %s: TLS handshake failed: %s",
                    conn.client,
                    exc,
                )
                conn.stream.abort()
                return None
        return Request(self.kind, self.endpoint.upstream, client=client)

    def unreachable(self, conn: ClientConnection, request: Request, exc: Exception) -> None:
        # The app has no way to hear a reason: a reset tells it to try again.
        log.info("WhatsApp proxy: client %s: %s", conn.client, exc)


class WhatsAppProxy:
    """The ports `[whatsapp_proxy]` turns on, their certificate and their limits."""

    def __init__(
        self, config: WhatsAppProxyConfig, *, allow: tuple[IPNetwork, ...] = (), state: Path
    ) -> None:
        """`allow`: the clients it takes (listen.allow). `state`: where a self-signed
        certificate is kept."""
        self.config = config
        self.state = state
        # Its own limits (whatsapp_proxy.*), counted as the listeners count theirs; the TLS
        # handshake is bounded by its timeout alone.
        self.admission = endpoint_admission("whatsapp_proxy", config, allow, log, "WhatsApp proxy")
        self.ports = [WhatsAppPort(self, endpoint) for endpoint in endpoints(config)]
        self.tls: ssl.SSLContext | None = None

    @property
    def sockets(self) -> list[tuple[str, str, int]]:
        """(kind, host, port) of every listening socket."""
        return [
            (port.endpoint.kind, host, number)
            for port in self.ports
            for host, number in port.sockets
        ]

    def port(self, kind: str) -> int:
        """The port the first endpoint of `kind` listens on."""
        for found, _host, number in self.sockets:
            if found == kind:
                return number
        raise KeyError(kind)

    async def prepare(self) -> None:
        """The TLS port's certificate: the configured one, or one made and kept."""
        if any(port.endpoint.tls for port in self.ports):
            certificate, key = self.config.certificate, self.config.key
            if certificate is None or key is None:
                certificate, key = await ensure_certificate(self.state)
            self.tls = server_context(certificate, key)

    def announce(self, services: ServiceTable, default_policy: str) -> None:
        """Log where it listens (once its ports are open), and upstreams no service claims."""
        for upstream in dict.fromkeys(port.endpoint.upstream for port in self.ports):
            if services.match(upstream) is None:
                log.warning(
                    "WhatsApp proxy: %s belongs to no [[service]]; its connections take the "
                    "[default] policy (%s)",
                    upstream,
                    default_policy,
                )
        log.info(
            "WhatsApp proxy on %s: %s",
            self.config.listen,
            ", ".join(
                f"{number} ({'TLS, ' if kind == 'tls' else ''}to {UPSTREAMS[kind]})"
                for kind, _host, number in self.sockets
            ),
        )
