"""helper/http_server.py in keep-alive mode (the relay's website) on real loopback sockets:
pipelined requests, bodies skipped by length and by chunks, the idle and head timeouts that
close without a word, junk refused as soon as its first line is in, and an Upgrade that
takes the connection over. (One request per connection, the status API's mode, is in
test_status_api_http.py.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest

from helper.http_server import HttpServer, Manner, Request, Response, Upgrade
from transports import Stream

SAFETY = 10  # seconds: a safety net against a hang, not a measurement


async def echo(request: Request) -> Response | Upgrade:
    if request.path == "/upgrade":

        async def run(stream: Stream) -> None:
            stream.write(b"upgraded: " + await stream.read())

        return Upgrade([("Upgrade", "test"), ("Connection", "upgrade")], run)
    return Response.text(200, f"{request.method} {request.path}\n")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[HttpServer]]]:
    servers: list[HttpServer] = []

    async def start(**manner: object) -> HttpServer:
        options: dict[str, object] = {"keep_alive": 5.0, "server": "test"} | manner
        head_timeout = float(options.pop("head_timeout", 5.0))  # type: ignore[arg-type]
        server = HttpServer(
            echo,
            "127.0.0.1",
            0,
            name="test server",
            head_timeout=head_timeout,
            manner=Manner(**options),  # type: ignore[arg-type]
        )
        await server.start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()


async def talk(server: HttpServer, data: bytes, *, wait: float = SAFETY) -> tuple[bytes, bool]:
    """Send `data`; what comes back until the server closes (True) or `wait` passes."""
    assert server.address is not None
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(data)
    got = b""
    closed = False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    writer.close()
    return got, closed


def statuses(answer: bytes) -> list[str]:
    return re.findall(r"HTTP/1\.1 (\d+)", answer.decode("latin-1"))


async def test_pipelined_requests_are_answered_in_order_on_one_connection(serve) -> None:
    server = await serve()
    requests = (
        b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3))
        + b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    answer, closed = await talk(server, requests)
    assert closed and statuses(answer) == ["200"] * 4
    assert re.findall(rb"GET /\w+", answer) == [b"GET /0", b"GET /1", b"GET /2", b"GET /last"]
    assert answer.count(b"Connection: keep-alive") == 3 and b"Connection: close" in answer
    assert answer.startswith(b"HTTP/1.1 200 OK\r\nServer: test\r\nDate: ")


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",  # chunk lines ending in LF only
    ],
    ids=["length", "chunked", "chunked-lf"],
)
async def test_a_body_is_skipped_and_the_next_request_read(serve, body: bytes) -> None:
    server = await serve()
    head = b"POST /one HTTP/1.1\r\nHost: h\r\n"
    answer, closed = await talk(
        server, head + body + b"GET /two HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert closed and re.findall(rb"(?:GET|POST) /\w+", answer) == [b"POST /one", b"GET /two"]


async def test_a_body_that_is_no_chunked_body_ends_the_connection(serve) -> None:
    server = await serve()
    answer, closed = await talk(
        server, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"
    )
    assert closed and statuses(answer) == ["200"]


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "400"),
        (b"Content-Length: 3\r\nContent-Length: 3\r\n", "400"),
        (b"Content-Length: -1\r\n", "400"),
        (b"Transfer-Encoding: gzip\r\n", "501"),
    ],
)
async def test_a_body_of_unclear_length_is_refused(serve, framing: bytes, status: str) -> None:
    server = await serve()
    answer, closed = await talk(server, b"POST / HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\nabc")
    assert closed and statuses(answer) == [status]


async def test_an_idle_connection_is_closed_without_a_word(serve) -> None:
    server = await serve(keep_alive=0.3)
    answer, closed = await talk(server, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert closed and statuses(answer) == ["200"]  # the answer, then silence, then the end


async def test_a_head_that_does_not_come_is_closed_without_a_word(serve) -> None:
    server = await serve(head_timeout=0.3, answer_timeout=False)
    assert await talk(server, b"GET / HTTP/1.1\r\nHo") == (b"", True)
    assert await talk(server, b"GET /\r\n") == (b"", True)  # HTTP/0.9: waited out


async def test_junk_is_refused_as_soon_as_its_first_line_is_in(serve) -> None:
    server = await serve(head_timeout=30)
    for junk in (b"SSH-2.0-OpenSSH_9.6\r\n", b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1 x\r\n"):
        answer, closed = await talk(server, junk, wait=5)
        assert closed and statuses(answer) == ["400"], junk


async def test_a_long_request_line_is_414_at_once(serve) -> None:
    server = await serve(line_limit=100)
    answer, closed = await talk(server, b"GET /" + b"a" * 200, wait=5)
    assert closed and statuses(answer) == ["414"]


async def test_lenient_request_lines(serve) -> None:
    strict, lenient = await serve(), await serve(lenient=True)
    for line in (b"GET  /x HTTP/1.1", b"GET /x HTTP/1.2", b"GET ftp://h/x HTTP/1.1"):
        request = line + b"\r\nHost: h\r\nConnection: close\r\n\r\n"
        assert statuses((await talk(strict, request))[0]) in (["400"], ["505"])
        answer, _ = await talk(lenient, request)
        assert statuses(answer) == ["200"] and b"GET /x" in answer, line


async def test_leading_empty_lines_are_skipped_when_lenient(serve) -> None:
    server = await serve(lenient=True)
    answer, _ = await talk(
        server, b"\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert statuses(answer) == ["200"]


async def test_an_upgrade_takes_the_connection_over(serve) -> None:
    server = await serve()
    answer, closed = await talk(
        server, b"GET /upgrade HTTP/1.1\r\nHost: h\r\n\r\nhello after the head"
    )
    assert closed
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\nServer: test\r\nDate: ")
    assert head.endswith(b"\r\nUpgrade: test\r\nConnection: upgrade")
    assert rest == b"upgraded: hello after the head"
