"""The words for failures: the long diagnosis and the short form the terminal UI's cells
show come from one table, so every failure has both and they say the same thing."""

from __future__ import annotations

import pytest

from helper.probe.diagnose import diagnose, phrase, short, short_for
from helper.probe.result import ProbeResult, TargetResult
from transports import Failure, Op


def failed(failure: Failure, op: Op, **kwargs) -> TargetResult:
    target = TargetResult("tls://web.telegram.org:443", **kwargs)
    return target.fail(failure, op, "detail")


@pytest.mark.parametrize(
    ("failure", "op", "splits", "long", "brief"),
    [
        (Failure.CONNECTION_RESET, Op.TLS_HANDSHAKE, False,
         "reset right after the TLS ClientHello: SNI-based DPI", "reset after ClientHello"),
        (Failure.CONNECTION_RESET, Op.TLS_HANDSHAKE, True,
         "reset even with the ClientHello split: the DPI reassembles it", "reset, split or not"),
        (Failure.TIMEOUT, Op.TLS_HANDSHAKE, False,
         "silence after the TLS ClientHello: dropped by DPI (or an allow-list)",
         "dropped after ClientHello"),
        (Failure.DNS_BOGON, Op.RESOLVE, False,
         "DNS answer is a private address: DNS poisoning", "DNS poisoned"),
        (Failure.DNS_SPOOFED, Op.RESOLVE, False,
         "DNS answer differs from encrypted DNS: DNS poisoning", "DNS poisoned"),
        (Failure.DNS_NXDOMAIN, Op.RESOLVE, False,
         "the resolver says the name does not exist: DNS blocking", "DNS: no such name"),
        (Failure.TIMEOUT, Op.CONNECT, False,
         "no answer to the connection attempt: the address is black-holed", "black-holed"),
        (Failure.PROXY_AUTH_FAILED, Op.PROXY_HANDSHAKE, False,
         "the upstream proxy rejected the login", "proxy login rejected"),
        (Failure.HTTP_BLOCKPAGE, Op.HTTP_ROUND_TRIP, False,
         "a block page instead of the service", "block page"),
        (Failure.UNKNOWN, Op.WRITE, False, "unknown_failure during write", "unknown_failure"),
    ],
)  # fmt: skip
def test_long_and_short_words(
    failure: Failure, op: Op, splits: bool, long: str, brief: str
) -> None:
    target = failed(failure, op)
    assert phrase(target, splits) == long
    assert short_for(target, splits) == brief
    assert short(failure, op, splits_client_hello=splits) == brief


def test_measured_failures_carry_their_numbers() -> None:
    frozen = failed(Failure.STALLED, Op.READ, received=16384)
    assert phrase(frozen) == "transfer froze after 16 KB"
    assert short_for(frozen) == "frozen after 16 KB"
    slow = failed(Failure.THROTTLED, Op.READ, rate_kbps=14.2)
    assert phrase(slow) == "throttled to 14 KB/s"
    assert short_for(slow) == "throttled 14 KB/s"
    # Known without the probe's numbers (three failed client connections, or memory):
    assert short(Failure.STALLED, Op.READ) == "frozen"
    assert short(Failure.THROTTLED, Op.READ) == "throttled a crawl"


@pytest.mark.parametrize("failure", list(Failure))
@pytest.mark.parametrize("op", list(Op))
def test_every_failure_has_short_words_that_fit_a_cell(failure: Failure, op: Op) -> None:
    for splits in (False, True):
        words = short(failure, op, splits_client_hello=splits, rate_kbps=14.0, received=16384)
        assert words and "\n" not in words
        assert len(words) <= 25, words  # the matrix cell at 100 columns


def test_a_working_target_has_no_words() -> None:
    target = TargetResult("tcp://127.0.0.1:443")
    assert phrase(target) == short_for(target) == ""


def test_diagnose_names_the_failing_target_when_there_are_several() -> None:
    result = ProbeResult(
        "telegram",
        "direct",
        "direct",
        [
            TargetResult("tcp://149.154.167.51:443"),
            failed(Failure.CONNECTION_RESET, Op.TLS_HANDSHAKE),
        ],
    )
    assert diagnose(result) == (
        "reset right after the TLS ClientHello: SNI-based DPI (tls://web.telegram.org:443)"
    )


@pytest.mark.parametrize(
    ("failure", "op", "web", "long", "brief"),
    [
        (Failure.TIMEOUT, Op.MTPROTO_ROUND_TRIP, False,
         "no answer to MTProto's first request: traffic to the DC is dropped",
         "MTProto unanswered"),
        (Failure.CONNECTION_RESET, Op.MTPROTO_ROUND_TRIP, False,
         "reset after MTProto's first request: DPI on MTProto", "reset after MTProto"),
        (Failure.UNKNOWN, Op.MTPROTO_ROUND_TRIP, False,
         "the answer is not Telegram's MTProto: someone else answers", "not MTProto"),
        (Failure.TIMEOUT, Op.PROXY_HANDSHAKE, True,
         "no answer to the WebSocket upgrade at Telegram's web endpoint", "web endpoint silent"),
        (Failure.TIMEOUT, Op.PROXY_HANDSHAKE, False,
         "the upstream proxy does not answer", "proxy silent"),
        (Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, True,
         "Telegram's web endpoint refused the WebSocket", "no WebSocket"),
        (Failure.CONNECTION_RESET, Op.TLS_HANDSHAKE, True,
         "reset right after the TLS ClientHello: SNI-based DPI", "reset after ClientHello"),
    ],
)  # fmt: skip
def test_words_for_telegram(failure: Failure, op: Op, web: bool, long: str, brief: str) -> None:
    target = failed(failure, op)
    assert phrase(target, web_endpoint=web) == long
    assert short_for(target, web_endpoint=web) == brief
    assert short(failure, op, web_endpoint=web) == brief


def test_a_route_that_carries_none_of_the_targets_is_not_applicable() -> None:
    reason = "web.telegram.org is not an address of Telegram's data centres"
    skipped = ProbeResult(
        "whatsapp", "tgws", "tgws", [TargetResult("tls://web.telegram.org:443").skip(reason)]
    )
    assert not skipped.ok and not skipped.applicable
    assert (skipped.failure, skipped.op) == (Failure.NOT_APPLICABLE, Op.CONNECT)
    assert diagnose(skipped) == f"not applicable: {reason}"
    target = skipped.to_json()["targets"][0]
    assert (target["ok"], target["skipped"], target["detail"]) == (None, True, reason)
    # One target it carries decides alone.
    mixed = ProbeResult(
        "telegram",
        "tgws",
        "tgws",
        [TargetResult("tls://web.telegram.org:443").skip(reason), TargetResult("mtproto://x")],
    )
    assert mixed.ok and mixed.applicable and mixed.failure is None
    assert mixed.to_json()["targets"][1]["skipped"] is False
