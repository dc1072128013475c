"""Property tests for transports/wire.py's HTTP pieces and what reads requests off a
connection with them: response heads (from upstream proxies, CDN fronts, probed servers),
request bodies' framing and chunks (skipped by the relay's website between requests), the
head reader that refuses junk early, the WebSocket upgrade checks and the Cookie field the
relay reads a token from, and the relay's website as a whole.

For every example: a result or the parser's own error, never anything else; the verdict does
not depend on how the bytes were cut into reads."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helper.http_server import HttpServer, Request, read_request_head
from helper.relay import decoy
from helper.relay.server import cookie
from tests.fuzz.strategies import (
    Choices,
    _http_head,
    _server_head,
    fixed_bytes,
    mutate,
)
from tests.unit.scripted import ScriptedStream, run_without_loop
from transports.websocket import accept_headers
from transports.wire import (
    ChunkedBody,
    HeadError,
    ProtocolError,
    body_length,
    parse_request_head,
    parse_response_head,
)


def offsets(c: Choices, high: int, most: int = 8) -> list[int]:
    """0 to `most` offsets in [0, high] (either end reachable), from 1 + 2 * most bytes: the
    count does not move the bytes after it. Several properties below decode their input
    from one st.binary() draw this way (a list of integers cost as much as the rest)."""
    count = c.byte() % (most + 1)
    return [(c.byte() << 8 | c.byte()) % (high + 1) for _ in range(most)][:count]


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (in any order, out of range ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# --- response heads ---------------------------------------------------------------------------


def _response(data: bytes) -> bytes:
    c = Choices(data)
    status = c.pick(["HTTP/1.1 200 OK", "HTTP/1.0 407 Proxy", "HTTP/1.1 101", "HTTP/2 200"])
    fields = [
        c.pick(["Content-Length: 12", "X: y", "no colon", ": empty", "A:B"]) for _ in range(3)
    ]
    text = "\r\n".join([status, *fields]) + "\r\n\r\n"
    return mutate(text.encode(), c.take(20))


response_heads = st.one_of(st.binary(max_size=300), st.binary(max_size=80).map(_response))


def any_response_head_parses_or_is_not_http(data: bytes) -> None:
    try:
        head = parse_response_head(data)
    except ProtocolError as exc:
        message = str(exc)
        assert message
        return
    assert head.version.startswith("HTTP/1.") and 100 <= head.status <= 999
    assert all(name and ":" not in name and name == name.strip() for name, _ in head.headers)
    assert head.content_length is None or head.content_length >= 0


# --- request bodies ---------------------------------------------------------------------------


def a_bodys_framing_is_a_length_chunked_or_an_http_error(head: bytes) -> None:
    try:
        request = parse_request_head(head)
    except HeadError:
        return
    try:
        length = body_length(request)
    except HeadError as exc:
        status = exc.status
        assert status in (400, 501)
        return
    assert length is None or 0 <= length < 10**18


def _chunked(data: bytes) -> tuple[bytes, int]:
    """A valid chunked body (sizes in either case, extensions, trailers, LF or CRLF)."""
    c = Choices(data)
    out, size = b"", 0
    for _ in range(c.size(5)):
        chunk = c.take(c.size(40)) or b"x"
        end = c.pick([b"\r\n", b"\n"])
        digits = c.pick(["%x", "%X", "%04x"]) % len(chunk)
        ext = c.pick([b"", b";a=b", b"; name"])
        out += digits.encode() + ext + end + chunk + end
        size += len(chunk)
    out += b"0" + c.pick([b"\r\n", b"\n"])
    for _ in range(c.size(2)):
        out += b"Trailer: v\r\n"
    return out + b"\r\n", size


def _skip(body: bytes, cuts: list[int]) -> tuple[int, int, bool] | type[ProtocolError]:
    """(bytes used, payload size, done), fed in pieces; or ProtocolError."""
    skipper = ChunkedBody()
    used = 0
    try:
        for piece in pieces(body, cuts):
            taken = skipper.feed(piece)
            assert 0 <= taken <= len(piece)
            used += taken
            if skipper.done:
                break
            assert taken == len(piece)  # a body that has not ended takes everything
    except ProtocolError:
        return ProtocolError
    return used, skipper.size, skipper.done


def a_chunked_body_ends_where_it_ends_however_it_is_cut(draw: bytes) -> None:
    cuts = offsets(Choices(draw[:17]), 700)
    body, size = _chunked(draw[17:])
    assert _skip(body + b"GET / HTTP/1.1\r\n", cuts) == (len(body), size, True)
    assert _skip(body + b"GET / HTTP/1.1\r\n", []) == (len(body), size, True)


def any_bytes_are_a_chunked_body_not_one_or_more_to_come(draw: bytes) -> None:
    cuts, data = offsets(Choices(draw[:17]), 300), draw[17:]
    whole = _skip(data, [])
    assert _skip(data, cuts) == whole  # the verdict does not depend on the reads
    if whole is not ProtocolError:
        used, size, done = whole  # type: ignore[misc]
        assert size <= used <= len(data) and (done or used == len(data))


# --- reading a request head off a connection ---------------------------------------------------


def _read(chunks: list[bytes], **options: object) -> object:
    stream = ScriptedStream(chunks)

    async def read() -> object:
        try:
            head = await read_request_head(stream, 4096, **options)  # type: ignore[arg-type]
        except HeadError as exc:
            return ("error", exc.status)
        except asyncio.LimitOverrunError:
            return "too large"
        except asyncio.IncompleteReadError:
            return "ended"
        return ("head", head, stream.remaining())

    return run_without_loop(read())


def _any_head(draw: bytes) -> bytes:
    """A listener's head (as request_heads, from 400 bytes), a server's (as server_heads) or
    raw bytes (0-300 of them), the first byte choosing; the second, raw bytes' length."""
    kind, rest = draw[0] % 3, draw[2:]
    if kind == 0:
        return _http_head(rest[:400])
    if kind == 1:
        return _server_head(rest[:300])
    return rest[: (draw[1] << 8 | draw[2]) % 301]


READ_HEAD = 14  # the read's cuts 13, lenient 1


def a_request_head_is_read_the_same_however_it_arrives(draw: bytes) -> None:
    """Early refusals (junk, a request line too long) and the head itself come out the same
    whether the bytes arrive at once or in pieces; a head that is read parses or gets an
    HTTP error, and what followed it stays unread."""
    c = Choices(draw[:READ_HEAD])
    cuts, lenient, data = offsets(c, 500, most=6), c.chance(50), _any_head(draw[READ_HEAD:])
    whole = _read([data + b"rest"], line_limit=200, lenient=lenient)
    assert _read(pieces(data + b"rest", cuts), line_limit=200, lenient=lenient) == whole
    if isinstance(whole, tuple) and whole[0] == "head":
        _, head, rest = whole
        assert head.endswith(b"\n\n") or head.endswith(b"\n\r\n")
        assert (head + rest).endswith(b"rest")
        assert not lenient or head.lstrip(b"\r\n") == head  # empty lines before: skipped
        try:
            parse_request_head(head, lenient=lenient)
        except HeadError as exc:
            status = exc.status
            assert 400 <= status < 600


# --- the WebSocket upgrade and the token's cookie ----------------------------------------------


def _upgrade(data: bytes) -> bytes:
    c = Choices(data)
    fields = [
        "Host: relay.test",
        c.pick(["Upgrade: websocket", "Upgrade: WebSocket, h2c", "Upgrade: h2c", ""]),
        c.pick(["Connection: Upgrade", "Connection: keep-alive, upgrade", "Connection: close"]),
        c.pick(["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", ""]),
        "Sec-WebSocket-Key: "
        + c.pick(["dGhlIHNhbXBsZSBub25jZQ==", "short", "", "AAAAAAAAAAAAAAAAAAAAAAAA"]),
        c.pick(["Sec-WebSocket-Protocol: binary, chat", "Sec-WebSocket-Protocol:", ""]),
        c.pick(["Cookie: __session=a.b.c", 'Cookie: x=1; __session="q"; y', "Cookie: ;;="]),
    ]
    line = c.pick(["GET /t/x HTTP/1.1", "POST /t/x HTTP/1.1", "GET /t/x HTTP/1.0"])
    text = "\r\n".join([line, *(f for f in fields if f)]) + "\r\n\r\n"
    return mutate(text.encode(), c.take(24))


def any_upgrade_request_is_accepted_or_refused_with_a_reason(draw: bytes) -> None:
    protocols: tuple[str, ...] = [(), ("binary",), ("x", "chat")][draw[0] % 3]
    data = _upgrade(draw[1:])
    try:
        request = parse_request_head(data)
    except HeadError:
        return
    try:
        headers, chosen = accept_headers(request, protocols)
    except ProtocolError as exc:
        message = str(exc)
        assert message
    else:
        assert chosen is None or chosen in protocols
        assert dict(headers)["Upgrade"] == "websocket"
        assert all("\r" not in v and "\n" not in v for _, v in headers)
    value = cookie(
        Request(request.method, request.target, request.version, request.headers, "/", "", "h"),
        "__session",
    )
    assert value is None or (isinstance(value, str) and ";" not in value)


# --- the relay's website ---------------------------------------------------------------------


_WEBSITE = HttpServer(
    lambda request: _page(request),
    "127.0.0.1",
    0,
    name="relay",
    head_timeout=decoy.HEAD_TIMEOUT,
    manner=decoy.manner("nginx"),
)


async def _page(request: Request) -> object:
    return decoy.page(request, "nginx")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _website_case(draw: bytes) -> tuple[bytes, int]:
    """(a listener's or a server's head, the size of the pieces it comes in: 1-400)."""
    chunk = 1 + (draw[1] << 8 | draw[2]) % 400
    if draw[0] % 2:
        return _server_head(draw[3 : 3 + 300]), chunk
    return _http_head(draw[3:]), chunk


def any_request_gets_an_answer_as_nginx_gives_it(
    loop: asyncio.AbstractEventLoop, case: tuple[bytes, int]
) -> None:
    """Whatever reaches the relay that is not a tunnel (in pieces of any size), the answer
    is one complete HTTP/1.1 response in nginx's form, nothing of what serves it shows, and
    only the website's statuses occur."""
    head, chunk = case
    stream = ScriptedStream([head[i : i + chunk] for i in range(0, len(head), chunk)])
    wire = loop.run_until_complete(_WEBSITE.answer(stream))
    if wire is None:
        return  # the client left mid-head (a two-part line: HTTP/0.9, waited out)
    if not wire.startswith(b"HTTP/"):  # HTTP/0.9 (a line of two parts): a page's bytes
        assert wire.startswith((b"<html>", b"<!DOCTYPE html>"))
        assert wire.endswith((b"</html>\r\n", b"</html>\n"))
        return
    answer_head, sep, body = wire.partition(b"\r\n\r\n")
    assert sep
    lines = answer_head.decode("latin-1").split("\r\n")
    status = int(re.fullmatch(r"HTTP/1\.1 (\d{3}) [A-Za-z -]+", lines[0]).group(1))  # type: ignore[union-attr]
    assert status in (200, 206, 304, 400, 404, 405, 412, 413, 414, 416, 501, 505)
    names = [line.split(": ", 1)[0] for line in lines[1:]]
    # nginx's fields in nginx's order: the validators and ranges of a static file around
    # Connection where it puts them.
    assert names[:2] == ["Server", "Date"] and lines[1] == "Server: nginx"
    assert "Connection" in names
    order = ["Server", "Date", "Content-Type", "Content-Length", "Last-Modified", "Connection",
             "ETag", "Accept-Ranges", "Content-Range"]  # fmt: skip
    assert names == sorted(names, key=order.index)
    fields = dict(line.split(": ", 1) for line in lines[1:])
    if "Content-Length" in fields:
        length = int(fields["Content-Length"])
        assert length == len(body) or (body == b"" and head.startswith(b"HEAD "))
    else:
        assert status == 304 and body == b""
    for mark in (b"aiohttp", b"Python", b"detour", b"Traceback"):
        assert mark not in wire


# --- the website's readings of a path, ranges and validators ---------------------------------

_PATH_PIECES = ["/", "//", ".", "..", "%", "%2e", "%2F", "%00", "%zz", "a", "?", "#", "é", "%41"]


def any_target_is_a_clean_path_or_refused(draw: bytes) -> None:
    # 0-12 pieces, whether absolute: one fixed-size draw (a list strategy cost twice as much).
    c = Choices(draw)
    count, absolute = c.byte() % 13, c.chance(50)
    text = "".join([c.pick(_PATH_PIECES) for _ in range(12)][:count])
    target = ("http://h" if absolute else "") + "/" + text
    path = decoy.nginx_path(target)
    if path is None:
        return
    assert path.startswith("/") and "//" not in path
    segments = path.split("/")[1:]
    assert "." not in segments and ".." not in segments
    assert "\0" not in path


_RANGE_PIECES = ["0", "1", "9", "669", "99999", "-", ",", " ", "a", "-5", "5-"]


def any_range_set_is_whole_ranges_inside_the_file_or_a_refusal(draw: bytes) -> None:
    # 0-10 pieces and a file size of 0-2000, from one fixed-size draw.
    c = Choices(draw)
    count, size = c.byte() % 11, (c.byte() << 8 | c.byte()) % 2001
    spec = "".join([c.pick(_RANGE_PIECES) for _ in range(10)][:count])
    ranges = decoy.parse_ranges(spec, size)
    if ranges is None or ranges == []:
        return
    assert sum(end - start for start, end in ranges) <= size
    for start, end in ranges:
        assert 0 <= start < end <= size


_ETAG_PIECES = ['"6b167312-29d"', "W/", '"x"', ",", ", ", " ", "\t", "*", '"', "GMT",
                "Thu, 01 Jan 1970 00:00:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                "Sun Nov  6 08:49:37 1994", "99", ":", "-0500"]  # fmt: skip


def _header(draw: bytes) -> str:
    """Any text of up to 60 characters (the bytes read as UTF-16), or (one time in two) the
    pieces of ETag lists and HTTP dates put together: one draw instead of st.text(), which
    cost twice as much and never came near a list that matches."""
    if draw[0] % 2:
        return draw[1:].decode("utf-16-le", "ignore")[:60]
    return "".join(_ETAG_PIECES[x % len(_ETAG_PIECES)] for x in draw[1:9])


def any_etag_list_is_read_without_error(draw: bytes) -> None:
    header, weak = _header(draw[1:]), bool(draw[0] & 1)
    etag = '"6b167312-29d"'
    verdict = decoy._etag_matches(header, etag, weak=weak)
    assert verdict in (True, False)
    assert isinstance(decoy._http_time(header), int)


# --- the properties above, several to an example ----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks, and
# CI runs 10,000 examples of each test: properties of the same kind share a test and so an
# example, each with its own input drawn as it was for it alone (`fixed_bytes` for the long
# fixed-size ones: the same uniform bytes as st.binary() for a fraction of its cost).

WEBSITE_EXAMPLE = (
    b"GET \x00\x1c\x00\n HTTP/1.1\r\nHost: \r\n\r\n",
    1,
)  # \x1c: str.split() cuts there
QUIET_HEAD = _http_head(bytes(400))


@given(
    fixed_bytes(400).map(_http_head),
    fixed_bytes(READ_HEAD + 402),
    fixed_bytes(403).map(_website_case),
)
@example(QUIET_HEAD, bytes(READ_HEAD + 402), WEBSITE_EXAMPLE)
def test_request_heads_framing_reading_and_the_website(
    loop: asyncio.AbstractEventLoop, head: bytes, draw: bytes, case: tuple[bytes, int]
) -> None:
    """A request head's body framing, a head read in pieces, the relay's website's answer."""
    a_bodys_framing_is_a_length_chunked_or_an_http_error(head)
    a_request_head_is_read_the_same_however_it_arrives(draw)
    any_request_gets_an_answer_as_nginx_gives_it(loop, case)


@given(st.binary(min_size=17 + 8, max_size=17 + 200), st.binary(min_size=17, max_size=17 + 300))
def test_chunked_bodies_end_where_they_end_however_cut(body: bytes, data: bytes) -> None:
    a_chunked_body_ends_where_it_ends_however_it_is_cut(body)
    any_bytes_are_a_chunked_body_not_one_or_more_to_come(data)


@given(response_heads, st.binary(min_size=1, max_size=121))
@example(b"HTTP/1. 000", b"\0")  # status 0 was taken for one (found at 10,000 examples)
@example(b"HTTP/1.1 099 Nope\r\n\r\n", b"\0")
def test_response_heads_and_upgrade_requests(response: bytes, upgrade: bytes) -> None:
    any_response_head_parses_or_is_not_http(response)
    any_upgrade_request_is_accepted_or_refused_with_a_reason(upgrade)


@given(
    st.binary(min_size=14, max_size=14),
    st.binary(min_size=13, max_size=13),
    st.binary(min_size=2, max_size=2 + 120),
)
def test_the_websites_paths_ranges_and_validators(
    target: bytes, ranges: bytes, etags: bytes
) -> None:
    any_target_is_a_clean_path_or_refused(target)
    any_range_set_is_whole_ranges_inside_the_file_or_a_refusal(ranges)
    any_etag_list_is_read_without_error(etags)
