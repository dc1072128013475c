"""The status API's own HTTP/1.1 server (helper/http_server.py) on real loopback sockets:
what it answers to well-formed, malformed, oversized and slow requests, bodies it does not
read, a handler that raises, too many connections, and stopping mid-request; then curl, a
real client, against the status API of a running engine."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from helper.http_server import HttpServer, Request, Response
from tests.conftest import config_text
from tests.support.peers import require_peer

SAFETY = 10  # seconds: a safety net against a hang, not a measurement
NO_STORE = (("Cache-Control", "no-store"),)


async def echo_request(request: Request) -> Response:
    """Answers with what the server made of the request."""
    text = f"{request.method} {request.path} ?{request.query} host={request.host}\n"
    return Response.text(200, text)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[HttpServer]]]:
    servers: list[HttpServer] = []

    async def start(handler=echo_request, **kwargs) -> HttpServer:
        server = HttpServer(handler, "127.0.0.1", 0, name="test server", headers=NO_STORE, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()


async def exchange(server: HttpServer, data: bytes, *, eof: bool = False) -> bytes:
    """Send `data` (and end the sending side with `eof`), then read the answer until the
    server closes."""
    assert server.address is not None
    async with asyncio.timeout(SAFETY):
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(data)
        if eof:
            writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, answer
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Connection"] == "close" and headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(body) or not body
    return int(lines[0].split(" ")[1]), headers, body


async def test_a_request_and_its_answer(serve) -> None:
    server = await serve()
    status, headers, body = parse(
        await exchange(server, b"GET /status?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9080\r\n\r\n")
    )
    assert (status, body) == (200, b"GET /status ?x=1 host=127.0.0.1\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Date"].endswith(" GMT")
    # HTTP/1.0 needs no Host; an absolute-form target stands for it; escapes are decoded
    status, _, body = parse(await exchange(server, b"GET /%73tatus HTTP/1.0\r\n\r\n"))
    assert (status, body) == (200, b"GET /status ? host=\n")
    answer = await exchange(server, b"GET http://[::1]:9080/healthz HTTP/1.1\r\n\r\n")
    assert parse(answer)[2] == b"GET /healthz ? host=::1\n"
    # HEAD: the headers GET would have, no body
    status, headers, body = parse(await exchange(server, b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(b"HEAD /x ? host=h\n")))


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET /x HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: h\r\n folded: value\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    ],
    ids=[
        "garbage",
        "http2",
        "no-host",
        "two-hosts",
        "asterisk",
        "relative",
        "obs-fold",
        "latin1-target",
        "many-headers",
        "big-head",
    ],
)
async def test_bad_requests_get_an_http_error(serve, request_bytes: bytes, status: int) -> None:
    server = await serve()
    got, headers, body = parse(await exchange(server, request_bytes))
    assert got == status
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and b"Traceback" not in body


async def test_a_slow_client_gets_408_and_the_server_goes_on(serve) -> None:
    server = await serve(head_timeout=0.3)
    assert server.address is not None
    async with asyncio.timeout(SAFETY):
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /x HTTP/1.1\r\nHo")  # and then nothing
        status, _, body = parse(await reader.read())
        writer.close()
    assert (status, body) == (408, b"the request head did not arrive in time\n")
    # one that leaves mid-head gets nothing, and costs nothing
    assert await exchange(server, b"GET /x HT", eof=True) == b""
    assert parse(await exchange(server, b"GET /x HTTP/1.0\r\n\r\n"))[0] == 200


async def test_a_body_is_not_read_and_does_not_cut_the_answer(serve) -> None:
    server = await serve()
    body = b"b" * 20_000
    request = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    status, _, answer = parse(await exchange(server, request + body))
    assert (status, answer) == (200, b"POST /x ? host=h\n")


async def test_a_handler_that_raises_answers_500(serve, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("internal detail")

    server = await serve(broken)
    with caplog.at_level(logging.ERROR, logger="detour.api"):
        status, _, body = parse(await exchange(server, b"GET /x HTTP/1.0\r\n\r\n"))
    assert (status, body) == (500, b"internal error; see detour's log\n")
    assert "internal detail" in caplog.text and "test server: GET /x failed" in caplog.text


async def test_connections_over_the_limit_are_refused(serve) -> None:
    server = await serve(max_connections=2)
    assert server.address is not None
    async with asyncio.timeout(SAFETY):
        held = [await asyncio.open_connection(*server.address) for _ in range(2)]
        while server.open_connections < 2:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /x HTTP/1.0\r\n\r\n")
        try:
            refused = await reader.read()
        except ConnectionResetError:
            refused = b""
        writer.close()
        assert refused == b""
        for _, held_writer in held:
            held_writer.close()
        while server.open_connections:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        assert parse(await exchange(server, b"GET /x HTTP/1.0\r\n\r\n"))[0] == 200


async def test_stop_ends_connections_mid_request(serve) -> None:
    server = await serve()
    assert server.address is not None
    async with asyncio.timeout(SAFETY):
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /x HTTP/1.1\r\n")
        while not server.open_connections:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        await server.stop()
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass
        writer.close()
    assert server.address is None


# --- curl against the status API of a running engine --------------------------------------


def curl(*args: str) -> tuple[str, str]:
    """Run curl; the answer's head and body (with -I, curl shows the head as the body)."""
    dump = [] if "-I" in args else ["-D", "-"]
    command = ["curl", "-sS", "--max-time", "10", *dump, *args]
    result = subprocess.run(command, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.decode().partition("\r\n\r\n")
    return head, body


async def test_curl_against_the_status_api(start_engine) -> None:
    require_peer("curl", "curl")
    engine = await start_engine(
        config_text(extra='[api]\nlisten = "127.0.0.1:0"\n'), probe_on_start=False
    )
    assert engine.api is not None and engine.api.address is not None
    url = "http://{}:{}".format(*engine.api.address)
    run = asyncio.to_thread
    head, body = await run(curl, f"{url}/healthz")
    assert head.startswith("HTTP/1.1 200 OK") and body == "ok\n"
    head, body = await run(curl, "-I", f"{url}/status")  # HEAD
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Type: application/json" in head
    assert "Cache-Control: no-store" in head and body == ""
    head, _ = await run(curl, "--http1.0", f"{url}/metrics")
    assert head.startswith("HTTP/1.1 200 OK")
    head, _ = await run(curl, "-X", "POST", "-d", "x=1", f"{url}/status")
    assert head.startswith("HTTP/1.1 405 Method Not Allowed") and "Allow: GET, HEAD" in head
    head, body = await run(curl, f"{url}/nothing-here")
    assert head.startswith("HTTP/1.1 404 Not Found") and "Traceback" not in body
