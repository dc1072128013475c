"""The Signal proxy endpoint with a real nested TLS client: the standard library's ssl, an
outer TLS connection to the endpoint that checks its certificate as the apps do, and inside
it a second TLS client (asyncio's start_tls over the first: an SSLObject and MemoryBIOs) that
checks the origin's certificate for a Signal name. Nothing here shares code with the endpoint.

The origin stands for Signal's server on port 443 of an address of its own; detour reaches it
directly (dns.hosts). The lab tests (tests/lab/test_signal_proxy.py) go through a censor."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.ca import LabCA
from tests.conftest import config_text
from tests.support.integrity import run_integrity, serve_integrity
from tests.support.networks import free_network
from tests.support.sizes import transfer_size
from tests.support.tls import client_hello, record

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIZE = transfer_size(16 << 20)  # 4 MiB in make test, 64 with DETOUR_FULL_LOAD=1
PROXY_NAME = "proxy.signal-test.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA(tmp_path_factory.mktemp("signal-ca"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def origin(ca: LabCA) -> AsyncIterator[str]:
    """An integrity server with TLS for chat.signal.org and storage.signal.org on :443 of
    an address of its own."""
    address = str(ipaddress.ip_network(free_network()).network_address + 7)
    context = ca.server_context("chat.signal.org", "storage.signal.org")
    server = await asyncio.start_server(serve_integrity, address, 443, ssl=context)
    try:
        yield address
    finally:
        server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def engine(ca: LabCA, origin: str, tmp_path: Path) -> AsyncIterator[Engine]:
    cert, key = ca.issue(PROXY_NAME)
    text = config_text(
        extra=f"""
        [dns]
        hosts = {{ "chat.signal.org" = ["{origin}"], "storage.signal.org" = ["{origin}"] }}
        [signal_proxy]
        listen = "127.0.0.1:0"
        certificate = "{cert}"
        key = "{key}"
        handshake_timeout = "2s"
        max_hello = "2KiB"
        """
    ).replace('[dns]\nhosts = { "origin.test" = ["127.0.0.1"] }\n', "")
    engine = Engine(parse_config(text, "test config"), probe_on_start=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def port(engine: Engine) -> int:
    assert engine.signal is not None
    return engine.signal.sockets[0][1]


async def open_nested(ca: LabCA, engine: Engine, inner_name: str = "chat.signal.org"):
    """Outer TLS to the proxy (its certificate checked for PROXY_NAME), inner TLS to
    `inner_name` inside it."""
    outer = ssl.create_default_context(cafile=str(ca.ca_path))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port(engine), ssl=outer, server_hostname=PROXY_NAME, limit=1 << 20
    )
    inner = ssl.create_default_context(cafile=str(ca.ca_path))
    await writer.start_tls(inner, server_hostname=inner_name)
    return reader, writer


async def test_a_nested_client_reaches_signal_with_every_byte_intact(
    ca: LabCA, engine: Engine
) -> None:
    reader, writer = await open_nested(ca, engine)
    peer = writer.get_extra_info("ssl_object").getpeercert()
    assert ("DNS", "chat.signal.org") in peer["subjectAltName"]  # the origin's, not detour's
    [row] = engine.server.connections.values()
    assert (row.protocol, str(row.target)) == ("signal-tls", "chat.signal.org:443")
    result = await asyncio.wait_for(
        run_integrity(reader, writer, SIZE, SIZE, half_close=False), 600
    )
    assert result.ok, result


async def test_another_signal_host_goes_to_its_own_name(ca: LabCA, engine: Engine) -> None:
    reader, writer = await open_nested(ca, engine, "storage.signal.org")
    result = await asyncio.wait_for(run_integrity(reader, writer, 1000, 1000, half_close=False), 30)
    assert result.ok


# --- refusals: what an ordinary TLS site does, never a traceback -------------------------


def outer_socket(ca: LabCA, engine: Engine) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    raw = socket.create_connection(("127.0.0.1", port(engine)), timeout=10)
    return context.wrap_socket(raw, server_hostname=PROXY_NAME)


def refused(sock: ssl.SSLSocket, send: bytes = b"") -> bytes:
    """Send, then read to the end: what the proxy answered before closing."""
    with sock:
        if send:
            sock.sendall(send)
        got = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, ssl.SSLEOFError):
                return got
            if not chunk:
                return got
            got += chunk


async def no_connections(engine: Engine) -> None:
    await asyncio.wait_for(engine.server.idle(), 10)


HUGE_PADDING = b"\x00\x15" + (3000).to_bytes(2, "big") + bytes(3000)  # over max_hello


@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (record(client_hello(b"example.com")), "'example.com' is not one of signal_proxy.hosts"),
        (record(client_hello(b"signal.org")), "'signal.org' is not one of"),
        (record(client_hello(None)), "without a server name"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not an inner TLS ClientHello (not-tls)"),
        (bytes(range(22, 256)) * 4, "not an inner TLS ClientHello"),
        (record(client_hello(b"chat.signal.org", HUGE_PADDING)), "larger than signal_proxy"),
        (record(client_hello(b"chat.signal.org"))[:30], "closed before a complete"),
    ],
    ids=["other-name", "parent-domain", "no-name", "browser", "junk", "oversized", "cut-short"],
)
async def test_what_is_not_a_signal_hello_is_closed(
    ca: LabCA, engine: Engine, send: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "detour.proxy")

    def exchange() -> bytes:
        sock = outer_socket(ca, engine)
        if reason.startswith("closed before"):
            sock.sendall(send)
            sock.unwrap().close()  # close_notify: the inner hello ends half-way; theirs back
            return b""
        return refused(sock, send)

    answer = await asyncio.to_thread(exchange)
    assert answer == b""  # close_notify and a close: no reply, no error page
    await no_connections(engine)
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text
    assert "Signal proxy: refused client" in caplog.text
    assert reason in caplog.text


async def test_a_slow_hello_is_closed_at_the_timeout(
    ca: LabCA, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    hello = record(client_hello(b"chat.signal.org"))

    def slow() -> tuple[bytes, float]:
        sock = outer_socket(ca, engine)
        sock.sendall(hello[:20])  # then nothing: the rest never comes
        started = time.monotonic()
        return refused(sock), time.monotonic() - started

    caplog.set_level(logging.INFO, "detour.proxy")
    answer, waited = await asyncio.to_thread(slow)
    assert answer == b"" and waited < 8  # handshake_timeout is 2s
    await no_connections(engine)
    assert "no complete inner ClientHello within 2s" in caplog.text


async def test_a_client_that_is_not_tls_at_all_gets_an_alert_or_a_close(engine: Engine) -> None:
    def plain() -> bytes:
        with socket.create_connection(("127.0.0.1", port(engine)), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while chunk := sock.recv(4096):
                got += chunk
            return got

    answer = await asyncio.to_thread(plain)
    assert answer == b"" or answer[:1] == b"\x15"  # nothing, or a TLS alert record
    await no_connections(engine)


async def test_a_renewed_certificate_is_taken_up_and_a_broken_one_is_not(
    ca: LabCA, origin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ACME client replaces the files in place: the next connection gets the new
    certificate; files that do not make a pair leave the one in use."""
    monkeypatch.setattr("helper.proxy.signal.RECHECK_CERTIFICATE", 0.0)
    first_cert, first_key = ca.issue(PROXY_NAME)
    old_cert = first_cert.read_bytes()  # issue() reuses the file names: keep the bytes
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(old_cert)
    key.write_bytes(first_key.read_bytes())
    text = config_text(
        extra=f"""
        [signal_proxy]
        listen = "127.0.0.1:0"
        certificate = "{cert}"
        key = "{key}"
        """
    )
    engine = Engine(parse_config(text, "test config"), probe_on_start=False)
    await engine.start()

    def served() -> bytes:
        context = ssl.create_default_context(cafile=str(ca.ca_path))
        with (
            socket.create_connection(("127.0.0.1", port(engine)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=PROXY_NAME) as sock,
        ):
            return sock.getpeercert(binary_form=True)

    try:
        before = await asyncio.to_thread(served)
        new_cert, new_key = ca.issue(PROXY_NAME, days=60)
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(new_key.read_bytes())
        os.utime(cert, (time.time() + 5, time.time() + 5))
        renewed = await asyncio.to_thread(served)
        assert renewed != before
        assert renewed == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        cert.write_bytes(old_cert)  # not new_key's certificate
        os.utime(cert, (time.time() + 10, time.time() + 10))
        assert await asyncio.to_thread(served) == renewed
    finally:
        await engine.stop()
