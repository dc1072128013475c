"""A plain client, written for the tests independently of detour: resolve with the lab's
resolver (dnspython over UDP), connect, TLS handshake with the lab CA, one HTTP request, an
optional download -- and name the first step that failed with OONI's failure strings.

It checks the lab itself (does each censorship recipe do to a client what the scenario says?),
so it must not share code with the detour it will later be used to test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

BLOCK_PAGE_MARK = b"Access to this resource is restricted"


@dataclass
class Outcome:
    failure: str | None = None
    op: str | None = None
    received: int = 0  # body bytes (downloads)
    rate: float | None = None  # body bytes per second (downloads)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def __str__(self) -> str:
        what = "ok" if self.ok else f"{self.failure} during {self.op}"
        return f"{what} ({self.received} bytes)" if self.received else what


class Failed(Exception):
    def __init__(self, failure: str, op: str) -> None:
        super().__init__(f"{failure} during {op}")
        self.failure = failure
        self.op = op


def _ssl_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in (62, 64):
            return "ssl_invalid_hostname"
        if exc.verify_code in (2, 18, 19, 20, 21):
            return "ssl_unknown_authority"
        return "ssl_invalid_certificate"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "eof_error"
    return "ssl_failed_handshake"


async def _step(op: str, awaitable, timeout: float):
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise Failed("generic_timeout_error", op) from None
    except ConnectionRefusedError:
        raise Failed("connection_refused", op) from None
    except (ConnectionResetError, BrokenPipeError):
        raise Failed("connection_reset", op) from None
    except ssl.SSLError as exc:
        raise Failed(_ssl_failure(exc), op) from None
    except asyncio.IncompleteReadError:
        raise Failed("eof_error", op) from None


async def resolve(
    name: str, server: tuple[str, int], public: ipaddress.IPv4Network, timeout: float
) -> str:
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        answer = await dns.asyncquery.udp(query, server[0], port=server[1], timeout=timeout)
    except dns.exception.Timeout:
        raise Failed("dns_timeout", "resolve") from None
    rcode = answer.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise Failed("dns_nxdomain_error", "resolve")
    if rcode != dns.rcode.NOERROR:
        raise Failed("dns_servfail_error", "resolve")
    addresses = [r.address for rrset in answer.answer for r in rrset if r.rdtype == dns.rdatatype.A]
    if not addresses:
        raise Failed("dns_no_answer", "resolve")
    address = ipaddress.ip_address(addresses[0])
    # The lab's network stands for the public internet; other private answers are bogons.
    if address not in public and (address.is_private or address.is_loopback):
        raise Failed("dns_bogon_error", "resolve")
    return str(address)


async def check(
    target: str,
    *,
    dns_server: tuple[str, int],
    cafile: Path,
    public: ipaddress.IPv4Network,
    timeout: float = 2.0,
    download: int | None = None,
) -> Outcome:
    url = urlsplit(target)
    kind, host = url.scheme, url.hostname or ""
    port = url.port or {"http": 80, "https": 443, "tls": 443}.get(kind, 0)
    outcome = Outcome()
    writer: asyncio.StreamWriter | None = None
    try:
        address = await resolve(host, dns_server, public, timeout)
        reader, writer = await _step(
            "connect", asyncio.open_connection(address, port, limit=1 << 20), timeout
        )
        if kind == "tcp":
            writer.write(b"ping\r\n\r\n")  # an echo echoes it, a web server answers 400
            if not await _step("read", reader.read(1), timeout):
                raise Failed("eof_error", "read")
            return outcome
        if kind in ("tls", "https"):
            context = ssl.create_default_context(cafile=str(cafile))
            await _step("tls_handshake", writer.start_tls(context, server_hostname=host), timeout)
            if kind == "tls":
                return outcome
        path = url.path or "/"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await _step("http_round_trip", reader.readuntil(b"\r\n\r\n"), timeout)
        first = await _step("http_round_trip", reader.read(65536), timeout)
        if BLOCK_PAGE_MARK in first:
            raise Failed("http_blockpage", "http_round_trip")
        if not head.startswith(b"HTTP/1.1 200"):
            raise Failed("http_round_trip_error", "http_round_trip")
        if download is not None:
            started = time.monotonic()
            received = len(first)
            while received < download:
                try:
                    chunk = await _step("read", reader.read(65536), timeout)
                except Failed as failed:
                    outcome.received = received
                    if failed.failure == "generic_timeout_error":
                        raise Failed("stalled", "read") from None
                    raise
                if not chunk:
                    outcome.received = received
                    raise Failed("eof_error", "read")
                received += len(chunk)
            outcome.received = received
            # The rate over what came after the first read (when the clock started).
            outcome.rate = (received - len(first)) / max(time.monotonic() - started, 1e-6)
        return outcome
    except Failed as failed:
        outcome.failure, outcome.op = failed.failure, failed.op
        return outcome
    finally:
        if writer is not None:
            writer.transport.abort()
