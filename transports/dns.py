"""Resolvers that ask a DNS server of the user's choosing, the way censoring networks cannot
easily tamper with: DNS over HTTPS (RFC 8484) and over TLS (RFC 7858), or plain DNS over UDP
(TCP for truncated answers) and TCP to a resolver outside the network's control.

    doh=https://1.1.1.1/dns-query
    doh=https://dns.google/dns-query;bootstrap=8.8.8.8,8.8.4.4
    dot=1.1.1.1  dot=dns.quad9.net:853;bootstrap=9.9.9.9
    udp=1.1.1.1:53  tcp=1.1.1.1  system

The same text configures `[dns] resolver` and the `resolve:` layer of a chain
(`transports.resolver.parse_resolver`). A resolver's own address is never looked up with
the system resolver: give an IP literal, or the name (for the certificate check) plus
`bootstrap=` addresses.

A and AAAA are asked at once. Answers are cached for their TTL, clamped to [30 s, 1 h];
"no such name" and "no address" for 10 s. A public name answered with a private, loopback,
link-local, unspecified, CGNAT, documentation or multicast address is reported as tampering
(`dns_bogon_error`) unless `allow_private=true` (the lab gives its fake public names 127.x
addresses). The wire format is dnspython's; the network code is asyncio's and aiohttp's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import ipaddress
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from .base import DialError, Endpoint, Failure, IPAddress, IPNetwork, Op, classify_os_error
from .deadlines import patient
from .resolver import bogons_in, is_bogon  # is_bogon: re-exported
from .tcp import SocketStream, connect_tcp

if TYPE_CHECKING:
    import aiohttp
    import dns.message
    import dns.rdatatype

# aiohttp and dnspython are imported when a resolver first asks (the functions below): a
# process whose config has resolvers it does not use yet -- a router's, without probes --
# does not hold their modules (some 20 MB resident, docs/performance.md "Memory"). That first
# import runs in a thread of its own (`_modules`), not on the event loop: it takes 0.5 s of
# CPU (aiohttp 0.4, dnspython 0.15), several seconds on a loaded machine, during which every
# other connection and probe of the loop would stand still.
_DNSPYTHON = ("dns.exception", "dns.message", "dns.rcode", "dns.rdatatype")
_AIOHTTP = ("aiohttp", "aiohttp.abc")
_imports: dict[tuple[str, ...], concurrent.futures.Future[None]] = {}
_imports_lock = threading.Lock()


def _import(names: tuple[str, ...], done: concurrent.futures.Future[None]) -> None:
    try:
        for name in names:
            importlib.import_module(name)
    except BaseException as exc:  # an ImportError (a missing extra) goes to every waiter
        done.set_exception(exc)
    else:
        done.set_result(None)


def _importing(names: tuple[str, ...]) -> concurrent.futures.Future[None] | None:
    """The import of `names` under way in its thread (started now if need be); None when
    they are imported already."""
    if all(name in sys.modules for name in names):
        return None
    with _imports_lock:
        done = _imports.get(names)
        if done is None:
            done = _imports[names] = concurrent.futures.Future()
            threading.Thread(
                target=_import, args=(names, done), name="detour-dns-imports", daemon=True
            ).start()
    return done


async def _modules(names: tuple[str, ...]) -> None:
    """Until `names` are imported: at once when they are; else imported in one thread, the
    first caller's, that later callers wait for too."""
    done = _importing(names)
    if done is not None:
        await asyncio.wrap_future(done)


__all__ = [
    "DnsResolver",
    "HttpsTransport",
    "TcpTransport",
    "TlsTransport",
    "UdpTransport",
    "is_bogon",
    "read_answer",
]

MAX_MESSAGE = 65535
# DNS Flag Day 2020: answers that fit in a datagram without IP fragmentation.
EDNS_PAYLOAD = 1232
TRUNCATED = 0x0200  # the header's TC flag (dnspython's dns.flags.TC)
MIN_TTL, MAX_TTL, NEGATIVE_TTL = 30.0, 3600.0, 10.0
CACHE_SIZE = 4096

# --- the wire format ------------------------------------------------------------------------


def read_answer(
    query: dns.message.Message, wire: bytes, server: str
) -> tuple[list[IPAddress], float]:
    """The addresses in `wire`, a server's answer to `query`, and how long they may be kept.

    Raises DialError(op=resolve) for a failure answer, an empty one, or bytes that are not an
    answer to `query`.
    """
    import dns.exception
    import dns.message
    import dns.rcode

    host = query.question[0].name.to_text(omit_final_dot=True)
    try:
        response = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise DialError(
            Failure.UNKNOWN, Op.RESOLVE, f"{server}: malformed answer ({exc})"
        ) from None
    if not query.is_response(response):
        raise DialError(Failure.UNKNOWN, Op.RESOLVE, f"{server}: answer to another question")
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise DialError(Failure.DNS_NXDOMAIN, Op.RESOLVE, f"{host}: no such name ({server})")
    if rcode != dns.rcode.NOERROR:
        text = dns.rcode.to_text(rcode)
        raise DialError(Failure.DNS_SERVFAIL, Op.RESOLVE, f"{host}: {server} answered {text}")
    try:
        chain = response.resolve_chaining()  # follows CNAMEs to the final answer
    except dns.exception.DNSException as exc:
        raise DialError(
            Failure.UNKNOWN, Op.RESOLVE, f"{server}: malformed answer ({exc})"
        ) from None
    if chain.answer is None:
        return [], NEGATIVE_TTL
    addresses = [ipaddress.ip_address(rdata.address) for rdata in chain.answer]
    return addresses, float(chain.minimum_ttl)


# --- transports: one query's wire bytes in, the answer's wire bytes out --------------------


class DnsTransport(Protocol):
    async def exchange(self, query: bytes) -> bytes: ...


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes, answer: asyncio.Future[bytes]) -> None:
        self.query_id = query_id
        self.answer = answer

    def datagram_received(self, data: bytes, addr: object) -> None:
        # Anything else on the port (a late answer to an earlier try, junk) is ignored.
        if data[:2] == self.query_id and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: nobody answers DNS there.
        if not self.answer.done():
            self.answer.set_exception(exc)


class UdpTransport:
    """Plain DNS over UDP: resent after 1 s, 2 s, 4 s ... until the resolver's timeout ends
    the wait; truncated answers are asked again over TCP (RFC 7766)."""

    def __init__(self, server: Endpoint, retry_after: float = 1.0) -> None:
        self.server = server
        self.retry_after = retry_after

    async def exchange(self, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(query[:2], answer), remote_addr=(self.server.host, self.server.port)
        )
        try:
            wait = self.retry_after
            while not answer.done():
                transport.sendto(query)
                await asyncio.wait([answer], timeout=wait)
                wait *= 2
            response = answer.result()
        finally:
            transport.close()
        if len(response) > 2 and response[2] & (TRUNCATED >> 8):
            return await TcpTransport(self.server).exchange(query)
        return response

    def __str__(self) -> str:
        return f"udp {self.server}"


async def _framed_exchange(stream: SocketStream, query: bytes) -> bytes:
    """One query over a stream connection: two-byte length, message (RFC 1035 §4.2.2)."""
    try:
        stream.write(len(query).to_bytes(2, "big") + query)
        size = int.from_bytes(await stream.readexactly(2), "big")
        return await stream.readexactly(size)
    finally:
        stream.close()


class TcpTransport:
    def __init__(self, server: Endpoint) -> None:
        self.server = server

    async def exchange(self, query: bytes) -> bytes:
        return await _framed_exchange(await connect_tcp(self.server.host, self.server.port), query)

    def __str__(self) -> str:
        return f"tcp {self.server}"


class TlsTransport:
    """DNS over TLS (RFC 7858): the certificate is checked for `server.host`; the connection
    goes to `addresses` in order (the server's own address when it is an IP literal)."""

    def __init__(
        self, server: Endpoint, addresses: Sequence[IPAddress], context: ssl.SSLContext
    ) -> None:
        self.server = server
        self.addresses = list(addresses)
        self.context = context

    async def exchange(self, query: bytes) -> bytes:
        error: OSError | None = None
        for address in self.addresses:
            try:
                stream = await connect_tcp(
                    str(address),
                    self.server.port,
                    tls=self.context,
                    server_hostname=self.server.host,
                )
            except OSError as exc:
                error = exc
                continue
            return await _framed_exchange(stream, query)
        assert error is not None, "a DoT server has at least one address"
        raise error

    def __str__(self) -> str:
        return f"DoT {self.server}"


def _bootstrap(host: str, addresses: Sequence[IPAddress]) -> aiohttp.abc.AbstractResolver:
    """aiohttp's name lookup for the DoH server: its bootstrap addresses, and nothing else."""
    from aiohttp.abc import AbstractResolver, ResolveResult

    class Bootstrap(AbstractResolver):
        async def resolve(
            self, name: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            if name != host:
                raise OSError(f"{name} is not the DoH server {host}")
            return [
                ResolveResult(
                    hostname=name,
                    host=str(address),
                    port=port,
                    family=socket.AF_INET if address.version == 4 else socket.AF_INET6,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
                for address in addresses
            ]

        async def close(self) -> None:
            return None

    return Bootstrap()


class HttpsTransport:
    """DNS over HTTPS (RFC 8484): POST application/dns-message over HTTP/1.1 with keep-alive.
    The certificate is checked for the URL's host. Call `aclose` when done."""

    def __init__(self, url: str, bootstrap: Sequence[IPAddress], context: ssl.SSLContext) -> None:
        self.url = url
        self.host = urlsplit(url).hostname or ""
        self.bootstrap = list(bootstrap)
        self.context = context
        self._session: aiohttp.ClientSession | None = None

    modules = _AIOHTTP  # what DnsResolver imports before it asks (off the loop)

    async def exchange(self, query: bytes) -> bytes:
        await _modules(_AIOHTTP)
        import aiohttp

        if self._session is None:
            # Created on first use: an aiohttp session belongs to the running loop.
            connector = aiohttp.TCPConnector(
                ssl=self.context,
                resolver=_bootstrap(self.host, self.bootstrap) if self.bootstrap else None,
            )
            self._session = aiohttp.ClientSession(connector=connector)
        try:
            async with self._session.post(
                self.url,
                data=query,
                headers={"Content-Type": _DNS_MESSAGE, "Accept": _DNS_MESSAGE},
                allow_redirects=False,
            ) as response:
                if response.status != 200 or response.content_type != _DNS_MESSAGE:
                    raise DialError(
                        Failure.DNS_SERVFAIL,
                        Op.RESOLVE,
                        f"{self}: HTTP {response.status} {response.content_type}",
                    )
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > MAX_MESSAGE:
                        raise DialError(Failure.UNKNOWN, Op.RESOLVE, f"{self}: answer too long")
                return bytes(body)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise classify_os_error(exc.certificate_error, Op.RESOLVE, f"{self}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise classify_os_error(exc.os_error, Op.RESOLVE, f"{self}: {exc.os_error}") from None
        except aiohttp.ClientError as exc:
            raise DialError(Failure.UNKNOWN, Op.RESOLVE, f"{self}: {exc!r}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __str__(self) -> str:
        return f"DoH {self.url}"


_DNS_MESSAGE = "application/dns-message"


# --- the resolver ---------------------------------------------------------------------------


class DnsResolver:
    """A Resolver over a DnsTransport, with a cache and the bogon check."""

    def __init__(
        self,
        transport: DnsTransport,
        *,
        allow_private: bool = False,
        public: tuple[IPNetwork, ...] = (),
        timeout: float = 5.0,
        query_id_zero: bool = False,
    ) -> None:
        self.transport = transport
        self.allow_private = allow_private
        # Ranges that stand for the public internet although they are private (the lab's
        # 127.77.0.0/16): answers there are not bogons, everything else is still checked.
        self.public = public
        self.timeout = timeout
        # RFC 8484 §4.1: DoH clients use ID 0, so HTTP caches can share answers.
        self.query_id_zero = query_id_zero
        self._cache: dict[str, tuple[float, list[IPAddress] | DialError]] = {}
        self._inflight: dict[str, asyncio.Task[list[IPAddress]]] = {}

    def _needs(self) -> tuple[str, ...]:
        return _DNSPYTHON + getattr(self.transport, "modules", ())

    async def resolve(self, host: str) -> list[IPAddress]:
        key = host.lower().rstrip(".")
        # Letters (IDN too), digits, '-', '_', '.': nothing a server could misread.
        if not key or not all(ch.isalnum() or ch in "-_." for ch in key):
            raise DialError(Failure.UNKNOWN, Op.RESOLVE, f"{host!r} is not a valid host name")
        cached = self._cache.get(key)
        if cached is not None:
            expires, value = cached
            if time.monotonic() < expires:
                if isinstance(value, DialError):
                    raise DialError(value.failure, value.op, value.detail)
                return list(value)
            del self._cache[key]
        # Connections to one name often start together: they share one lookup.
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return list(await asyncio.shield(task))

    def _finished(self, key: str, task: asyncio.Task[list[IPAddress]]) -> None:
        del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters (if any are left) got it

    async def _lookup(self, name: str) -> list[IPAddress]:
        # The modules first, outside the lookup's time: their import is the machine's time.
        await _modules(self._needs())
        import dns.rdatatype

        try:
            # Within a probe target, it grows with the loop time lost (deadlines.patient).
            async with patient(self.timeout):
                answers = await asyncio.gather(
                    self._ask(name, dns.rdatatype.A),
                    self._ask(name, dns.rdatatype.AAAA),
                    return_exceptions=True,
                )
        except TimeoutError:
            raise DialError(
                Failure.DNS_TIMEOUT, Op.RESOLVE, f"{name}: no answer from {self.transport}"
            ) from None
        addresses: list[IPAddress] = []
        ttls: list[float] = []
        errors: list[DialError] = []
        for answer in answers:  # IPv4 first: IPv6 is often missing where detour is needed
            if isinstance(answer, DialError):
                errors.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer[0]:
                addresses += answer[0]
                ttls.append(answer[1])
        if not addresses:
            error = errors[0] if errors else None
            if error is None:
                error = DialError(Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {name}")
            if error.failure in (Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER):
                self._store(name, error, NEGATIVE_TTL)
            raise error
        if not self.allow_private:
            bogons = bogons_in(name, addresses, self.public)
            if bogons:
                raise DialError(
                    Failure.DNS_BOGON,
                    Op.RESOLVE,
                    f"{name}: {self.transport} answered {', '.join(bogons)}, "
                    "an address no public name has (tampering?)",
                )
        self._store(name, addresses, min(max(min(ttls), MIN_TTL), MAX_TTL))
        return addresses

    def _store(self, name: str, value: list[IPAddress] | DialError, ttl: float) -> None:
        if len(self._cache) >= CACHE_SIZE:
            del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[name] = (time.monotonic() + ttl, value)

    async def _ask(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[list[IPAddress], float]:
        import dns.exception
        import dns.message

        try:
            query = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            raise DialError(
                Failure.UNKNOWN, Op.RESOLVE, f"{name!r} is not a valid host name"
            ) from None
        if self.query_id_zero:
            query.id = 0
        try:
            wire = await self.transport.exchange(query.to_wire())
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise classify_os_error(exc, Op.RESOLVE, f"{self.transport}: {exc}") from None
        return read_answer(query, wire, str(self.transport))

    async def aclose(self) -> None:
        close = getattr(self.transport, "aclose", None)
        if close is not None:
            await close()

    def __repr__(self) -> str:
        return str(self.transport)
