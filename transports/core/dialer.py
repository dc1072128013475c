"""The `vless://`, `vmess://` and `trojan://` layers' Dialer: a proxy core runs as a child
process with a config generated from the link, and detour talks SOCKS5 to it.

    detour --SOCKS5 (random login)--> core (child, 127.0.0.1) ==vless/vmess/trojan==> server

The core is a child like a pluggable transport's client (transports/children.py): started
on first use, shared by every route with the same link, restarted when it dies (open
connections through it are reset), stopped with the engine. It is given a free port and
is ready when that port accepts connections; its log lines go to detour's debug log and
the last of them into the message when it fails (a config it rejects, a port in use).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import socket
import ssl
from pathlib import Path

from ..base import DialError, Endpoint, Failure, Op, Stream
from ..children import (
    ChildManager,
    ChildRun,
    ChildStream,
    LaunchWatch,
    ManagedChild,
    Program,
    TextLines,
    wait_for_port,
)
from ..direct import DirectDialer
from ..socks import Socks5Dialer
from .generate import Inbound, core_config
from .programs import CoreProgram, cannot, find_core
from .spec import CoreLink

__all__ = ["CoreChild", "CoreDialer", "CoreStream", "ca_bundle", "extra_cas"]

log = logging.getLogger("detour.core")


def ca_bundle(tls: ssl.SSLContext | None) -> bytes:
    """The CA certificates `tls` trusts that were loaded from files (the system's bundle
    where there is one, and [tls] extra_ca), as PEM: the core is told to trust the same
    (SSL_CERT_FILE; the Go cores also keep the system's certificate directories)."""
    if tls is None:
        return b""
    certificates = tls.get_ca_certs(binary_form=True)
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in certificates).encode()


def extra_cas(tls: ssl.SSLContext | None) -> bytes:
    """The CA certificates `tls` trusts beyond the system's bundle ([tls] extra_ca), as PEM:
    xray is given them in its config (generate.py), as builds with their own root store
    (PyPI's xray-core) read no SSL_CERT_FILE."""
    if tls is None:
        return b""
    system = _system_cas()
    extra = [der for der in tls.get_ca_certs(binary_form=True) if der not in system]
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in extra).encode()


@functools.cache
def _system_cas() -> frozenset[bytes]:
    """The system bundle's CA certificates (DER), read once: a subscription builds a
    dialer per node."""
    return frozenset(ssl.create_default_context().get_ca_certs(binary_form=True))


class CoreChild(Program):
    """One core run for one link."""

    log = log
    not_installed = Failure.CORE_NOT_INSTALLED
    failed = Failure.CORE_FAILED

    def __init__(
        self, core: CoreProgram, link: CoreLink, bundle: bytes, state: Path, extra: bytes = b""
    ) -> None:
        digest = hashlib.sha256(
            repr((core.path, core.version, _link_identity(link), bundle, extra)).encode()
        ).hexdigest()[:16]
        self.core = core
        self.link = link
        self.bundle = bundle
        self.extra = extra
        self.key = ("core", core.path, digest)
        where = " from the Python module" if core.command else ""
        self.name = f"{link.protocol} core ({os.path.basename(core.path)}{where})"
        self.state = state / digest
        self.inbound: Inbound | None = None

    @property
    def config_path(self) -> Path:
        return self.state / "config.json"

    def prepare(self) -> None:
        # A fresh port and login each start: a restarted core never meets its old port
        # still held, and nothing else can use the SOCKS port without the login.
        self.inbound = Inbound(_free_port(), secrets.token_hex(8), secrets.token_hex(16))
        try:
            self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
            ca_file = None
            if self.extra and self.core.kind == "xray":
                ca_file = str(self.state / "extra-ca.pem")
                _write_private(Path(ca_file), self.extra.decode())
            text = core_config(self.core, self.link, self.inbound, ca_file)
            _write_private(self.config_path, text)
            if self.bundle:
                _write_private(self.state / "ca.pem", self.bundle.decode())
        except OSError as exc:
            raise DialError(
                Failure.CORE_FAILED,
                Op.CONNECT,
                f"cannot write the {self.name}'s config in {self.state}: {exc.strerror}",
            ) from None

    def argv(self) -> list[str]:
        return self.core.run_argv(str(self.config_path))

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.bundle:
            env["SSL_CERT_FILE"] = str(self.state / "ca.pem")
        return env

    def cwd(self) -> Path:
        return self.state

    def watch(self, run: ChildRun) -> LaunchWatch:
        assert self.inbound is not None
        return _CoreWatch(run, self.inbound)


class _CoreWatch(LaunchWatch):
    """A core says nothing machine-readable when ready: its port accepting is the sign.
    Its stdout is its log."""

    def __init__(self, run: ChildRun, inbound: Inbound) -> None:
        self._run = run
        self._inbound = inbound
        self._lines = TextLines()

    def stdout(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            self._run.keep_line(line)

    async def poll(self) -> None:
        await wait_for_port(Endpoint("127.0.0.1", self._inbound.port), self._run)


class CoreDialer:
    inner = None  # the core makes the connection itself: this is a chain's base

    def __init__(
        self,
        link: CoreLink,
        manager: ChildManager,
        *,
        program: str | None = None,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.link = link
        self.manager = manager
        self._program = program
        self._bundle = ca_bundle(tls)
        self._extra = extra_cas(tls)
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout

    def core(self) -> CoreProgram:
        """The installed core for this link; DialError when there is none that can do it."""
        core = find_core(self._program)
        reason = cannot(core, self.link)
        if reason is not None:
            raise DialError(Failure.CORE_FAILED, Op.CONNECT, f"{self.link.protocol}: {reason}")
        return core

    def client(self) -> ManagedChild:
        """The child this layer dials through (made now if new, started on first use)."""
        program = CoreChild(
            self.core(), self.link, self._bundle, self.manager.state_path("core"), self._extra
        )
        return self.manager.child(program)

    async def socks(self, child: ManagedChild | None = None) -> tuple[Socks5Dialer, ChildRun]:
        """The running core's SOCKS5 inbound as an upstream (the core started now if it is
        not running), and the run it belongs to: a restarted core has a new port and login.
        The UDP side (transports/core/datagrams.py) associates through it."""
        child = child if child is not None else self.client()
        program = child.program
        assert isinstance(program, CoreChild)
        method, run = await child.method()
        inbound = program.inbound
        assert inbound is not None
        socks = Socks5Dialer(
            DirectDialer(connect_timeout=self._connect_timeout),
            method.address,
            inbound.username,
            inbound.password,
            handshake_timeout=self._handshake_timeout,
            label=f"the {child.name}",
        )
        return socks, run

    async def dial(self, target: Endpoint) -> Stream:
        child = self.client()
        for attempt in (1, 2):
            socks, run = await self.socks(child)
            try:
                stream = await socks.dial(target)
            except DialError as exc:
                if not await run.ended():
                    raise self._about_server(exc, child.name, run) from None
                if attempt == 2:
                    raise DialError(
                        Failure.CORE_FAILED,
                        Op.PROXY_HANDSHAKE,
                        f"the {child.name} exited during the handshake{run.stderr_tail()}",
                    ) from None
                continue
            wrapped = CoreStream(stream, run)
            child.track(run, wrapped)
            return wrapped
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _about_server(self, exc: DialError, name: str, run: ChildRun) -> DialError:
        """A core answers SOCKS "general failure" when the server cannot be reached or
        refuses the user; its log says which."""
        link = self.link
        if exc.failure is Failure.PROXY_REFUSED:
            return DialError(
                Failure.PROXY_REFUSED,
                exc.op,
                f"the {name} could not reach the {link.protocol} server {link.address} or was "
                f"refused by it (is the server up, and is the link right?){run.stderr_tail()}",
            )
        return exc

    def __repr__(self) -> str:
        return f"CoreDialer({self.link!r})"


class CoreStream(ChildStream):
    """A connection through a core. Cores answer SOCKS before they reach the server, so a
    server that cannot be reached, or that refuses the user, shows only as the core closing
    the connection: an end before the first byte from the server is reported as a reset,
    not as a clean (empty) answer."""

    _received = False

    async def read(self, n: int = 65536) -> bytes:
        data = await super().read(n)
        if data:
            self._received = True
        elif not self._received:
            raise ConnectionResetError(
                f"the {self._child.name} ended the connection before the server sent anything "
                "(the server could not be reached, or refused the link's user)"
            )
        return data


def _link_identity(link: CoreLink) -> tuple[object, ...]:
    """What makes two links need different cores (all of it but the name)."""
    from dataclasses import astuple, replace

    return astuple(replace(link, name=""))


def _free_port() -> int:
    """A loopback port free for TCP and for UDP: the core's inbound takes UDP ASSOCIATE's
    datagrams on the same port number (xray, v2ray)."""
    for _ in range(16):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DialError(
        Failure.CORE_FAILED, Op.CONNECT, "no loopback port is free for both TCP and UDP"
    )


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the link's secret)."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)
