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
