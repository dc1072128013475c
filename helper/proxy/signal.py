"""The Signal proxy endpoint: the port the Signal apps' own proxy setting connects to
(Settings > Data and storage > Proxy, or a `https://signal.tube/#HOST` link), so a phone on the
LAN reaches Signal through the router's working route without any other app.

The app opens TLS to the proxy (the outer layer, ended here with the configured certificate);
inside it, its own TLS to one of Signal's servers, which it checks against Signal's pinned
root. The proxy never ends the inner TLS: it reads the inner ClientHello's server name,
carries only Signal's own hosts (signal_proxy.hosts; by default the names Signal's reference
proxy routes, github.com/signalapp/Signal-TLS-Proxy), and hands every inner byte unchanged to
the router as a connection to that name on port 443 -- the signal service's routes, failover,
health and diagnosis apply, and a ClientHello a route swallows is retried through the next.

What the apps require of the outer certificate: libsignal (Android, iOS, Desktop) checks it
against the phone's system roots for the proxy's host name (rust/net/infra/src/tcp_ssl/proxy/
tls.rs: `RootCertificates::Native`), as does the iOS relay (NWParameters.tls) and Android's
older TlsProxySocketFactory (the platform's default trust managers). A self-signed
certificate therefore does not work: it must be publicly trusted, for the name in the link
(docs/router.md, "Signal").

Anything else gets what an ordinary TLS site gives, as the reference proxy does (its relay
sends unknown names to a closed port and the connection ends): a client that does not speak
TLS gets the TLS library's answer and a close; after the outer handshake, an inner name
outside the table, bytes that are not a ClientHello, a ClientHello over signal_proxy.max_hello
or one that does not arrive within signal_proxy.handshake_timeout get close_notify and a close.
Refusals are logged at a throttled rate (a scanner must not fill the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transports import Endpoint, Stream
from transports.base import IPNetwork
from transports.tls import tls_accept
from transports.tlsfrag import read_client_hello, server_name

from ..config import SignalProxyConfig
from ..config.values import load_certificate
from ..status import LinkView
from .limits import endpoint_admission
from .listener import ClientConnection, Listener, Request

if TYPE_CHECKING:
    from ..services import ServiceTable

__all__ = ["SignalProxy", "links"]

log = logging.getLogger("detour.proxy")

PROTOCOL = "signal-tls"
UPSTREAM_PORT = 443
RECHECK_CERTIFICATE = 30.0  # seconds between looks at whether the certificate files changed


def links(host: str, port: int = 443) -> tuple[str, str]:
    """The links that set a Signal app's proxy: (https, sgnl). The apps take `host:port`,
    443 when no port is given."""
    where = host if port == 443 else f"{host}:{port}"
    return f"https://signal.tube/#{where}", f"sgnl://signal.tube/#{where}"


def server_context(certificate: os.PathLike[str], key: os.PathLike[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:  # never a pass phrase prompt; a message naming the file that is wrong
        load_certificate(context, Path(certificate), Path(key))
    except ValueError as exc:
        raise OSError(str(exc)) from None
    return context


class Refused(Exception):
    """Why an inner stream is not carried (logged, throttled)."""


class SignalProxy(Listener):
    """The `[signal_proxy]` port."""

    kind = PROTOCOL

    def __init__(self, config: SignalProxyConfig, *, allow: tuple[IPNetwork, ...] = ()) -> None:
        admission = endpoint_admission("signal_proxy", config, allow, log, "Signal proxy")
        super().__init__(
            config.listen,
            admission,
            setting="signal_proxy.listen",
            handshake_timeout=None,  # bounded by its own: the outer TLS and the inner hello
            idle_timeout=config.idle_timeout,
        )
        self.config = config
        self.hosts = frozenset(config.hosts)
        self._tls: ssl.SSLContext | None = None
        self._files: tuple[float, float] | None = None
        self._checked = float("-inf")

    # --- the certificate ------------------------------------------------------------------

    def _stamp(self) -> tuple[float, float] | None:
        try:
            return (
                os.stat(self.config.certificate).st_mtime,
                os.stat(self.config.key).st_mtime,
            )
        except OSError:
            return None

    def load(self) -> ssl.SSLContext:
        """The TLS context; raises OSError naming the setting when the files cannot be used."""
        try:
            context = server_context(self.config.certificate, self.config.key)
        except (ssl.SSLError, OSError) as exc:
            raise OSError(f"signal_proxy.certificate: {exc}") from None
        self._tls, self._files, self._checked = context, self._stamp(), time.monotonic()
        return context

    def context(self) -> ssl.SSLContext:
        """The TLS context, made again when the certificate or key file changed (an ACME
        client renewing it); an unusable new pair leaves the old one in use, with a warning."""
        if self._tls is None:
            return self.load()
        now = time.monotonic()
        if now - self._checked >= RECHECK_CERTIFICATE:
            self._checked = now
            stamp = self._stamp()
            if stamp is not None and stamp != self._files:
                try:
                    self.load()
                    log.info("Signal proxy: certificate %s loaded again", self.config.certificate)
                except OSError as exc:
                    self._files = stamp  # do not try again until it changes again
                    log.warning("Signal proxy: keeping the certificate in use: %s", exc)
        return self._tls

    def recheck(self) -> None:
        """Look at the certificate files at the next connection (a reload asks for it)."""
        self._checked = float("-inf")

    @property
    def link_host(self) -> str:
        return self.config.link_host

    @property
    def port(self) -> int:
        """The port phones connect to: where it listens (port 0 in a config means any)."""
        return self.sockets[0][1] if self.sockets else self.config.listen.port

    def links(self) -> tuple[str, str]:
        return links(self.link_host, self.port)

    def link_view(self) -> LinkView:
        return LinkView("signal", self.link_host, self.port, self.links())

    # --- a connection ---------------------------------------------------------------------

    def refuse(self, conn: ClientConnection, why: str) -> None:
        self.admission.throttled.log(
            "signal-refused", logging.INFO, "Signal proxy: refused client %s: %s", conn.client, why
        )

    async def handshake(self, conn: ClientConnection) -> Request | None:
        conn.protocol = PROTOCOL
        timeout = self.config.handshake_timeout
        started = time.monotonic()
        try:
            tls = await tls_accept(conn.stream, self.context(), timeout=timeout)
        except (OSError, ValueError) as exc:
            # Not TLS, or not a TLS client we can talk to: OpenSSL's own answer, and a close.
            self.refuse(conn, f"outer TLS handshake failed: {exc}")
            conn.stream.close()
            return None
        try:
            left = max(timeout - (time.monotonic() - started), 0.001)
            async with asyncio.timeout(left):
                name, first = await self._inner_hello(tls)
        except TimeoutError:
            self.refuse(conn, f"no complete inner ClientHello within {timeout:g}s")
        except Refused as exc:
            self.refuse(conn, str(exc))
        except OSError:
            tls.abort()  # gone
            return None
        else:
            tls.unread(first)
            target = Endpoint(name, UPSTREAM_PORT)
            conn.target = target
            return Request(PROTOCOL, target, client=tls)
        tls.close()  # close_notify, then the connection ends
        return None

    async def _inner_hello(self, tls: Stream) -> tuple[str, bytes]:
        """The inner ClientHello's server name and every byte read; raises Refused."""
        limit = self.config.max_hello
        data = b""
        while True:
            chunk = await tls.read(65536)
            if not chunk:
                raise Refused("closed before a complete inner ClientHello")
            data += chunk
            read = read_client_hello(data, limit)
            if read.state == "complete":
                break
            if read.state == "too-large":
                raise Refused(f"inner ClientHello larger than signal_proxy.max_hello ({limit})")
            if read.state != "incomplete":
                raise Refused(f"not an inner TLS ClientHello ({read.state})")
            if len(data) > 6 * limit:  # the reader's own bound, as a guard
                raise Refused(f"inner ClientHello larger than signal_proxy.max_hello ({limit})")
        name = server_name(read.message)
        if name is None:
            raise Refused("inner ClientHello without a server name")
        if name not in self.hosts:
            raise Refused(f"inner server name {name!r} is not one of signal_proxy.hosts")
        return name, data

    def unreachable(self, conn: ClientConnection, request: Request, exc: Exception) -> None:
        # The app has no way to hear a reason: a reset tells it to try again.
        log.info("Signal proxy: client %s: %s: %s", conn.client, request.target, exc)

    def announce(self, services: ServiceTable, default_policy: str) -> None:
        """Log where it listens and its link; warn of hosts no service claims."""
        unclaimed = [
            host
            for host in sorted(self.hosts)
            if services.match(Endpoint(host, UPSTREAM_PORT)) is None
        ]
        if unclaimed:
            log.warning(
                "Signal proxy: %s belong%s to no [[service]]; their connections take the "
                "[default] policy (%s)",
                ", ".join(unclaimed),
                "s" if len(unclaimed) == 1 else "",
                default_policy,
            )
        for host, number in self.sockets:
            log.info("Signal proxy on %s:%d; link %s", host, number, self.links()[0])
