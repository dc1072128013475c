"""Bad input on the mixed listener: each case gets the protocol's error reply or a close
within the handshake timeout, nothing reaches the log as a traceback, and the listener
keeps serving the next client."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from tests.conftest import config_text
from tests.support.clients import exchange, open_socks5

HANDSHAKE_TIMEOUT = 1.0

CASES = [
    # (id, bytes sent then half-close, expected reply prefix or b"" for a plain close)
    ("socks5-truncated-greeting", b"\x05", b""),  # v5, NMETHODS missing
    ("socks5-truncated-methods", b"\x05\x03\x00", b""),  # 3 methods announced, 1 sent
    ("socks5-zero-methods", b"\x05\x00", b"\x05\xff"),  # no acceptable methods
    ("socks5-only-gssapi", b"\x05\x01\x01", b"\x05\xff"),  # GSSAPI only: not supported
    (
        "socks5-bind",
        b"\x05\x01\x00" + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",
        b"\x05\x00\x05\x07",
    ),
    (
        # supported: the association is granted, and ends as the connection closes
        "socks5-udp-associate",
        b"\x05\x01\x00" + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00",
        b"\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01",
    ),
    (
        "socks5-unknown-command",
        b"\x05\x01\x00" + b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50",
        b"\x05\x00\x05\x07",
    ),
    (
        "socks5-unknown-atyp",
        b"\x05\x01\x00" + b"\x05\x01\x00\x07\x7f\x00\x00\x01\x00\x50",
        b"\x05\x00\x05\x08",
    ),
    ("socks5-empty-name", b"\x05\x01\x00" + b"\x05\x01\x00\x03\x00\x00\x50", b"\x05\x00\x05\x01"),
    (
        "socks5-name-255",
        b"\x05\x01\x00" + b"\x05\x01\x00\x03\xff" + b"a" * 255 + b"\x00\x50",
        b"\x05\x00\x05\x01",
    ),
    (
        "socks5-name-with-nul",
        b"\x05\x01\x00" + b"\x05\x01\x00\x03\x05a\x00b.c\x00\x50",
        b"\x05\x00\x05\x01",
    ),
    (
        "socks5-port-zero",
        b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00",
        b"\x05\x00\x05\x01",
    ),
    ("socks5-truncated-request", b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00", b"\x05\x00"),
    (
        "socks5-wrong-request-version",
        b"\x05\x01\x00" + b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50",
        b"\x05\x00",
    ),
    ("socks5-bad-auth-version", b"\x05\x01\x02" + b"\x02\x01a\x01b", b"\x05\x02\x01\x01"),
    ("socks4-bind", b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", b"\x00\x5b"),
    ("socks4-unterminated-userid", b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 100, b""),
    ("socks4a-empty-name", b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", b"\x00\x5b"),
    (
        "socks4a-name-300",
        b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"a" * 300 + b"\x00",
        b"\x00\x5b",
    ),
    ("socks4a-unterminated-name", b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"a" * 1000, b""),
    ("garbage-binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", b""),  # a TLS ClientHello
    ("garbage-lowercase", b"hello there\r\n\r\n", b""),
    ("http-not-a-request", b"HELLO\r\n\r\n", b"HTTP/1.1 400"),
    ("http-origin-form", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400"),
    ("http-bad-version", b"GET http://x/ HTTP/9.9\r\n\r\n", b"HTTP/1.1 505"),
    ("http-garbage-version", b"GET http://x/ FOO\r\n\r\n", b"HTTP/1.1 400"),
    ("http-https-absolute", b"GET https://x/ HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
    ("http-ftp-absolute", b"GET ftp://x/ HTTP/1.1\r\n\r\n", b"HTTP/1.1 501"),
    ("http-connect-no-port", b"CONNECT example.org HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
    ("http-connect-port-zero", b"CONNECT example.org:0 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
    ("http-connect-name-300", b"CONNECT " + b"a" * 300 + b":443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
    ("http-connect-empty-host", b"CONNECT :443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
    (
        "http-header-space-before-colon",
        b"GET http://x/ HTTP/1.1\r\nHost : x\r\n\r\n",
        b"HTTP/1.1 400",
    ),
    ("http-obs-fold", b"GET http://x/ HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n", b"HTTP/1.1 400"),
    (
        "http-header-flood-count",
        b"GET http://x/ HTTP/1.1\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n",
        b"HTTP/1.1 431",
    ),
    (
        "http-header-flood-size",
        b"GET http://x/ HTTP/1.1\r\nX-A: " + b"a" * 40000 + b"\r\n\r\n",
        b"HTTP/1.1 431",
    ),
    ("http-endless-line", b"GET http://x/ " + b"a" * 70000, b"HTTP/1.1 431"),
    ("http-truncated-head", b"CONNECT example.org:443 HTTP/1.1\r\nHost: exa", b""),
    # RFC 9112 §2.2: a bare LF is refused at once (not waited out as no end of the head)
    ("http-bare-lf", b"GET http://x/ HTTP/1.1\nHost: x\n\n", b"HTTP/1.1 400"),
    # RFC 9112 §6.3: a forwarded request whose body length is unclear is not passed on
    (
        "http-te-and-cl",
        b"POST http://x/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 400",
    ),
    (
        "http-two-lengths",
        b"POST http://x/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"HTTP/1.1 400",
    ),
    (
        "http-negative-length",
        b"POST http://x/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 400",
    ),
    (
        "http-length-not-a-number",
        b"POST http://x/ HTTP/1.1\r\nContent-Length: ab\r\n\r\n",
        b"HTTP/1.1 400",
    ),
    (
        "http-chunked-not-last",
        b"POST http://x/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 501",
    ),
]


@pytest.fixture
async def listener(start_engine, http_origin):
    engine = await start_engine(
        config_text(extra=""),
    )
    return engine


def _assert_clean_log(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, f"traceback logged: {record.getMessage()}"
        assert record.levelno < logging.ERROR, f"error logged: {record.getMessage()}"


async def _still_serves(address: tuple[str, int], http_origin) -> None:
    reader, writer = await open_socks5(address, "127.0.0.1", http_origin.port)
    writer.write(b"GET /after HTTP/1.0\r\n\r\n")
    assert (await reader.read()).endswith(b"/after\n")
    writer.close()


@pytest.mark.parametrize("payload, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_gets_error_reply_or_close(
    listener, http_origin, caplog, payload, expected
) -> None:
    caplog.set_level(logging.INFO)
    address = listener.mixed_address
    reply = await exchange(address, payload, timeout=HANDSHAKE_TIMEOUT + 5)
    if expected:
        assert reply.startswith(expected), reply[:80]
    else:
        assert reply == b"", reply[:80]
    await _still_serves(address, http_origin)
    _assert_clean_log(caplog)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x05",
        b"\x05\x01\x00\x05\x01",
        b"\x04\x01\x00\x50",
        b"CONNECT example.org:443 HTTP/1.1\r\n",
    ],
    ids=["nothing", "socks5-half-greeting", "socks5-half-request", "socks4-half", "http-half-head"],
)
async def test_silent_client_is_closed_within_handshake_timeout(
    start_engine, http_origin, caplog, payload
) -> None:
    caplog.set_level(logging.INFO)
    engine = await start_engine(
        config_text().replace(
            'handshake_timeout = "2s"', f'handshake_timeout = "{HANDSHAKE_TIMEOUT}s"'
        )
    )
    address = engine.mixed_address
    reader, writer = await asyncio.open_connection(*address)
    writer.write(payload)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(HANDSHAKE_TIMEOUT + 5):
        try:
            rest = await reader.read()  # returns at the close
        except ConnectionResetError:
            rest = b""  # closing with unread bytes in the buffer makes the kernel send RST
    elapsed = loop.time() - started
    writer.close()
    assert elapsed >= HANDSHAKE_TIMEOUT * 0.9
    if payload.startswith(b"CONNECT"):  # an HTTP client mid-head is told why (RFC 9110)
        assert rest.startswith(b"HTTP/1.1 408 "), rest[:80]
    else:
        assert rest in (b"", b"\x05\x00")  # the method choice may already have been sent
    await _still_serves(address, http_origin)
    _assert_clean_log(caplog)


async def test_many_bad_clients_at_once_do_not_stop_good_ones(
    listener, http_origin, caplog
) -> None:
    caplog.set_level(logging.INFO)
    address = listener.mixed_address
    payloads = [case[1] for case in CASES] * 5
    results = await asyncio.gather(
        *(exchange(address, p, timeout=10) for p in payloads), return_exceptions=True
    )
    assert not [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, ConnectionError)
    ]
    await _still_serves(address, http_origin)
    _assert_clean_log(caplog)


async def test_client_reset_mid_handshake_is_quiet(listener, http_origin, caplog) -> None:
    import socket

    caplog.set_level(logging.INFO)
    address = listener.mixed_address
    for payload in (b"\x05\x01\x00", b"CONNECT x:1 HT"):
        sock = socket.create_connection(address)
        sock.sendall(payload)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    await asyncio.sleep(0.2)
    await _still_serves(address, http_origin)
    _assert_clean_log(caplog)


@pytest.mark.parametrize(
    "junk", [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\xff\xff\x01"], ids=["http", "huge-record"]
)
async def test_junk_on_the_whatsapp_tls_port_is_logged_throttled(
    start_engine, tmp_path, monkeypatch, caplog, junk: bytes
) -> None:
    """What is not a TLS client on the WhatsApp proxy's TLS port gets OpenSSL's alert and a
    close; a scanner's flood of it leaves at most 20 log lines per 10 s, not one each."""
    monkeypatch.setenv("DETOUR_STATE_DIR", str(tmp_path / "state"))
    section = (
        '\n[whatsapp_proxy]\nlisten = "127.0.0.1"\ntls_port = 0\nchat_port = false\n'
        "http_port = false\nmedia_ports = []\n"
    )
    caplog.set_level(logging.INFO, "detour")
    engine = await start_engine(config_text(extra=section), probe_on_start=False)
    port = engine.whatsapp.port("tls")
    for _ in range(30):
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk)
            answer = b""
            try:
                answer = await reader.read()  # to the close: the handshake has ended
            except ConnectionResetError:
                pass
            writer.close()
        assert answer == b"" or answer.startswith(b"\x15\x03"), answer  # an alert or nothing
    failed = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failed) == 20, len(failed)
    _assert_clean_log(caplog)
