"""The strategy search as a state machine, fed outcomes event by event (no sockets): the plan
the direct verdict chooses, screening and confirming, the fake TTL search, early stop, a
winner shared between services, and one verdict per service when nothing works."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from helper.search.candidates import Candidate
from helper.search.search import Attempt, Outcome, Search, ServiceSearch

TARGETS = ["https://web.telegram.org/", "tls://t.me:443", "mtproto://149.154.167.51:443"]
NAMES = TARGETS[:2]
RESET = Outcome(False, "connection_reset", "tls_handshake")
BROKEN = Outcome(False, "ssl_failed_handshake", "tls_handshake")
OK = Outcome(True, latency_ms=40.0)
DPI = Outcome(False, "connection_reset", "tls_handshake")


def telegram(**kwargs) -> ServiceSearch:
    kwargs.setdefault("direct", DPI)
    return ServiceSearch("telegram", TARGETS, tls_targets=NAMES, **kwargs)


def drive(search: ServiceSearch, network: Callable[[Attempt], Outcome]) -> list[Attempt]:
    """Run `search` against a network model: attempt -> outcome."""
    made = []
    while (attempt := search.next()) is not None:
        made.append(attempt)
        search.record(attempt, network(attempt))
    assert search.done
    return made


def works_with(*chains: str) -> Callable[[Attempt], Outcome]:
    return lambda a: OK if a.candidate.chain in chains else RESET


def test_direct_works_nothing_to_search() -> None:
    search = telegram(direct=OK)
    assert search.done and search.next() is None
    assert search.winner is None and search.verdict == "direct works: nothing to search"


def test_records_first_screened_then_confirmed_then_stop() -> None:
    search = telegram()
    made = drive(search, works_with("tlsfrag:sni"))
    assert [(a.candidate.chain, a.target) for a in made] == [
        ("tlsfrag:sni", NAMES[0]),
        ("tlsfrag:sni", None),  # every target
    ]
    assert search.winner == Candidate("tlsfrag:sni", "tlsfrag")
    assert search.winner.route_name == "found-tlsfrag-sni"
    assert search.verdict == "works via found-tlsfrag-sni (tlsfrag:sni)"


def test_the_order_of_the_first_techniques_and_names_take_turns() -> None:
    search = telegram()
    made = drive(search, works_with("disorder:sni | tlsfrag:sni"))
    assert [(a.candidate.chain, a.target) for a in made] == [
        ("tlsfrag:sni", NAMES[0]),
        ("oob:sni | tlsfrag:sni", NAMES[1]),
        ("disorder:sni | tlsfrag:sni", NAMES[0]),
        ("disorder:sni | tlsfrag:sni", None),
    ]


def test_a_winner_that_fails_its_confirmation_is_not_taken() -> None:
    search = telegram()

    def flaky(attempt: Attempt) -> Outcome:
        if attempt.candidate.chain == "tlsfrag:sni":
            return OK if attempt.target else RESET  # passes one name, not every target
        return OK if attempt.candidate.technique == "oob" else RESET

    drive(search, flaky)
    assert search.winner is not None and search.winner.technique == "oob"


@pytest.mark.parametrize("right", [2, 3, 5, 9, 16])
def test_fake_ttl_is_found_by_halving(right: int) -> None:
    """Too low: the DPI reads the real hello (reset); too high: the decoy reaches the server
    (the handshake breaks)."""

    def hops(attempt: Attempt) -> Outcome:
        if attempt.candidate.technique != "fake":
            return RESET
        ttl = int(attempt.candidate.chain.split("ttl=")[1].split()[0])
        return RESET if ttl < right else (BROKEN if ttl > right else OK)

    search = telegram()
    made = drive(search, hops)
    fakes = [a for a in made if a.candidate.technique == "fake" and a.target]
    assert search.winner == Candidate(f"fake:ttl={right} | tlsfrag:sni", "fake", packets=True)
    assert len(fakes) <= 4  # log2(15)


def test_no_packet_layers_where_they_cannot_run() -> None:
    search = telegram(packets=False)
    made = drive(search, lambda a: RESET)
    assert not any(a.candidate.packets for a in made)
    assert search.verdict.endswith("packet-level tricks were not tried (Linux only)")


def test_nothing_works_one_verdict_and_a_bounded_search() -> None:
    search = telegram()
    made = drive(search, lambda a: RESET)
    assert search.winner is None
    assert len(made) <= 30
    assert len({a.candidate.chain for a in made}) == len(made)  # nothing tried twice
    assert search.verdict.startswith(
        "the network reads the server name however the ClientHello is cut"
    )
    assert "a route through a server is needed" in search.verdict


def test_mixed_failures_name_the_most_common() -> None:
    search = telegram(packets=False)
    drive(search, lambda a: BROKEN if a.candidate.chain.startswith("split") else RESET)
    assert "most often connection_reset during tls_handshake" in search.verdict


def test_attempts_are_capped() -> None:
    search = telegram(max_attempts=3)
    made = drive(search, lambda a: RESET)
    assert len(made) == 3 and "stopped after 3 attempts" in search.verdict


def test_blocked_addresses_need_no_client_hello_tricks() -> None:
    blocked = Outcome(False, "generic_timeout_error", "connect")
    search = telegram(direct=blocked)
    assert search.done and search.winner is None
    assert search.verdict.startswith("the service's addresses do not answer")
    # ... unless DNS could be the cause: another resolver is worth a try.
    doh = "resolve:doh=https://1.1.1.1/dns-query"
    search = telegram(direct=blocked, resolvers=[doh])
    made = drive(search, works_with(doh))
    assert [a.candidate.chain for a in made] == [doh, doh]
    assert search.winner is not None and search.winner.route_name == "found-doh"


def test_spoofed_dns_tries_resolvers_first() -> None:
    doh = "resolve:doh=https://1.1.1.1/dns-query"
    search = telegram(direct=Outcome(False, "dns_spoofed", "resolve"), resolvers=[doh])
    assert search.next().candidate.chain == doh  # type: ignore[union-attr]


def test_only_the_pending_attempt_can_be_recorded() -> None:
    search = telegram()
    attempt = search.next()
    assert attempt is not None and search.next() is None  # one at a time
    with pytest.raises(ValueError):
        search.record(Attempt("telegram", Candidate("split:1", "cut"), None), OK)


def test_a_winner_is_tried_first_for_the_other_services() -> None:
    signal = ServiceSearch("signal", ["tls://chat.signal.org:443"], direct=DPI)
    search = Search([telegram(), signal])
    network = works_with("oob:sni | tlsfrag:sni")
    rounds = []
    while not search.done:
        attempts = search.next_attempts()
        rounds.append([(a.service, a.candidate.chain) for a in attempts])
        for attempt in attempts:
            search.record(attempt, network(attempt))
    # telegram confirms oob before signal's own order reaches disorder; signal found it too
    assert search.services["telegram"].winner == search.services["signal"].winner
    assert rounds[0] == [("telegram", "tlsfrag:sni"), ("signal", "tlsfrag:sni")]


def test_ranking_by_success_then_time() -> None:
    search = telegram()
    fast = Outcome(True, latency_ms=10.0)
    slow = Outcome(True, latency_ms=90.0)
    a = search.next()
    assert a is not None
    search.record(a, slow)  # tlsfrag:sni screened
    b = search.next()
    assert b is not None and b.target is None
    search.record(b, RESET)  # ... not confirmed
    c = search.next()
    assert c is not None
    search.record(c, fast)
    assert [x.chain for x in search.ranked()] == [c.candidate.chain, a.candidate.chain]


def test_json_says_what_was_tried_and_what_won() -> None:
    search = telegram()
    drive(search, works_with("tlsfrag:sni"))
    data = search.to_json()
    assert data["winner"] == {"route": "found-tlsfrag-sni", "chain": "tlsfrag:sni"}
    assert data["tried"][0] == {
        "chain": "tlsfrag:sni",
        "technique": "tlsfrag",
        "stage": "screen",
        "target": NAMES[0],
        "ok": True,
        "failure": None,
        "op": None,
        "latency_ms": 40.0,
    }
