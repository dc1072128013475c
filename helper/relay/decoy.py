"""The relay's ordinary website: what everyone who is not a tunnel gets, identical whatever
the reason (another path, a wrong or revoked token, a browser, a prober), so nobody learns
that a relay listens here.

It claims to be a small static site on nginx (`decoy.server` names the Server field) and
answers as nginx would, down to the malformed requests: the same status line (always
HTTP/1.1), fields in nginx's order, nginx's error pages, nginx's limits (an 8 KiB request
line, 414 past it; 8 KiB header fields) and its timeouts (60 s for a request head, 75 s
idle between requests, then the connection closes without a word). The decisions are
stated once here; helper/http_server.py carries them out. Where the website still differs
from a stock nginx serving the same two pages is listed in docs/relay.md (the website).
"""

from __future__ import annotations

from transports.wire import REASONS

from ..http_server import Manner, Request, Response

__all__ = ["DECOY_HOME", "DECOY_MISSING", "manner", "page"]

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

HTML = "text/html; charset=utf-8"
HEAD_TIMEOUT = 60.0  # nginx's client_header_timeout
KEEP_ALIVE = 75.0  # nginx's keepalive_timeout
LINE_LIMIT = 8190  # nginx's large_client_header_buffers: 8 KiB for the request line ...
FIELD_LIMIT = 8190  # ... and for each header field
MAX_BODY = 1024 * 1024  # nginx's client_max_body_size

# nginx's own words for the statuses the website can answer with (its status lines and
# error pages say these, not always what the RFCs call them).
NGINX_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Not Allowed",
    413: "Request Entity Too Large",
    408: "Request Time-out",
    414: "Request-URI Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
# nginx's error page, CRLF and all.
ERROR_PAGE = (
    "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n"
    "<center><h1>{status}</h1></center>\r\n<hr><center>{server}</center>\r\n</body>\r\n</html>\r\n"
)


def manner(server: str) -> Manner:
    """How the website's server behaves (helper/http_server.py), as nginx does."""

    def error(status: int, message: str) -> Response:
        # A head too large is a 400 to nginx (its "Request Header Or Cookie Too Large").
        return error_page(400 if status == 431 else status, server)

    return Manner(
        keep_alive=KEEP_ALIVE,
        server=server,
        line_limit=LINE_LIMIT,
        field_limit=FIELD_LIMIT,
        lenient=True,
        error=error,
        answer_timeout=False,
    )


def error_page(status: int, server: str, *, close: bool = True) -> Response:
    reason = NGINX_REASONS.get(status) or REASONS.get(status, "Error")
    body = ERROR_PAGE.format(status=f"{status} {reason}", server=server).encode()
    return Response(status, body, HTML, reason=reason, close=close)


def page(request: Request, server: str) -> Response:
    """The website's answer to a request that is not a tunnel: the home page, or the page
    that says there is nothing here. A static site takes GET and HEAD only."""
    method = request.method
    if not all("A" <= c <= "Z" or c in "_-" for c in method):
        return error_page(400, server)  # nginx knows methods in capitals only
    length = request.header("content-length") or "0"
    if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
        return error_page(413, server)  # (not read: the connection ends after the answer)
    if method not in ("GET", "HEAD"):
        return error_page(405, server, close=method == "TRACE")
    if request.path in ("/", "/index.html"):
        return Response(200, DECOY_HOME, HTML)
    return Response(404, DECOY_MISSING, HTML)
