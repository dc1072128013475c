"""The relay's ordinary website: what everyone who is not a tunnel gets, identical whatever
the reason (another path, a wrong or revoked token, a browser, a prober), so nobody learns
that a relay listens here.

It claims to be a small static site on a stock nginx (`decoy.server` names the Server
field): two files, `index.html` and `404.html` (`error_page 404 /404.html`), served as nginx
serves them, down to the malformed requests: the same status line (always HTTP/1.1, and
HTTP/0.9's bare body), fields in nginx's order, nginx's error pages, its validators
(`Last-Modified`, `ETag` from the files' time and size; `304` and `412` as its
not_modified filter decides), byte ranges (`206`, multipart, `416`, `If-Range`), its URI
normalisation (percent-decoding, merged slashes, dot segments; `400` for what it refuses),
its limits (an 8 KiB request line, 414 past it; 8 KiB header fields) and its timeouts (60 s
for a request head, 75 s idle between requests, then the connection closes without a
word). The decisions are stated once here; helper/http_server.py carries them out.
tests/integration/test_relay_website.py compares the two response by response; what still
differs is listed in docs/relay.md (the website).

The files' time is the relay's own (when its keys were made), so relays do not share one
ETag that would tell them apart from other sites.
"""

from __future__ import annotations

import itertools
from email.utils import parsedate_to_datetime

from transports.wire import REASONS

from ..http_server import Manner, Request, Response, http_date

__all__ = ["DECOY_HOME", "DECOY_MISSING", "Website", "manner", "page"]

DECOY_HOME = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Ink &amp; Margin</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:Georgia,serif;max-width:38em;margin:3em auto;padding:0 1em;color:#222}
h1{font-weight:normal}footer{margin-top:4em;color:#777;font-size:.9em}</style></head>
<body><h1>Ink &amp; Margin</h1>
<p>Notes on fountain pens, paper and the slow pleasure of writing by hand.</p>
<h2>Latest</h2><ul><li>Iron gall inks, revisited</li><li>Why Tomoe River paper feathers less</li>
<li>Cleaning a piston filler without taking it apart</li></ul>
<footer>&copy; Ink &amp; Margin</footer></body></html>
"""
DECOY_MISSING = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Not found - Ink &amp; Margin</title></head>
<body><h1>Not found</h1><p>There is nothing here. <a href="/">Back to the front page</a>.</p>
</body></html>
"""

HTML = "text/html"  # a stock nginx adds no charset
HEAD_TIMEOUT = 60.0  # nginx's client_header_timeout
KEEP_ALIVE = 75.0  # nginx's keepalive_timeout
LINGERING_TIMEOUT = 5.0  # nginx's lingering_timeout: a body still coming is waited out so long
LINE_LIMIT = 8190  # nginx's large_client_header_buffers: 8 KiB for the request line ...
FIELD_LIMIT = 8190  # ... and for each header field
MAX_BODY = 1024 * 1024  # nginx's client_max_body_size

# nginx's own words for the statuses the website can answer with (its status lines and
# error pages say these, not always what the RFCs call them).
NGINX_REASONS = {
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Not Allowed",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    408: "Request Time-out",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
# nginx's error page, CRLF and all.
ERROR_PAGE = (
    "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n"
    "<center><h1>{status}</h1></center>\r\n<hr><center>{server}</center>\r\n</body>\r\n</html>\r\n"
)


# ... and its page for a request head or a field past its buffers.
TOO_LARGE = (
    "<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n"
    "<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    "<center>Request Header Or Cookie Too Large</center>\r\n"
    "<hr><center>{server}</center>\r\n</body>\r\n</html>\r\n"
)


def manner(server: str) -> Manner:
    """How the website's server behaves (helper/http_server.py), as nginx does."""

    def error(status: int, message: str) -> Response:
        if status == 431:  # a head or a field too large: nginx's own kind of 400
            return Response(400, TOO_LARGE.format(server=server).encode(), HTML,
                            reason="Bad Request", close=True)  # fmt: skip
        return error_page(status, server)

    return Manner(
        keep_alive=KEEP_ALIVE,
        server=server,
        line_limit=LINE_LIMIT,
        field_limit=FIELD_LIMIT,
        lenient=True,
        error=error,
        answer_timeout=False,
        http09=True,
        lingering=LINGERING_TIMEOUT,
    )


def error_page(
    status: int,
    server: str,
    *,
    close: bool = True,
    after: tuple[tuple[str, str], ...] = (),
    hang_up: bool = False,
) -> Response:
    reason = NGINX_REASONS.get(status) or REASONS.get(status, "Error")
    body = ERROR_PAGE.format(status=f"{status} {reason}", server=server).encode()
    return Response(status, body, HTML, reason=reason, close=close, after=after, hang_up=hang_up)


def page(request: Request, server: str) -> Response:
    """The website's answer with files of the Unix epoch (for tests of the server)."""
    return Website(server, 0).answer(request)


class Website:
    """The site: `server` for the Server field and the error pages, `modified` (Unix time)
    for both files."""

    def __init__(self, server: str, modified: int) -> None:
        self.server = server
        self.modified = int(modified)
        self.files = {"/index.html": DECOY_HOME, "/404.html": DECOY_MISSING}
        self._boundaries = itertools.count(1)  # nginx numbers its multipart boundaries

    def etag(self, body: bytes) -> str:
        return f'"{self.modified:x}-{len(body):x}"'

    def answer(self, request: Request) -> Response:
        """The answer to a request that is not a tunnel, in the order nginx decides."""
        method, server = request.method, self.server
        if not all("A" <= c <= "Z" or c in "_-" for c in method):
            return error_page(400, server)  # nginx knows methods in capitals only
        path = nginx_path(request.target)
        if path is None:
            return error_page(400, server)
        if request.version == "HTTP/0.9" and method != "GET":
            return error_page(400, server)  # HTTP/0.9 has GET only
        length = request.header("content-length") or "0"
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
            return error_page(413, server)  # (not read: the connection ends after the answer)
        if method not in ("GET", "HEAD", "POST"):
            return error_page(405, server, close=method == "TRACE", hang_up=method == "TRACE")
        if path.endswith("/"):
            path += "index.html"  # the index module
        body = self.files.get(path)
        if body is None:
            missing = self.files["/404.html"]  # error_page 404 /404.html
            return Response(404, missing, HTML, after=(("ETag", self.etag(missing)),))
        if method == "POST":
            return error_page(405, server, close=False)  # the static module takes no POST
        return self._file(request, body)

    def _file(self, request: Request, body: bytes) -> Response:
        etag = self.etag(body)
        modified = http_date(self.modified)
        # nginx's not_modified filter: If-Unmodified-Since and If-Match, then If-None-Match
        # and If-Modified-Since (which must name the file's time exactly).
        unmodified_since = request.header("if-unmodified-since")
        if unmodified_since is not None and _http_time(unmodified_since) < self.modified:
            return error_page(412, self.server, close=False, hang_up=True)
        if_match = request.header("if-match")
        if if_match is not None and not _etag_matches(if_match, etag, weak=False):
            return error_page(412, self.server, close=False, hang_up=True)
        since, none_match = request.header("if-modified-since"), request.header("if-none-match")
        if (since is not None or none_match is not None) and not (
            (since is not None and _http_time(since) != self.modified)
            or (none_match is not None and not _etag_matches(none_match, etag, weak=True))
        ):
            return Response(
                304, b"", None, headers=(("Last-Modified", modified),), reason="Not Modified",
                after=(("ETag", etag),), length=False,
            )  # fmt: skip
        validators = (("Last-Modified", modified),)
        ranges = None if request.version == "HTTP/0.9" else self._ranges(request, etag, len(body))
        if ranges is None:
            return Response(
                200, body, HTML, headers=validators,
                after=(("ETag", etag), ("Accept-Ranges", "bytes")),
            )  # fmt: skip
        if not ranges:
            return error_page(
                416, self.server, close=False, after=(("Content-Range", f"bytes */{len(body)}"),)
            )
        if len(ranges) == 1:
            start, end = ranges[0]
            return Response(
                206, body[start:end], HTML, headers=validators, reason="Partial Content",
                after=(("ETag", etag), ("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")),
            )  # fmt: skip
        boundary = f"{next(self._boundaries):020d}"
        parts = [
            b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n%s"
            % (boundary.encode(), HTML.encode(), start, end - 1, len(body), body[start:end])
            for start, end in ranges
        ]
        multipart = b"".join(parts) + b"\r\n--%s--\r\n" % boundary.encode()
        return Response(
            206, multipart, f"multipart/byteranges; boundary={boundary}", headers=validators,
            reason="Partial Content",
            after=(("ETag", etag),),
        )  # fmt: skip

    def _ranges(self, request: Request, etag: str, size: int) -> list[tuple[int, int]] | None:
        """The byte ranges to send as nginx's range filter picks them: None for the whole
        file (no Range, another unit, an If-Range that does not hold, ranges that add up
        past the file), [] for 416, else (start, end) pairs, `end` exclusive."""
        value = request.header("range")
        if value is None or len(value) < 7 or value[:6].lower() != "bytes=":
            return None
        if_range = request.header("if-range")
        if if_range is not None:
            if len(if_range) >= 2 and if_range.endswith('"'):
                if if_range != etag:
                    return None
            elif _http_time(if_range) != self.modified:
                return None
        return parse_ranges(value[6:], size)


_MAX_OFFSET = (1 << 63) - 1  # nginx's off_t


def parse_ranges(spec: str, size: int) -> list[tuple[int, int]] | None:
    """nginx's reading of a `bytes=` range set (ngx_http_range_parse) for a file of `size`
    bytes: (start, end) pairs with `end` exclusive; [] when nothing can be satisfied or the
    syntax is wrong (416); None when the whole file goes out instead (200): a range that
    starts at 0 and is empty, or ranges that add up to more than the file."""
    ranges: list[tuple[int, int]] = []
    total = 0
    at, n = 0, len(spec)

    def spaces(i: int) -> int:
        while i < n and spec[i] == " ":
            i += 1
        return i

    def number(i: int) -> tuple[int, int] | None:
        start, value = i, 0
        while i < n and "0" <= spec[i] <= "9":
            value = value * 10 + ord(spec[i]) - 48
            if value > _MAX_OFFSET:
                return None
            i += 1
        return (value, i) if i > start else None

    while True:
        at = spaces(at)
        suffix = False
        if at < n and spec[at] == "-":
            suffix, at = True, at + 1
            start = 0
        else:
            read = number(at)
            if read is None:
                return []
            start, at = read
            at = spaces(at)
            if at >= n or spec[at] != "-":
                return []
            at = spaces(at + 1)
            if at >= n or spec[at] == ",":
                end = size
                if start < end:
                    ranges.append((start, end))
                    total += end - start
                elif start == 0:
                    return None
                if at >= n:
                    break
                at += 1
                continue
        read = number(at)
        if read is None:
            return []
        end, at = read
        at = spaces(at)
        if at < n and spec[at] != ",":
            return []
        if suffix:
            start = size - end if end < size else 0
            end = size - 1
        end = size if end >= size else end + 1
        if start < end:
            ranges.append((start, end))
            total += end - start
        elif start == 0:
            return None
        if at >= n:
            break
        at += 1
    if not ranges:
        return []
    return None if total > size else ranges


def _http_time(text: str) -> int:
    """A date as nginx's ngx_http_parse_time reads one (the three HTTP date forms), as Unix
    time; -1 when it is none."""
    try:
        parsed = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return -1
    if parsed.tzinfo is None:
        return -1
    return int(parsed.timestamp())


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """nginx's ngx_http_test_if_match: `*`, or `etag` in the header's list; `weak` (for
    If-None-Match): W/ prefixes ignored on either side."""
    if header == "*":
        return True
    if weak and etag.startswith("W/"):
        etag = etag[2:]
    at, end = 0, len(header)
    while at < end:
        if weak and header.startswith("W/", at):
            at += 2
        if len(etag) > end - at:
            return False
        if header.startswith(etag, at):
            at += len(etag)
            while at < end and header[at] in " \t":
                at += 1
            if at == end or header[at] == ",":
                return True
        while at < end and header[at] != ",":
            at += 1
        while at < end and header[at] in " \t,":
            at += 1
    return False


def nginx_path(target: str) -> str | None:
    """The path nginx serves for a request target (ngx_http_parse_complex_uri, with
    merge_slashes on): the query and a fragment cut off, %XX decoded, runs of slashes
    merged, `.` and `..` segments resolved. None where nginx answers 400: a bad %
    escape, a NUL, `..` above the root, a target that is no path."""
    if not target.startswith("/"):
        lowered = target[:8].lower()
        if not lowered.startswith(("http://", "https://")):
            return None
        rest = target[target.index("//") + 2 :]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    for cut in ("?", "#"):
        target = target.split(cut, 1)[0]
    raw = target.encode("latin-1", "replace")
    decoded = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # %
            pair = raw[i + 1 : i + 3]
            if len(pair) < 2 or not all(c in b"0123456789abcdefABCDEF" for c in pair):
                return None
            byte = int(pair, 16)
            i += 3
        else:
            i += 1
        if byte == 0:
            return None
        decoded.append(byte)
    segments: list[bytes] = []
    parts = bytes(decoded).split(b"/")
    for index, part in enumerate(parts[1:], start=1):
        last = index == len(parts) - 1
        if part in (b"", b"."):
            if last:
                segments.append(b"")
            continue
        if part == b"..":
            if not segments:
                return None
            segments.pop()
            if last:
                segments.append(b"")
            continue
        segments.append(part)
    path = b"/" + b"/".join(segments)
    return path.decode("latin-1")
