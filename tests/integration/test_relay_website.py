"""The relay's website (helper/relay/decoy.py) answer by answer, as a stock nginx 1.22
serving the same two pages answers (each row was compared against one; the rows marked
"nginx:" are where it still differs, docs/relay.md "The website"). Through a real relay on
plain HTTP (its setting behind a CDN or nginx), connection by connection: the statuses of
every answer on the connection, and whether the relay closed it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helper.http_server import Request
from helper.relay.config import parse_relay_config
from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer, cookie
from transports import Endpoint
from transports.fronted.accesskey import access_token

H = "Host: relay.test"


def req(line: str, *fields: str, body: bytes = b"") -> bytes:
    """A request head (CRLF line ends), then `body`."""
    return ("\r\n".join([line, *fields]) + "\r\n\r\n").encode("latin-1") + body


BIG = "y" * 5000
NEXT = req("GET /x HTTP/1.1", H)  # a second request on the connection

PROBES = [
    # well-formed: the site, and the statuses a static site has
    ("home", req("GET / HTTP/1.1", H), ["200"], False),
    ("index", req("GET /index.html?x=1 HTTP/1.1", H), ["200"], False),
    ("missing", req("GET /missing HTTP/1.1", H), ["404"], False),
    ("head", req("HEAD / HTTP/1.1", H), ["200"], False),
    ("absolute", req("GET http://relay.test/ HTTP/1.1", H), ["200"], False),
    ("post", req("POST / HTTP/1.1", H, "Content-Length: 5", body=b"hello"), ["405"], False),
    ("options", req("OPTIONS / HTTP/1.1", H), ["405"], False),
    ("trace", req("TRACE / HTTP/1.1", H), ["405"], True),
    ("unknown-method", req("FOO / HTTP/1.1", H), ["405"], False),
    ("lowercase-method", req("get / HTTP/1.1", H), ["400"], True),
    # connections
    ("http/1.0", req("GET / HTTP/1.0"), ["200"], True),
    (
        "http/1.0-keep-alive",
        req("GET / HTTP/1.0", "Connection: keep-alive") + req("GET /x HTTP/1.0"),
        ["200", "404"],
        True,
    ),
    ("pipelined", req("GET / HTTP/1.1", H) + NEXT, ["200", "404"], False),
    ("close", req("GET / HTTP/1.1", H, "Connection: close") + NEXT, ["200"], True),
    (
        "chunked-body",
        req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"5;x\r\nhello\r\n0\r\n\r\n")
        + NEXT,
        ["405", "404"],
        False,
    ),
    (
        "get-with-body",
        req("GET / HTTP/1.1", H, "Content-Length: 4", body=b"body") + NEXT,
        ["200", "404"],
        False,
    ),
    ("leading-empty-line", b"\r\n" + req("GET / HTTP/1.1", H), ["200"], False),
    ("two-spaces", req("GET  / HTTP/1.1", H), ["200"], False),
    ("http/1.2", req("GET / HTTP/1.2", H), ["200"], False),
    # malformed: nginx's statuses and its error page, then the connection ends
    ("garbage", b"garbage\r\n\r\n", ["400"], True),
    ("ssh", b"SSH-2.0-OpenSSH_9.6\r\n", ["400"], True),
    ("tls", b"\x16\x03\x01\x00\x05hello", ["400"], True),
    ("http/2.0", req("GET / HTTP/2.0"), ["505"], True),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ["400"], True),
    ("asterisk", req("OPTIONS * HTTP/1.1", H), ["400"], True),
    ("no-host", req("GET / HTTP/1.1"), ["400"], True),
    ("two-hosts", req("GET / HTTP/1.1", "Host: a", "Host: b"), ["400"], True),
    ("obs-fold", req("GET / HTTP/1.1", H, "X: a", " b"), ["400"], True),
    ("uri-10k", req("GET /" + "a" * 10000 + " HTTP/1.1", H), ["414"], True),
    ("field-9k", req("GET / HTTP/1.1", H, "X: " + "y" * 9000), ["400"], True),
    ("head-35k", req("GET / HTTP/1.1", H, *(f"X-{i}: {BIG}" for i in range(7))), ["400"], True),
    (
        "length-and-chunked",
        req("POST / HTTP/1.1", H, "Content-Length: 3", "Transfer-Encoding: chunked"),
        ["400"],
        True,
    ),
    (
        "two-lengths",
        req("POST / HTTP/1.1", H, "Content-Length: 3", "Content-Length: 3", body=b"abc"),
        ["400"],
        True,
    ),
    ("gzip-coding", req("POST / HTTP/1.1", H, "Transfer-Encoding: gzip"), ["501"], True),
    # nginx keeps this one's connection
    ("body-too-large", req("POST / HTTP/1.1", H, "Content-Length: 99999999"), ["413"], True),
    # where the website still differs from nginx (docs/relay.md)
    ("range", req("GET / HTTP/1.1", H, "Range: bytes=0-9"), ["200"], False),  # nginx: 206
    ("dot-segments", req("GET /../.. HTTP/1.1", H), ["404"], False),  # nginx: 400
    ("double-slash", req("GET // HTTP/1.1", H), ["404"], False),  # nginx: 200
    ("bare-lf", b"GET / HTTP/1.1\nHost: a\n\n", ["400"], True),  # nginx: 200
    ("utf-8-path", "GET /é HTTP/1.1\r\nHost: a\r\n\r\n".encode(), ["400"], True),  # nginx: 404
]


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[RelayServer, RelayKeys, int]]:
    config = parse_relay_config(
        f'[relay]\nlisten = "127.0.0.1:0"\nstate = "{tmp_path}/state"\n', "test relay config"
    )
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys)
    _, port = await server.start()
    yield server, keys, port
    await server.stop(grace=0.5)


async def talk(port: int, data: bytes, wait: float = 2.0) -> tuple[bytes, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got, closed = b"", False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return got, closed


async def test_the_website_answers_as_nginx(relay) -> None:
    _, _, port = relay
    answers = await asyncio.gather(*(talk(port, data) for _, data, _, _ in PROBES))
    for (name, _, statuses, closes), (answer, closed) in zip(PROBES, answers, strict=True):
        got = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert [s.decode() for s in got] == statuses, (name, answer[:300])
        assert closed == closes, (name, answer[:300])
        for head in re.findall(rb"HTTP/1\.1 [^\r]*\r\n(?:[^\r]+\r\n)*", answer):
            names = [line.split(b":")[0] for line in head.split(b"\r\n")[1:] if line]
            # nginx's fields, in nginx's order (static files add validators, docs/relay.md)
            assert names == [b"Server", b"Date", b"Content-Type", b"Content-Length", b"Connection"]
            assert b"\r\nServer: nginx\r\n" in head
        for mark in (b"aiohttp", b"Python", b"detour", b"relay", b"Traceback"):
            assert mark not in answer, (name, answer[:300])


async def test_an_error_page_is_nginxs_byte_for_byte(relay) -> None:
    _, _, port = relay
    answer, _ = await talk(port, b"garbage\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nDate: ")
    assert body == (
        b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n"
        b"<center><h1>400 Bad Request</h1></center>\r\n<hr><center>nginx</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )
    answer, _ = await talk(port, req("HEAD /x HTTP/1.1", H))
    assert b"\r\nContent-Length: 220\r\n" in answer and answer.endswith(b"\r\n\r\n")


async def test_a_tunnels_switch_says_nginx_too(relay) -> None:
    """The 101 a client with a valid token gets names the website's server, as when nginx
    passes an upgrade on, and nothing of what answers behind it."""
    _, keys, port = relay
    key = keys.add_client("alice", Endpoint("127.0.0.1", port), "relay.test", "relay.test")
    upgrade = (
        f"GET {keys.path} HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nCookie: a=b; __session={access_token(key)}\r\n\r\n"
    ).encode()
    answer, _ = await talk(port, upgrade, wait=0.5)
    head = answer.partition(b"\r\n\r\n")[0]
    names = [line.split(b":")[0] for line in head.split(b"\r\n")[1:]]
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert names == [b"Server", b"Date", b"Connection", b"Upgrade", b"Sec-WebSocket-Accept"]
    assert b"\r\nServer: nginx\r\n" in head and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    # The same with WebSocket version 8, or a key that is no key: the website.
    for bad in (b"Sec-WebSocket-Version: 8", b"Sec-WebSocket-Key: short"):
        field = bad.split(b":")[0]
        broken = re.sub(field + rb": [^\r]*", bad, upgrade)
        answer, _ = await talk(port, broken)
        assert answer.startswith(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n"), bad


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        (["Cookie: __session=a.b.c"], "a.b.c"),
        (["Cookie: x=1; __session=a.b.c; y=2"], "a.b.c"),
        (["Cookie: x=1", 'Cookie: __session="a.b.c"'], "a.b.c"),
        (["Cookie: __sessionx=1; _session=2"], None),
        (["Cookie: ;;=; __session"], None),
        ([], None),
    ],
)
def test_the_token_is_read_from_the_cookie_fields(fields: list[str], value: str | None) -> None:
    headers = [tuple(f.split(": ", 1)) for f in fields]
    request = Request("GET", "/", "HTTP/1.1", headers, "/", "", "relay.test")  # type: ignore[arg-type]
    assert cookie(request, "__session") == value
