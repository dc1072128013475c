"""What upstream-proxy dialers (socks, http_connect) share: reach the proxy through the inner
dialer, run the handshake under a timeout, and translate whatever goes wrong into a DialError
that names the proxy (never its credentials)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .base import Dialer, DialError, Endpoint, Failure, Op, Stream, classify_os_error, dial_phase
from .guard import DestinationRefused

__all__ = ["dial_through_proxy"]

# A child program below this proxy layer failed: a pluggable transport's client
# (transports/pt) or a proxy core (transports/core).
_ABOUT_A_PROGRAM = (
    Failure.PT_NOT_INSTALLED,
    Failure.PT_FAILED,
    Failure.CORE_NOT_INSTALLED,
    Failure.CORE_FAILED,
)


async def dial_through_proxy(
    inner: Dialer,
    proxy: Endpoint,
    handshake: Callable[[Stream], Awaitable[None]],
    timeout: float,
    label: str | None = None,
) -> Stream:
    """Dial `proxy` with `inner`, then run `handshake` on the stream within `timeout`.

    Returns the stream positioned at the first byte from the destination. `label` names the
    proxy in messages (default "proxy HOST:PORT").
    """
    who = label or f"proxy {proxy}"
    try:
        stream = await inner.dial(proxy)
    except DialError as exc:
        if exc.failure in _ABOUT_A_PROGRAM or isinstance(exc, DestinationRefused):
            raise  # about a program on this machine, or a proxy detour may not dial
        raise DialError(exc.failure, exc.op, f"{who}: {exc.detail}") from None
    dial_phase.set(Op.PROXY_HANDSHAKE)
    try:
        async with asyncio.timeout(timeout):
            await handshake(stream)
    except DialError:
        stream.abort()
        raise
    except TimeoutError:
        stream.abort()
        raise DialError(
            Failure.TIMEOUT, Op.PROXY_HANDSHAKE, f"{who} did not answer within {timeout:g}s"
        ) from None
    except asyncio.IncompleteReadError:
        stream.abort()
        raise DialError(
            Failure.EOF, Op.PROXY_HANDSHAKE, f"{who} closed the connection mid-handshake"
        ) from None
    except asyncio.LimitOverrunError:
        stream.abort()
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, f"{who}: reply too long"
        ) from None
    except OSError as exc:
        stream.abort()
        raise classify_os_error(exc, Op.PROXY_HANDSHAKE, f"{who}: {exc}") from None
    except BaseException:
        stream.abort()
        raise
    return stream
