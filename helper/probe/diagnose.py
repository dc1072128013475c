"""One line a person understands, from a failure and the operation that failed.

    "reset right after the TLS ClientHello: SNI-based DPI"
    "DNS answer is a private address: DNS poisoning"
    "transfer froze after 16 KB"

The phrase is derived from (failure, op) and what the route does (a route that splits the
ClientHello and is still reset faces a DPI that reassembles it); never from message text.
"""

from __future__ import annotations

from transports import Failure, Op

from .result import ProbeResult, TargetResult

__all__ = ["diagnose", "phrase"]

_AT_TLS = {
    Failure.CONNECTION_RESET: "reset right after the TLS ClientHello: SNI-based DPI",
    Failure.EOF: "closed right after the TLS ClientHello: SNI-based DPI",
    Failure.TIMEOUT: "silence after the TLS ClientHello: dropped by DPI (or an allow-list)",
}
_SPLIT_STILL_BLOCKED = {
    Failure.CONNECTION_RESET: "reset even with the ClientHello split: the DPI reassembles it",
    Failure.EOF: "closed even with the ClientHello split: the DPI reassembles it",
    Failure.TIMEOUT: "silence even with the ClientHello split: the DPI reassembles it "
    "(or an allow-list)",
}
_BY_FAILURE = {
    Failure.DNS_NXDOMAIN: "the resolver says the name does not exist: DNS blocking",
    Failure.DNS_BOGON: "DNS answer is a private address: DNS poisoning",
    Failure.DNS_SPOOFED: "DNS answer differs from encrypted DNS: DNS poisoning",
    Failure.DNS_TIMEOUT: "no answer from the resolver",
    Failure.DNS_SERVFAIL: "the resolver fails for this name",
    Failure.DNS_NO_ANSWER: "the resolver has no address for this name",
    Failure.CONNECTION_REFUSED: "connection refused (by the server, or a middlebox resetting it)",
    Failure.HOST_UNREACHABLE: "no route to the address",
    Failure.NETWORK_UNREACHABLE: "no route to that network (no IPv6 here?)",
    Failure.SSL_INVALID_HOSTNAME: "certificate for another name: a block page or interception",
    Failure.SSL_UNKNOWN_AUTHORITY: "certificate from an unknown authority: TLS interception",
    Failure.SSL_INVALID_CERTIFICATE: "invalid certificate (expired? wrong clock?) or interception",
    Failure.SSL_FAILED_HANDSHAKE: "TLS handshake failed: not the service's server answering",
    Failure.HTTP_BLOCKPAGE: "a block page instead of the service",
    Failure.PROXY_AUTH_FAILED: "the upstream proxy rejected the login",
    Failure.PROXY_REFUSED: "the upstream proxy refused the request",
    Failure.PROXY_PROTOCOL_ERROR: "the upstream proxy does not speak the expected protocol",
    Failure.PT_NOT_INSTALLED: "the pluggable transport's program is not installed",
    Failure.PT_FAILED: "the pluggable transport's program failed or exited",
}
_BY_FAILURE_AND_OP = {
    (
        Failure.TIMEOUT,
        Op.CONNECT,
    ): "no answer to the connection attempt: the address is black-holed",
    (Failure.TIMEOUT, Op.PROXY_HANDSHAKE): "the upstream proxy does not answer",
    (Failure.TIMEOUT, Op.READ): "silence after connecting: traffic is dropped",
    (Failure.TIMEOUT, Op.HTTP_ROUND_TRIP): "no answer to the request: traffic is dropped",
    (Failure.CONNECTION_RESET, Op.CONNECT): "connection reset while connecting",
    (Failure.CONNECTION_RESET, Op.READ): "reset during the exchange",
    (Failure.CONNECTION_RESET, Op.HTTP_ROUND_TRIP): "reset after the request: DPI on the request",
    (Failure.EOF, Op.HTTP_ROUND_TRIP): "closed without an answer to the request",
    (Failure.EOF, Op.PROXY_HANDSHAKE): "the upstream proxy closed the connection",
}


def _kb(n: float) -> str:
    return f"{n / 1000:.0f} KB" if n >= 1000 else f"{n:.0f} bytes"


def phrase(target: TargetResult, splits_client_hello: bool = False) -> str:
    """The diagnosis for one failed target (empty when it worked)."""
    failure, op = target.failure, target.op
    if target.ok or failure is None or op is None:
        return ""
    if failure is Failure.STALLED:
        return f"transfer froze after {_kb(target.received)}"
    if failure is Failure.THROTTLED:
        rate = f"{target.rate_kbps:.0f} KB/s" if target.rate_kbps is not None else "a crawl"
        return f"throttled to {rate}"
    if op is Op.TLS_HANDSHAKE and failure in _AT_TLS:
        return (_SPLIT_STILL_BLOCKED if splits_client_hello else _AT_TLS)[failure]
    if (failure, op) in _BY_FAILURE_AND_OP:
        return _BY_FAILURE_AND_OP[(failure, op)]
    if failure in _BY_FAILURE:
        return _BY_FAILURE[failure]
    return f"{failure.value} during {op.value}"


def diagnose(result: ProbeResult, splits_client_hello: bool = False) -> str:
    """The diagnosis of a service through a route: what its first failing target says, and
    where it failed if the service has several targets."""
    failed = result.failed
    if failed is None:
        return ""
    text = phrase(failed, splits_client_hello)
    return f"{text} ({failed.target})" if len(result.targets) > 1 else text
