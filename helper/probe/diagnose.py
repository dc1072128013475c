"""What a failure means, in words: a line a person understands, from a failure and the
operation that failed, and a short form of it for places with little room (the terminal UI's
matrix cells).

    "reset right after the TLS ClientHello: SNI-based DPI"    "reset after ClientHello"
    "DNS answer is a private address: DNS poisoning"          "DNS poisoned"
    "transfer froze after 16 KB"                              "frozen after 16 KB"

Both are derived from (failure, op) and what the route does (a route that splits the
ClientHello and is still reset faces a DPI that reassembles it; a `tgws` route's handshakes
are with Telegram's web endpoint); never from message text.
Each entry below holds the long and the short form together, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple

from transports import Failure, Op

from .result import ProbeResult, TargetResult

__all__ = ["diagnose", "phrase", "short", "short_for"]


class _Words(NamedTuple):
    long: str
    short: str


_AT_TLS = {
    Failure.CONNECTION_RESET: _Words(
        "reset right after the TLS ClientHello: SNI-based DPI", "reset after ClientHello"
    ),
    Failure.EOF: _Words(
        "closed right after the TLS ClientHello: SNI-based DPI", "closed after ClientHello"
    ),
    Failure.TIMEOUT: _Words(
        "silence after the TLS ClientHello: dropped by DPI (or an allow-list)",
        "dropped after ClientHello",
    ),
}
_SPLIT_STILL_BLOCKED = {
    Failure.CONNECTION_RESET: _Words(
        "reset even with the ClientHello split: the DPI reassembles it", "reset, split or not"
    ),
    Failure.EOF: _Words(
        "closed even with the ClientHello split: the DPI reassembles it", "closed, split or not"
    ),
    Failure.TIMEOUT: _Words(
        "silence even with the ClientHello split: the DPI reassembles it (or an allow-list)",
        "dropped, split or not",
    ),
}
_BY_FAILURE = {
    Failure.DNS_NXDOMAIN: _Words(
        "the resolver says the name does not exist: DNS blocking", "DNS: no such name"
    ),
    Failure.DNS_BOGON: _Words("DNS answer is a private address: DNS poisoning", "DNS poisoned"),
    Failure.DNS_SPOOFED: _Words(
        "DNS answer differs from encrypted DNS: DNS poisoning", "DNS poisoned"
    ),
    Failure.DNS_TIMEOUT: _Words("no answer from the resolver", "DNS timeout"),
    Failure.DNS_SERVFAIL: _Words("the resolver fails for this name", "DNS fails"),
    Failure.DNS_NO_ANSWER: _Words("the resolver has no address for this name", "DNS: no address"),
    Failure.CONNECTION_REFUSED: _Words(
        "connection refused (by the server, or a middlebox resetting it)", "refused"
    ),
    Failure.HOST_UNREACHABLE: _Words("no route to the address", "unreachable"),
    Failure.NETWORK_UNREACHABLE: _Words(
        "no route to that network (no IPv6 here?)", "network unreachable"
    ),
    Failure.SSL_INVALID_HOSTNAME: _Words(
        "certificate for another name: a block page or interception", "wrong certificate"
    ),
    Failure.SSL_UNKNOWN_AUTHORITY: _Words(
        "certificate from an unknown authority: TLS interception", "TLS intercepted"
    ),
    Failure.SSL_INVALID_CERTIFICATE: _Words(
        "invalid certificate (expired? wrong clock?) or interception", "bad certificate"
    ),
    Failure.SSL_FAILED_HANDSHAKE: _Words(
        "TLS handshake failed: not the service's server answering", "TLS failed"
    ),
    Failure.HTTP_BLOCKPAGE: _Words("a block page instead of the service", "block page"),
    Failure.PROXY_AUTH_FAILED: _Words(
        "the upstream proxy rejected the login", "proxy login rejected"
    ),
    Failure.PROXY_REFUSED: _Words("the upstream proxy refused the request", "proxy refused"),
    Failure.PROXY_PROTOCOL_ERROR: _Words(
        "the upstream proxy does not speak the expected protocol", "not that kind of proxy"
    ),
    Failure.PT_NOT_INSTALLED: _Words(
        "the pluggable transport's program is not installed", "PT not installed"
    ),
    Failure.PT_FAILED: _Words("the pluggable transport's program failed or exited", "PT failed"),
    Failure.CORE_NOT_INSTALLED: _Words(
        "no proxy core (xray, sing-box, v2ray) is installed for this link", "no core"
    ),
    Failure.CORE_FAILED: _Words(
        "the proxy core cannot do this link, rejected its config, or exited", "core failed"
    ),
    Failure.NOT_APPLICABLE: _Words(
        "not applicable: the route cannot carry these destinations", "not applicable"
    ),
}
_BY_FAILURE_AND_OP = {
    # A subscription's node whose server name resolves into the user's own network
    # (helper/subscriptions/guard.py): refused before anything is sent to it.
    (Failure.DNS_BOGON, Op.CONNECT): _Words(
        "the node's server name resolves to a private, loopback or link-local address: "
        "refused (allow_private = true allows it)",
        "private node refused",
    ),
    (Failure.TIMEOUT, Op.CONNECT): _Words(
        "no answer to the connection attempt: the address is black-holed", "black-holed"
    ),
    (Failure.TIMEOUT, Op.PROXY_HANDSHAKE): _Words(
        "the upstream proxy does not answer", "proxy silent"
    ),
    (Failure.TIMEOUT, Op.READ): _Words(
        "silence after connecting: traffic is dropped", "silent after connect"
    ),
    (Failure.TIMEOUT, Op.HTTP_ROUND_TRIP): _Words(
        "no answer to the request: traffic is dropped", "no answer to request"
    ),
    (Failure.CONNECTION_RESET, Op.CONNECT): _Words(
        "connection reset while connecting", "reset at connect"
    ),
    (Failure.CONNECTION_RESET, Op.READ): _Words("reset during the exchange", "reset mid-transfer"),
    (Failure.CONNECTION_RESET, Op.HTTP_ROUND_TRIP): _Words(
        "reset after the request: DPI on the request", "reset after request"
    ),
    (Failure.EOF, Op.HTTP_ROUND_TRIP): _Words(
        "closed without an answer to the request", "closed, no answer"
    ),
    (Failure.EOF, Op.PROXY_HANDSHAKE): _Words(
        "the upstream proxy closed the connection", "proxy closed"
    ),
    (Failure.TIMEOUT, Op.MTPROTO_ROUND_TRIP): _Words(
        "no answer to MTProto's first request: traffic to the DC is dropped", "MTProto unanswered"
    ),
    (Failure.CONNECTION_RESET, Op.MTPROTO_ROUND_TRIP): _Words(
        "reset after MTProto's first request: DPI on MTProto", "reset after MTProto"
    ),
    (Failure.EOF, Op.MTPROTO_ROUND_TRIP): _Words(
        "closed without an answer to MTProto's first request", "closed, no MTProto"
    ),
    (Failure.UNKNOWN, Op.MTPROTO_ROUND_TRIP): _Words(
        "the answer is not Telegram's MTProto: someone else answers", "not MTProto"
    ),
}
# A `tgws` route: its proxy handshake is the WebSocket upgrade at Telegram's web endpoint.
_AT_WEB_ENDPOINT = {
    Failure.TIMEOUT: _Words(
        "no answer to the WebSocket upgrade at Telegram's web endpoint", "web endpoint silent"
    ),
    Failure.EOF: _Words(
        "Telegram's web endpoint closed the connection at the WebSocket upgrade",
        "web endpoint closed",
    ),
    Failure.CONNECTION_RESET: _Words(
        "reset at the WebSocket upgrade to Telegram's web endpoint: DPI on the upgrade",
        "reset at upgrade",
    ),
    Failure.PROXY_REFUSED: _Words("Telegram's web endpoint refused the WebSocket", "no WebSocket"),
    Failure.PROXY_PROTOCOL_ERROR: _Words(
        "the web endpoint's answer to the WebSocket upgrade is wrong: not Telegram's?",
        "bad upgrade answer",
    ),
}


def _kb(n: float) -> str:
    return f"{n / 1000:.0f} KB" if n >= 1000 else f"{n:.0f} bytes"


def _words(
    failure: Failure,
    op: Op,
    splits_client_hello: bool,
    rate_kbps: float | None,
    received: int | None,
    web_endpoint: bool = False,
) -> _Words:
    if failure is Failure.STALLED:
        if received is None:  # known from a dial or memory, without the probe's byte count
            return _Words("transfer froze partway", "frozen")
        return _Words(f"transfer froze after {_kb(received)}", f"frozen after {_kb(received)}")
    if failure is Failure.THROTTLED:
        rate = f"{rate_kbps:.0f} KB/s" if rate_kbps is not None else "a crawl"
        return _Words(f"throttled to {rate}", f"throttled {rate}")
    if op is Op.TLS_HANDSHAKE and failure in _AT_TLS:
        return (_SPLIT_STILL_BLOCKED if splits_client_hello else _AT_TLS)[failure]
    if web_endpoint and op is Op.PROXY_HANDSHAKE and failure in _AT_WEB_ENDPOINT:
        return _AT_WEB_ENDPOINT[failure]
    if (failure, op) in _BY_FAILURE_AND_OP:
        return _BY_FAILURE_AND_OP[(failure, op)]
    if failure in _BY_FAILURE:
        return _BY_FAILURE[failure]
    return _Words(f"{failure.value} during {op.value}", failure.value)


def phrase(
    target: TargetResult, splits_client_hello: bool = False, *, web_endpoint: bool = False
) -> str:
    """The diagnosis for one failed target (empty when it worked)."""
    failure, op = target.failure, target.op
    if target.ok or failure is None or op is None:
        return ""
    text = _words(
        failure, op, splits_client_hello, target.rate_kbps, target.received, web_endpoint
    ).long
    if target.detail.startswith(MTPROXY):
        return target.detail  # it names the proxy and what its answer says (a wrong secret?)
    hop = second_hop(target.detail)
    return f"the relay's second hop {hop} failed: {text}" if hop else text


# How an `mtproxy:` route's failures at the MTProto proxy read (transports/mtproxy.py): their
# detail is the diagnosis.
MTPROXY = "MTProto proxy "


SECOND_HOP = "at the relay: second hop "  # how a relay's failure through its own chain reads


def second_hop(detail: str) -> str | None:
    """The second hop a relay named in its failure (helper/relay/server.py: a relay that
    reaches its destinations through another relay), or None."""
    if not detail.startswith(SECOND_HOP):
        return None
    hop = detail[len(SECOND_HOP) :].partition(": ")[0].strip()
    return hop or None


def diagnose(
    result: ProbeResult, splits_client_hello: bool = False, *, web_endpoint: bool = False
) -> str:
    """The diagnosis of a service through a route: what its first failing target says, and
    where it failed if the service has several targets."""
    if not result.applicable:
        return f"not applicable: {result.targets[0].skipped}"
    failed = result.failed
    if failed is None:
        return result.freeze_unsure  # "" for a pass without doubt
    text = phrase(failed, splits_client_hello, web_endpoint=web_endpoint)
    return f"{text} ({failed.target})" if len(result.targets) > 1 else text


def short(
    failure: Failure,
    op: Op,
    *,
    splits_client_hello: bool = False,
    rate_kbps: float | None = None,
    received: int | None = None,
    web_endpoint: bool = False,
) -> str:
    """The diagnosis in a few words ("reset after ClientHello", "throttled 14 KB/s"), for a
    failure known with or without the probe that found it (a dial, a remembered result)."""
    return _words(failure, op, splits_client_hello, rate_kbps, received, web_endpoint).short


def short_for(
    target: TargetResult, splits_client_hello: bool = False, *, web_endpoint: bool = False
) -> str:
    """The short diagnosis of one failed target (empty when it worked)."""
    if target.ok or target.failure is None or target.op is None:
        return ""
    return short(
        target.failure,
        target.op,
        splits_client_hello=splits_client_hello,
        rate_kbps=target.rate_kbps,
        received=target.received,
        web_endpoint=web_endpoint,
    )
