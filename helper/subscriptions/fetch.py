"""Fetching a subscription's list: one HTTPS GET through a route, redirects to other https://
URLs followed (a few), the body of a 200 answer read whole.

A list larger than the limit (MAX_FETCH, the same as the largest list read) fails with
"the list is too large" -- it is never cut short and read as a shorter list; so does an
answer that ends before the length it announced. Errors name the server's host, never the
URL's path or query (the subscription's key). Sans-IO where it can be: `read_answer` takes
the bytes of a whole answer. The GET itself is transports/https_get.py, shared with
Outline's dynamic keys."""

from __future__ import annotations

import ssl

from transports import Dialer
from transports.https_get import https_get
from transports.https_get import read_answer as _read_answer

from .formats import MAX_LIST, SubscriptionError

__all__ = ["MAX_FETCH", "fetch_list", "read_answer"]

MAX_FETCH = MAX_LIST


def too_large(limit: int) -> SubscriptionError:
    return SubscriptionError(
        f"the list is too large (more than {limit // 1024} KiB, the most detour reads); "
        "nothing of it was used"
    )


async def fetch_list(
    dialer: Dialer, url: str, tls: ssl.SSLContext | None, timeout: float, limit: int = MAX_FETCH
) -> bytes:
    """The body of `url`'s 200 answer. DialError for what the route or the server did
    (another route may do better); SubscriptionError for a list that is too large."""
    return await https_get(dialer, url, tls, timeout, limit, too_large=too_large)


def read_answer(
    data: bytes, limit: int = MAX_FETCH, host: str = "the server"
) -> tuple[int, str, bytes]:
    """(status, Location, body) of a whole HTTP/1.1 answer; the body whole or an error."""
    return _read_answer(data, limit, host, too_large)
