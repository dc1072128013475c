"""DNS resolvers (transports/dns.py) against a fake transport that answers like a server
(dnspython builds the answers): how answers become addresses or failures, the cache, shared
lookups, the bogon check. Real servers (unbound, dnsdist) are in tests/integration."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from transports.base import DialError, Failure, Op
from transports.dns import DnsResolver, is_bogon, read_answer


class FakeServer:
    """Answers queries from a table: name -> list of (type, address) records, an rcode, or
    a function of the query. Counts the queries it saw."""

    def __init__(self, table: dict, ttl: int = 300, delay: float = 0.0) -> None:
        self.table = table
        self.ttl = ttl
        self.delay = delay
        self.queries: list[tuple[str, str]] = []

    async def exchange(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if self.delay:
            await asyncio.sleep(self.delay)
        entry = self.table.get(name, dns.rcode.NXDOMAIN)
        if callable(entry):
            return entry(query)
        response = dns.message.make_response(query)
        if isinstance(entry, dns.rcode.Rcode):
            response.set_rcode(entry)
        else:
            values = [value for kind, value in entry if kind == rdtype]
            if values:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, values)
                )
        return response.to_wire()

    def __str__(self) -> str:
        return "fake"


def resolver(table: dict, **kwargs) -> tuple[DnsResolver, FakeServer]:
    server = FakeServer(table, **{k: kwargs.pop(k) for k in ("ttl", "delay") if k in kwargs})
    return DnsResolver(server, **kwargs), server


TELEGRAM = {"web.telegram.org": [("A", "149.154.167.99"), ("AAAA", "2001:67c:4e8:f004::9")]}


async def test_asks_a_and_aaaa_and_returns_ipv4_first() -> None:
    res, server = resolver(TELEGRAM)
    assert await res.resolve("web.telegram.org") == [
        ip_address("149.154.167.99"),
        ip_address("2001:67c:4e8:f004::9"),
    ]
    assert sorted(server.queries) == [("web.telegram.org", "A"), ("web.telegram.org", "AAAA")]


async def test_one_family_is_enough() -> None:
    res, _ = resolver({"v4.example.org": [("A", "93.184.215.14")]})
    assert await res.resolve("v4.example.org") == [ip_address("93.184.215.14")]


@pytest.mark.parametrize(
    ("entry", "failure"),
    [
        pytest.param(dns.rcode.NXDOMAIN, Failure.DNS_NXDOMAIN, id="nxdomain"),
        pytest.param(dns.rcode.SERVFAIL, Failure.DNS_SERVFAIL, id="servfail"),
        pytest.param(dns.rcode.REFUSED, Failure.DNS_SERVFAIL, id="refused"),
        pytest.param([], Failure.DNS_NO_ANSWER, id="no-records"),
    ],
)
async def test_failures(entry, failure: Failure) -> None:
    res, _ = resolver({"blocked.example.org": entry})
    with pytest.raises(DialError) as err:
        await res.resolve("blocked.example.org")
    assert (err.value.failure, err.value.op) == (failure, Op.RESOLVE)
    assert "blocked.example.org" in err.value.detail


async def test_cname_chain_is_followed() -> None:
    def answer(query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        name = query.question[0].name
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "edge.cdn.example."))
        if query.question[0].rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text("edge.cdn.example.", 30, "IN", "A", "93.184.215.14")
            )
        return response.to_wire()

    res, _ = resolver({"web.whatsapp.com": answer})
    assert await res.resolve("web.whatsapp.com") == [ip_address("93.184.215.14")]


async def test_answer_to_another_question_is_refused() -> None:
    def other(query: dns.message.Message) -> bytes:
        return dns.message.make_response(dns.message.make_query("evil.example", "A")).to_wire()

    res, _ = resolver({"t.me": other})
    with pytest.raises(DialError, match="answer to another question") as err:
        await res.resolve("t.me")
    assert err.value.failure is Failure.UNKNOWN


async def test_garbage_answer_is_a_dial_error() -> None:
    res, _ = resolver({"t.me": lambda query: query.to_wire()[:2] + b"\x81\x80garbage"})
    with pytest.raises(DialError, match="malformed answer"):
        await res.resolve("t.me")


async def test_timeout() -> None:
    res, _ = resolver(TELEGRAM, delay=1.0, timeout=0.05)
    with pytest.raises(DialError) as err:
        await res.resolve("web.telegram.org")
    assert err.value.failure is Failure.DNS_TIMEOUT
    assert err.value.detail == "web.telegram.org: no answer from fake"


async def test_transport_errors_are_translated() -> None:
    class Refusing:
        async def exchange(self, wire: bytes) -> bytes:
            raise ConnectionRefusedError(111, "Connection refused")

        def __str__(self) -> str:
            return "tcp 192.0.2.53:53"

    with pytest.raises(DialError) as err:
        await DnsResolver(Refusing()).resolve("t.me")
    assert (err.value.failure, err.value.op) == (Failure.CONNECTION_REFUSED, Op.RESOLVE)
    assert err.value.detail.startswith("tcp 192.0.2.53:53: ")


@pytest.mark.parametrize("name", ["", "a..b", "x" * 64 + ".example", "bad\x00name.example"])
async def test_invalid_names(name: str) -> None:
    res, server = resolver({})
    with pytest.raises(DialError) as err:
        await res.resolve(name)
    assert err.value.op is Op.RESOLVE
    assert server.queries == []


# --- cache --------------------------------------------------------------------------------


async def test_answers_are_cached_and_names_normalised() -> None:
    res, server = resolver(TELEGRAM)
    await res.resolve("web.telegram.org")
    assert await res.resolve("WEB.Telegram.org.") == [
        ip_address("149.154.167.99"),
        ip_address("2001:67c:4e8:f004::9"),
    ]
    assert len(server.queries) == 2  # one A, one AAAA: the second lookup was cached


async def test_ttl_is_honoured_with_a_floor(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("transports.dns.time.monotonic", lambda: now[0])
    res, server = resolver(TELEGRAM, ttl=5)  # below the 30 s floor
    await res.resolve("web.telegram.org")
    now[0] += 29
    await res.resolve("web.telegram.org")
    assert len(server.queries) == 2
    now[0] += 2  # 31 s: expired
    await res.resolve("web.telegram.org")
    assert len(server.queries) == 4


async def test_ttl_is_honoured_with_a_ceiling(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("transports.dns.time.monotonic", lambda: now[0])
    res, server = resolver(TELEGRAM, ttl=86400)
    await res.resolve("web.telegram.org")
    now[0] += 3599
    await res.resolve("web.telegram.org")
    assert len(server.queries) == 2
    now[0] += 2
    await res.resolve("web.telegram.org")
    assert len(server.queries) == 4


async def test_nxdomain_is_cached_briefly_servfail_not_at_all(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("transports.dns.time.monotonic", lambda: now[0])
    res, server = resolver(
        {"gone.example.org": dns.rcode.NXDOMAIN, "sick.example.org": dns.rcode.SERVFAIL}
    )
    for _ in range(2):
        with pytest.raises(DialError, match="no such name"):
            await res.resolve("gone.example.org")
    assert len(server.queries) == 2
    now[0] += 11
    with pytest.raises(DialError):
        await res.resolve("gone.example.org")
    assert len(server.queries) == 4
    for _ in range(2):
        with pytest.raises(DialError):
            await res.resolve("sick.example.org")
    assert len(server.queries) == 8


async def test_concurrent_lookups_of_one_name_share_the_queries() -> None:
    res, server = resolver(TELEGRAM, delay=0.05)
    results = await asyncio.gather(*(res.resolve("web.telegram.org") for _ in range(10)))
    assert all(r == results[0] for r in results)
    assert len(server.queries) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    res, _ = resolver(TELEGRAM, delay=0.05)
    first = asyncio.ensure_future(res.resolve("web.telegram.org"))
    second = asyncio.ensure_future(res.resolve("web.telegram.org"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert len(await second) == 2


# --- bogons -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.10.34.35", "192.168.1.1", "172.16.0.1", "100.64.0.1", "169.254.1.1",
        "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.2.1", "::1", "::", "fe80::1",
        "fd00::1", "ff02::1", "::ffff:127.0.0.1", "2001:db8::1",
    ],
)  # fmt: skip
def test_bogons(address: str) -> None:
    assert is_bogon(ip_address(address))


@pytest.mark.parametrize("address", ["149.154.167.99", "1.1.1.1", "2001:67c:4e8:f004::9"])
def test_public_addresses_are_not_bogons(address: str) -> None:
    assert not is_bogon(ip_address(address))


async def test_private_answer_for_a_public_name_is_tampering() -> None:
    # What Russian ISPs' resolvers have answered for blocked names: a private address.
    res, _ = resolver({"web.telegram.org": [("A", "10.10.34.35"), ("A", "149.154.167.99")]})
    with pytest.raises(DialError) as err:
        await res.resolve("web.telegram.org")
    assert (err.value.failure, err.value.op) == (Failure.DNS_BOGON, Op.RESOLVE)
    assert "10.10.34.35" in err.value.detail and "149.154.167.99" not in err.value.detail


@pytest.mark.parametrize("name", ["router.lan", "nas.local", "printer", "box.home.arpa", "a.test"])
async def test_private_answers_for_local_names_are_normal(name: str) -> None:
    res, _ = resolver({name: [("A", "192.168.1.10")]})
    assert await res.resolve(name) == [ip_address("192.168.1.10")]


async def test_allow_private_turns_the_check_off() -> None:
    """The lab answers its fake public names with 127.x addresses."""
    res, _ = resolver({"web.telegram.org": [("A", "127.0.0.5")]}, allow_private=True)
    assert await res.resolve("web.telegram.org") == [ip_address("127.0.0.5")]


async def test_public_ranges_are_exempt_and_other_bogons_still_flagged() -> None:
    """The lab's network stands for the internet; its lying resolver's 10.10.34.34 must
    still read as tampering."""
    lab = (ip_network("127.77.0.0/16"),)
    res, _ = resolver(
        {"web.telegram.org": [("A", "127.77.1.10")], "g.whatsapp.net": [("A", "10.10.34.34")]},
        public=lab,
    )
    assert await res.resolve("web.telegram.org") == [ip_address("127.77.1.10")]
    with pytest.raises(DialError) as err:
        await res.resolve("g.whatsapp.net")
    assert err.value.failure is Failure.DNS_BOGON


# --- read_answer --------------------------------------------------------------------------


def test_read_answer_returns_the_ttl() -> None:
    query = dns.message.make_query("t.me", "A")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("t.me.", 123, "IN", "A", "149.154.167.99"))
    assert read_answer(query, response.to_wire(), "fake") == ([ip_address("149.154.167.99")], 123.0)


def test_read_answer_refuses_a_query_echoed_back() -> None:
    query = dns.message.make_query("t.me", "A")
    assert not query.flags & dns.flags.QR
    with pytest.raises(DialError, match="answer to another question"):
        read_answer(query, query.to_wire(), "fake")


class _Lost:
    """A probe's measure of the loop's lost time (transports.deadlines.machine), set by the
    test."""

    patience = 100.0  # (a wide margin: the test's loop may be slow too)

    def __init__(self) -> None:
        self.now = 0.0

    def lost(self) -> float:
        return self.now


async def test_within_a_probe_the_lookups_timeout_grows_with_the_time_the_loop_lost() -> None:
    from transports.deadlines import machine

    res, _ = resolver(TELEGRAM, delay=0.08, timeout=0.05)
    source = _Lost()
    asyncio.get_running_loop().call_later(0.01, lambda: setattr(source, "now", 1.0))
    token = machine.set(source)
    try:
        assert await res.resolve("web.telegram.org")  # 80 ms: within 50 ms + 1 s lost
    finally:
        machine.reset(token)
    # The same lookup outside a probe (or with nothing lost) times out as configured.
    slow, _ = resolver(TELEGRAM, delay=0.08, timeout=0.05)
    with pytest.raises(DialError) as error:
        await slow.resolve("web.telegram.org")
    assert error.value.failure is Failure.DNS_TIMEOUT


async def test_modules_are_imported_off_the_loop_once_and_errors_reach_the_caller() -> None:
    from transports.dns import _modules

    await _modules(("dns.message",))  # imported already: at once
    with pytest.raises(ImportError):
        await _modules(("detour_test_no_such_module",))
    with pytest.raises(ImportError):  # the same failure for a later caller
        await _modules(("detour_test_no_such_module",))
