"""`http://`: reach the destination through an upstream HTTP proxy's CONNECT method
(RFC 9110 §9.3.6), with Basic proxy authentication (RFC 7617) when given.

    CONNECT web.telegram.org:443 HTTP/1.1
    Host: web.telegram.org:443
    Proxy-Authorization: Basic YWxpY2U6c2VjcmV0        (only with credentials)

    HTTP/1.1 200 Connection established                (any 2xx: tunnel open)
"""

from __future__ import annotations

import base64

from .base import Dialer, DialError, Endpoint, Failure, Op, Stream
from .socks import encode_name
from .upstream import dial_through_proxy
from .wire import ProtocolError, format_hostport, parse_response_head

__all__ = ["MAX_RESPONSE_HEAD", "HttpConnectDialer"]

MAX_RESPONSE_HEAD = 16 * 1024

# Status codes and what they say about the route.
_STATUS_FAILURES = {
    # 407 is the standard answer; tinyproxy answers a wrong password with 401.
    401: (Failure.PROXY_AUTH_FAILED, Op.PROXY_HANDSHAKE),
    407: (Failure.PROXY_AUTH_FAILED, Op.PROXY_HANDSHAKE),
    504: (Failure.TIMEOUT, Op.CONNECT),
}


class HttpConnectDialer:
    def __init__(
        self,
        inner: Dialer,
        proxy: Endpoint,
        username: str | None = None,
        password: str | None = None,
        *,
        handshake_timeout: float = 10.0,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("HTTP proxy auth needs both a username and a password, or neither")
        if username is not None and ":" in username:
            raise ValueError("an HTTP Basic username cannot contain ':'")
        self.inner = inner
        self.proxy = proxy
        self._authorization: bytes | None = None
        if username is not None and password is not None:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._authorization = f"Proxy-Authorization: Basic {token}\r\n".encode("ascii")
        self.handshake_timeout = handshake_timeout

    async def dial(self, target: Endpoint) -> Stream:
        try:
            host = encode_name(target.host).decode("ascii")
        except ValueError as exc:
            raise DialError(Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, str(exc)) from None
        authority = format_hostport(host, target.port).encode("ascii")
        request = (
            b"CONNECT "
            + authority
            + b" HTTP/1.1\r\nHost: "
            + authority
            + b"\r\n"
            + (self._authorization or b"")
            + b"\r\n"
        )

        async def handshake(stream: Stream) -> None:
            stream.write(request)
            head = await stream.readuntil(b"\r\n\r\n", MAX_RESPONSE_HEAD)
            try:
                answer = parse_response_head(head)
            except ProtocolError:
                raise DialError(
                    Failure.PROXY_PROTOCOL_ERROR,
                    Op.PROXY_HANDSHAKE,
                    f"proxy {self.proxy} did not answer like an HTTP proxy",
                ) from None
            status = answer.status
            if 200 <= status < 300:
                return
            # The reason phrase is the proxy's text: keep it short and printable in our logs.
            reason = "".join(c for c in answer.reason if c.isprintable())[:80]
            failure, op = _STATUS_FAILURES.get(status, (Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE))
            text = f"proxy {self.proxy} answered {status} {reason}".rstrip()
            if status in (401, 407):
                text += (
                    " (wrong username or password)"
                    if self._authorization
                    else " (it requires a login)"
                )
            raise DialError(failure, op, text)

        return await dial_through_proxy(self.inner, self.proxy, handshake, self.handshake_timeout)

    def __repr__(self) -> str:
        return f"HttpConnectDialer({self.proxy}, auth={self._authorization is not None})"
