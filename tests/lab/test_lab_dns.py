"""The lab's resolver (helper/lab/dns.py) on loopback: honest answers from the host table and
every lying rule over UDP, TCP and DoH (GET and POST), with dnspython and aiohttp as the real
clients; truncation and the TCP retry, pipelining, framing errors, 0x20 case, rules replaced
while running, start/stop. Each rule test has a negative control: a name the rule does not
cover still gets its true answer.

No `dig` here: dnspython's query functions are the clients (dns.asyncquery.https needs httpx,
which detour does not depend on, so DoH goes through aiohttp).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import pytest
from aiohttp import web

from helper.lab.dns import DNS_MESSAGE, DnsRule, LabResolver
from helper.lab.dnsserver import DnsServer, doh_routes
from tests.support.origins import TestCA

NOERROR, NXDOMAIN, SERVFAIL = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL
TTL = 30
DROP_DELAY = 0.3  # how long the DoH server holds a dropped query before its 504

TABLE = {
    "web.telegram.org": ["127.77.1.1", "fd77::1"],
    "nottelegram.org": ["127.77.1.2", "fd77::2"],  # same ending, not under telegram.org
    "signal.org": ["127.77.1.3"],  # IPv4 only
    "many.lab": [f"127.77.3.{i}" for i in range(1, 61)],  # 60 A records: more than 512 bytes
    "huge.lab": [f"127.77.4.{i}" for i in range(1, 101)],  # 100: more than 1232 bytes
}
VIAS = ["udp", "tcp", "doh-get", "doh-post"]


class HttpStatus(Exception):
    """A DoH request got an HTTP status other than 200."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class DnsLab:
    resolver: LabResolver
    server: DnsServer
    doh_url: str
    session: aiohttp.ClientSession

    async def ask(
        self, via: str, name: str, rdtype: str = "A", *, timeout: float = 2.0
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        host, port = self.server.address
        if via == "udp":
            return await dns.asyncquery.udp(query, host, timeout, port=port)
        if via == "tcp":
            return await dns.asyncquery.tcp(query, host, timeout, port=port)
        query.id = 0  # RFC 8484 4.1: cache-friendly
        reply = await self.doh(via, query.to_wire(), timeout=timeout)
        assert reply.id == 0
        return reply

    async def doh(self, via: str, wire: bytes, *, timeout: float = 2.0) -> dns.message.Message:
        status, headers, body = await self.doh_request(via, wire, timeout=timeout)
        if status != 200:
            raise HttpStatus(status)
        assert headers["Content-Type"] == DNS_MESSAGE
        reply = dns.message.from_wire(body)
        # the smallest TTL; the resolver's TTL for replies without records; 0 for FORMERR
        ttls = [rrset.ttl for rrset in reply.answer]
        max_age = 0 if reply.rcode() == dns.rcode.FORMERR else min(ttls, default=TTL)
        assert headers["Cache-Control"] == f"max-age={max_age}"
        return reply

    async def doh_request(
        self, via: str, wire: bytes, *, timeout: float = 2.0
    ) -> tuple[int, dict[str, str], bytes]:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        if via == "doh-get":
            encoded = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
            request = self.session.get(
                self.doh_url, params={"dns": encoded}, timeout=client_timeout
            )
        else:
            headers = {"Content-Type": DNS_MESSAGE, "Accept": DNS_MESSAGE}
            request = self.session.post(
                self.doh_url, data=wire, headers=headers, timeout=client_timeout
            )
        async with request as response:
            return response.status, dict(response.headers), await response.read()


@pytest.fixture
async def dns_lab(test_ca: TestCA) -> AsyncIterator[DnsLab]:
    """The resolver on UDP+TCP and, behind TLS, on DoH; no rules until a test sets them."""
    resolver = LabResolver(TABLE, ttl=TTL)
    app = web.Application()
    app.add_routes(doh_routes(resolver, drop_delay=DROP_DELAY))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=test_ca.server_context("127.0.0.1"))
    try:
        await site.start()
        doh_url = f"https://127.0.0.1:{runner.addresses[0][1]}/dns-query"
        connector = aiohttp.TCPConnector(ssl=test_ca.client_context())
        async with (
            DnsServer(resolver, "127.0.0.1", 0) as server,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            yield DnsLab(resolver, server, doh_url, session)
    finally:
        await runner.cleanup()


def addresses(reply: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in reply.answer for rdata in rrset]


def outcome(reply: dns.message.Message) -> tuple[dns.rcode.Rcode, list[str]]:
    return reply.rcode(), addresses(reply)


# --- honest answers ------------------------------------------------------------------------

HONEST = [
    # name, type, rcode, addresses
    ("web.telegram.org", "A", NOERROR, ["127.77.1.1"]),
    ("web.telegram.org", "AAAA", NOERROR, ["fd77::1"]),
    ("signal.org", "AAAA", NOERROR, []),  # the name exists, without IPv6
    ("signal.org", "MX", NOERROR, []),  # other types: no records
    ("signal.org", "TXT", NOERROR, []),
    ("signal.org", "HTTPS", NOERROR, []),
    ("telegram.org", "A", NXDOMAIN, []),  # only web.telegram.org is in the table
    ("unknown.lab", "A", NXDOMAIN, []),
    ("unknown.lab", "MX", NXDOMAIN, []),
]


@pytest.mark.parametrize("via", VIAS)
async def test_honest_answers(dns_lab: DnsLab, via: str) -> None:
    for name, rdtype, rcode, expected in HONEST:
        reply = await dns_lab.ask(via, name, rdtype)
        assert outcome(reply) == (rcode, expected), (name, rdtype)
        assert reply.flags & dns.flags.RA
        assert all(rrset.ttl == TTL for rrset in reply.answer)


# --- lying rules ---------------------------------------------------------------------------

LIES = {
    # action: (rcode, A, AAAA) for every name under the rule's domain
    "nxdomain": (NXDOMAIN, [], []),
    "bogon": (NOERROR, ["10.10.34.34"], ["fd00::bad"]),
    "blockpage": (NOERROR, ["127.77.0.80"], []),
    "servfail": (SERVFAIL, [], []),
    "noanswer": (NOERROR, [], []),
}


async def check_controls(dns_lab: DnsLab, via: str) -> None:
    """Names the telegram.org rule does not cover keep their true answers."""
    assert outcome(await dns_lab.ask(via, "nottelegram.org")) == (NOERROR, ["127.77.1.2"])
    assert outcome(await dns_lab.ask(via, "nottelegram.org", "AAAA")) == (NOERROR, ["fd77::2"])
    assert outcome(await dns_lab.ask(via, "signal.org")) == (NOERROR, ["127.77.1.3"])


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("action", list(LIES))
async def test_rule(dns_lab: DnsLab, via: str, action: str) -> None:
    dns_lab.resolver.rules = [DnsRule("telegram.org", action)]
    rcode, v4, v6 = LIES[action]
    # in the table, the domain itself (not in the table), and any name under it
    for name in ("web.telegram.org", "telegram.org", "x.y.telegram.org"):
        assert outcome(await dns_lab.ask(via, name, "A")) == (rcode, v4), name
        assert outcome(await dns_lab.ask(via, name, "AAAA")) == (rcode, v6), name
        assert outcome(await dns_lab.ask(via, name, "MX")) == (rcode, []), name
    await check_controls(dns_lab, via)


@pytest.mark.parametrize("via", VIAS)
async def test_drop(dns_lab: DnsLab, via: str) -> None:
    dns_lab.resolver.rules = [DnsRule("telegram.org", "drop")]
    if via in ("udp", "tcp"):
        with pytest.raises(dns.exception.Timeout):
            await dns_lab.ask(via, "web.telegram.org", timeout=0.3)
    else:
        # held for DROP_DELAY, then 504 (a client with a shorter timeout: test_doh_drop_...)
        with pytest.raises(HttpStatus) as raised:
            await dns_lab.ask(via, "web.telegram.org")
        assert raised.value.status == 504
    await check_controls(dns_lab, via)


async def test_doh_drop_times_out_a_client_that_waits_less(dns_lab: DnsLab) -> None:
    dns_lab.resolver.rules = [DnsRule("telegram.org", "drop")]
    with pytest.raises(TimeoutError):
        await dns_lab.ask("doh-post", "web.telegram.org", timeout=DROP_DELAY / 3)


async def test_first_covering_rule_wins(dns_lab: DnsLab) -> None:
    dns_lab.resolver.rules = [
        DnsRule("web.telegram.org", "bogon"),
        DnsRule("telegram.org", "nxdomain"),
        DnsRule(".", "servfail"),  # every other name
    ]
    assert outcome(await dns_lab.ask("udp", "web.telegram.org")) == (NOERROR, ["10.10.34.34"])
    assert outcome(await dns_lab.ask("udp", "a.telegram.org")) == (NXDOMAIN, [])
    assert outcome(await dns_lab.ask("udp", "signal.org")) == (SERVFAIL, [])
    assert dns_lab.resolver.rule_for("A.Telegram.ORG") == DnsRule("telegram.org", "nxdomain")
    assert dns_lab.resolver.rule_for("nottelegram.org") == DnsRule(".", "servfail")


async def test_rules_replaced_while_running(dns_lab: DnsLab) -> None:
    assert outcome(await dns_lab.ask("udp", "web.telegram.org")) == (NOERROR, ["127.77.1.1"])
    dns_lab.resolver.rules = [DnsRule("telegram.org", "bogon")]
    assert outcome(await dns_lab.ask("udp", "web.telegram.org")) == (NOERROR, ["10.10.34.34"])
    dns_lab.resolver.rules = (DnsRule("telegram.org", "nxdomain"),)
    assert outcome(await dns_lab.ask("tcp", "web.telegram.org")) == (NXDOMAIN, [])
    dns_lab.resolver.rules = ()
    assert outcome(await dns_lab.ask("doh-get", "web.telegram.org")) == (NOERROR, ["127.77.1.1"])


async def test_custom_lie_addresses() -> None:
    resolver = LabResolver(
        {},
        [DnsRule("bogon.lab", "bogon"), DnsRule("blocked.lab", "blockpage")],
        bogon_v4="192.168.66.6",
        bogon_v6="fd66::6",
        blockpage_v4="127.77.9.9",
    )
    async with DnsServer(resolver, "127.0.0.1", 0) as server:
        host, port = server.address
        for name, rdtype, expected in [
            ("bogon.lab", "A", ["192.168.66.6"]),
            ("bogon.lab", "AAAA", ["fd66::6"]),
            ("x.blocked.lab", "A", ["127.77.9.9"]),
        ]:
            query = dns.message.make_query(name, rdtype)
            reply = await dns.asyncquery.udp(query, host, 2, port=port)
            assert outcome(reply) == (NOERROR, expected)


# --- names, sizes, TCP ---------------------------------------------------------------------


@pytest.mark.parametrize("via", VIAS)
async def test_0x20_case_is_kept(dns_lab: DnsLab, via: str) -> None:
    reply = await dns_lab.ask(via, "WeB.TeLeGrAm.OrG")
    assert reply.question[0].name.to_text() == "WeB.TeLeGrAm.OrG."
    assert reply.answer[0].name.to_text() == "WeB.TeLeGrAm.OrG."
    assert addresses(reply) == ["127.77.1.1"]
    dns_lab.resolver.rules = [DnsRule("Telegram.ORG", "nxdomain")]  # rules ignore case too
    assert (await dns_lab.ask(via, "WEB.TELEGRAM.ORG")).rcode() == NXDOMAIN


async def test_truncation_and_tcp_retry(dns_lab: DnsLab) -> None:
    host, port = dns_lab.server.address
    plain = dns.message.make_query("many.lab", "A")
    reply = await dns.asyncquery.udp(plain, host, 2, port=port)
    assert reply.flags & dns.flags.TC
    assert reply.answer == []
    # dnspython retries over TCP on TC, as stub resolvers do
    reply, used_tcp = await dns.asyncquery.udp_with_fallback(plain, host, 2, port=port)
    assert used_tcp
    assert addresses(reply) == TABLE["many.lab"]  # all of them, in table order
    assert not reply.flags & dns.flags.TC

    # EDNS0: the client's payload size lifts the limit, up to our 1232 bytes; OPT comes back
    edns = dns.message.make_query("many.lab", "A", use_edns=0, payload=1232)
    reply = await dns.asyncquery.udp(edns, host, 2, port=port)
    assert not reply.flags & dns.flags.TC
    assert len(addresses(reply)) == 60
    assert (reply.edns, reply.payload) == (0, 1232)
    big = dns.message.make_query("huge.lab", "A", use_edns=0, payload=4096)
    reply = await dns.asyncquery.udp(big, host, 2, port=port)
    assert reply.flags & dns.flags.TC
    assert reply.edns == 0
    reply, used_tcp = await dns.asyncquery.udp_with_fallback(big, host, 2, port=port)
    assert used_tcp
    assert addresses(reply) == TABLE["huge.lab"]


def frame(query: dns.message.Message) -> bytes:
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire  # RFC 1035 4.2.2: 2-byte length, message


async def read_frame(reader: asyncio.StreamReader) -> dns.message.Message:
    (size,) = struct.unpack("!H", await reader.readexactly(2))
    return dns.message.from_wire(await reader.readexactly(size))


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """The server ends the connection without sending anything: a FIN, or a reset when bytes
    the client sent were still unread when it closed (TCP's rule, RFC 1122 4.2.2.13)."""
    try:
        assert await asyncio.wait_for(reader.read(), 2) == b""
    except ConnectionResetError:
        pass


async def test_pipelined_tcp(dns_lab: DnsLab) -> None:
    dns_lab.resolver.rules = [DnsRule("dropped.lab", "drop")]
    queries = [
        dns.message.make_query(name, "A", id=qid)
        for qid, name in [(1, "web.telegram.org"), (2, "x.dropped.lab"), (3, "signal.org")]
    ]
    last = frame(dns.message.make_query("nottelegram.org", "A", id=4))
    reader, writer = await asyncio.open_connection(*dns_lab.server.address)
    try:
        writer.write(b"".join(frame(q) for q in queries))  # three queries in one segment
        for byte in last:  # and one a byte at a time
            writer.write(bytes([byte]))
            await writer.drain()
        replies = [await asyncio.wait_for(read_frame(reader), 2) for _ in range(3)]
        # answered in order; the dropped one is skipped, the connection stays usable
        assert [(r.id, addresses(r)) for r in replies] == [
            (1, ["127.77.1.1"]),
            (3, ["127.77.1.3"]),
            (4, ["127.77.1.2"]),
        ]
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x00", id="length-0"),
        pytest.param(b"\x00\x05hello", id="length-5-shorter-than-a-header"),
        pytest.param(b"\x01\x00" + b"\x12\x34" + b"\x00" * 20, id="eof-mid-message"),
        pytest.param(b"\x00", id="eof-mid-length"),
    ],
)
async def test_tcp_bad_framing_closes(dns_lab: DnsLab, data: bytes) -> None:
    reader, writer = await asyncio.open_connection(*dns_lab.server.address)
    try:
        writer.write(data)
        writer.write_eof()
        await closed_by_server(reader)  # and nothing answered
    finally:
        writer.close()
        await writer.wait_closed()
    assert outcome(await dns_lab.ask("tcp", "signal.org")) == (NOERROR, ["127.77.1.3"])


async def test_tcp_idle_timeout() -> None:
    async with DnsServer(LabResolver(TABLE), "127.0.0.1", 0, idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(b"\x00")  # half a length prefix, then nothing
            await closed_by_server(reader)
        finally:
            writer.close()
            await writer.wait_closed()


# --- malformed queries ---------------------------------------------------------------------


def header(qid: int, flags: int, qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)  # RFC 1035 4.1.1


def query_wire(name: str = "signal.org", rdtype: str = "A", **kwargs: object) -> bytes:
    return dns.message.make_query(name, rdtype, id=0x1234, **kwargs).to_wire()  # type: ignore[arg-type]


def two_questions() -> bytes:
    wire = query_wire()
    question = wire[12:]
    return header(0x1234, 0x0100, qd=2) + question + question


def chaos_query() -> bytes:
    query = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH, id=0x1234)
    return query.to_wire()


def opcode_query(opcode: dns.opcode.Opcode) -> bytes:
    wire = bytearray(query_wire())
    wire[2] |= opcode << 3
    return bytes(wire)


MALFORMED = [
    # (what, query bytes, expected rcode, or None for no reply at all)
    ("empty", b"", None),
    ("11 bytes: no full header", header(0x1234, 0x0100)[:11], None),
    ("a response, not a query", header(0x1234, 0x8180), None),
    ("header only, no question", header(0x1234, 0x0100), dns.rcode.FORMERR),
    ("two questions", two_questions(), dns.rcode.FORMERR),
    ("question cut short", query_wire()[:-3], dns.rcode.FORMERR),
    ("trailing garbage", query_wire() + b"\x00", dns.rcode.FORMERR),
    ("garbage", header(0x1234, 0x0100, qd=1) + b"\xff" * 20, dns.rcode.FORMERR),
    ("opcode NOTIFY", opcode_query(dns.opcode.NOTIFY), dns.rcode.NOTIMP),
    ("opcode UPDATE", opcode_query(dns.opcode.UPDATE), dns.rcode.NOTIMP),
    ("opcode 7 (unassigned)", header(0x1234, 7 << 11, qd=1), dns.rcode.NOTIMP),
    ("EDNS version 1", query_wire(use_edns=1), dns.rcode.BADVERS),
    ("class CHAOS", chaos_query(), dns.rcode.REFUSED),
]


@pytest.mark.parametrize(
    ("wire", "rcode"), [(w, r) for _, w, r in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_query(wire: bytes, rcode: dns.rcode.Rcode | None) -> None:
    resolver = LabResolver(TABLE)
    reply_wire = resolver.answer(wire)
    if rcode is None:
        assert reply_wire is None
        return
    assert reply_wire is not None
    reply = dns.message.from_wire(reply_wire)
    assert reply.id == 0x1234
    assert reply.flags & dns.flags.QR
    assert reply.opcode() == dns.opcode.from_flags(struct.unpack_from("!H", wire, 2)[0])
    assert reply.rcode() == rcode
    assert reply.answer == []


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies.put_nowait(data)


async def test_malformed_over_udp(dns_lab: DnsLab) -> None:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        _Collect, remote_addr=dns_lab.server.address
    )
    try:
        transport.sendto(b"\x12\x34 not dns")  # too short for a header: ignored
        transport.sendto(header(0x1234, 0x8180))  # a response: ignored
        transport.sendto(header(0x4321, 0x0100, qd=1) + b"\xff" * 20)
        reply = dns.message.from_wire(await asyncio.wait_for(client.replies.get(), 2))
        assert (reply.id, reply.rcode()) == (0x4321, dns.rcode.FORMERR)
        assert client.replies.empty()
    finally:
        transport.close()
    assert outcome(await dns_lab.ask("udp", "signal.org")) == (NOERROR, ["127.77.1.3"])


# --- DoH requests that are not DNS queries -------------------------------------------------

DOH_ERRORS = [
    # (what, method, params or body, content type, status)
    ("no dns parameter", "GET", {}, None, 400),
    ("not base64url", "GET", {"dns": "q+/="}, None, 400),
    ("base64url of 5 bytes", "GET", {"dns": "aGVsbG8"}, None, 400),
    ("impossible base64 length", "GET", {"dns": "AAAAA"}, None, 400),
    ("a response", "POST", header(1, 0x8180), DNS_MESSAGE, 400),
    ("wrong content type", "POST", query_wire(), "application/octet-stream", 415),
    ("text", "POST", query_wire(), "text/plain", 415),
]


@pytest.mark.parametrize(
    ("method", "payload", "content_type", "status"),
    [case[1:] for case in DOH_ERRORS],
    ids=[case[0] for case in DOH_ERRORS],
)
async def test_doh_bad_requests(
    dns_lab: DnsLab, method: str, payload: object, content_type: str | None, status: int
) -> None:
    if method == "GET":
        request = dns_lab.session.get(dns_lab.doh_url, params=payload)  # type: ignore[arg-type]
    else:
        headers = {"Content-Type": content_type} if content_type else {}
        request = dns_lab.session.post(dns_lab.doh_url, data=payload, headers=headers)
    async with request as response:
        assert response.status == status
        assert response.content_type == "text/plain"


async def test_doh_garbage_with_a_header_is_formerr(dns_lab: DnsLab) -> None:
    # A DNS error is still a DNS reply: HTTP 200 (RFC 8484 4.2.1)
    wire = header(0x4321, 0x0100, qd=1) + b"\xff" * 20
    for via in ("doh-get", "doh-post"):
        reply = await dns_lab.doh(via, wire)
        assert (reply.id, reply.rcode()) == (0x4321, dns.rcode.FORMERR)
    # padded base64url is tolerated
    padded = base64.urlsafe_b64encode(query_wire()).decode()
    async with dns_lab.session.get(dns_lab.doh_url, params={"dns": padded}) as response:
        assert response.status == 200


async def test_doh_other_methods(dns_lab: DnsLab) -> None:
    for method in ("PUT", "HEAD", "DELETE"):
        async with dns_lab.session.request(method, dns_lab.doh_url) as response:
            assert response.status == 405


async def test_doh_cache_control_is_the_ttl(dns_lab: DnsLab) -> None:
    status, headers, body = await dns_lab.doh_request("doh-post", query_wire("web.telegram.org"))
    assert status == 200
    assert headers["Cache-Control"] == f"max-age={TTL}"
    assert dns.message.from_wire(body).answer[0].ttl == TTL


# --- start and stop ------------------------------------------------------------------------


def assert_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        # SO_REUSEADDR lets a closed connection's TIME_WAIT pass, but not a live listener
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen()


async def test_stop_leaves_nothing_behind() -> None:
    server = DnsServer(LabResolver(TABLE), "127.0.0.1", 0)
    await server.start()
    host, port = server.address
    reply = await dns.asyncquery.udp(dns.message.make_query("signal.org", "A"), host, 2, port=port)
    assert addresses(reply) == ["127.77.1.3"]
    reader, writer = await asyncio.open_connection(host, port)  # a client still connected
    try:
        await server.stop()
        await closed_by_server(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert_port_free(host, port)
    with pytest.raises(RuntimeError):
        server.address  # noqa: B018
    await server.stop()  # twice is fine


async def test_stop_with_answers_unread() -> None:
    server = DnsServer(LabResolver(TABLE), "127.0.0.1", 0)
    await server.start()
    address = server.address
    loop = asyncio.get_running_loop()
    with socket.socket() as client:  # a client that sends and never reads
        client.setblocking(False)
        await loop.sock_connect(client, address)
        await loop.sock_sendall(client, frame(dns.message.make_query("huge.lab", "A")) * 200)
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.stop(), 2)
    assert_port_free(*address)


async def test_two_servers_at_once() -> None:
    first = DnsServer(LabResolver({"same.lab": ["127.77.5.1"]}), "127.0.0.1", 0)
    second = DnsServer(LabResolver({"same.lab": ["127.77.5.2"]}), "127.0.0.1", 0)
    async with first, second:
        ports = first.address[1], second.address[1]
        assert ports[0] != ports[1]
        for server, expected in [(first, "127.77.5.1"), (second, "127.77.5.2")]:
            host, port = server.address
            query = dns.message.make_query("same.lab", "A")
            assert addresses(await dns.asyncquery.udp(query, host, 2, port=port)) == [expected]
            assert addresses(await dns.asyncquery.tcp(query, host, 2, port=port)) == [expected]
        # a fixed port that is taken is an error, not a silent second port
        taken = DnsServer(LabResolver({}), "127.0.0.1", ports[0])
        with pytest.raises(OSError) as raised:
            await taken.start()
        assert raised.value.errno == errno.EADDRINUSE
    for port in ports:
        assert_port_free("127.0.0.1", port)


# --- logging and validation ----------------------------------------------------------------


def test_one_log_line_per_query(caplog: pytest.LogCaptureFixture) -> None:
    resolver = LabResolver(TABLE, [DnsRule("telegram.org", "nxdomain")])
    with caplog.at_level(logging.INFO, logger="detour.lab.dns"):
        resolver.answer(query_wire("web.telegram.org"))
        resolver.answer(query_wire("signal.org", "AAAA"))
        resolver.answer(query_wire("many.lab"), udp=True)
    assert [r.getMessage() for r in caplog.records] == [
        "web.telegram.org. A -> NXDOMAIN, rule 'nxdomain telegram.org'",
        "signal.org. AAAA -> NOERROR, host table",
        "many.lab. A -> NOERROR 60 records, truncated for UDP (512 bytes), host table",
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DnsRule("telegram.org", "block"), "unknown action 'block'"),
        (lambda: DnsRule("", "drop"), "empty match"),
        (lambda: DnsRule("a..b", "drop"), "not a domain name"),
        (lambda: LabResolver({"x.lab": ["300.1.1.1"]}), "'300.1.1.1' is not an IP address"),
        (lambda: LabResolver({"x.lab": "127.0.0.1"}), "got a string"),
        (lambda: LabResolver({}, bogon_v4="fd00::1"), "bogon_v4: 'fd00::1' is not an IPv4"),
        (lambda: LabResolver({}, bogon_v6="10.0.0.1"), "bogon_v6: '10.0.0.1' is not an IPv6"),
        (lambda: LabResolver({}, ttl=-1), "ttl -1 out of range"),
        (lambda: DnsServer(LabResolver({}), "localhost", 0), "expected an IP address"),
    ],
)
def test_bad_arguments(make, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        make()
    assert message in str(raised.value)


def test_rules_must_be_rules() -> None:
    resolver = LabResolver(TABLE)
    with pytest.raises(TypeError):
        resolver.rules = [("telegram.org", "drop")]  # type: ignore[list-item]
    assert resolver.rules == ()


async def test_dns_over_tls_answers_like_the_honest_resolver(tmp_path) -> None:
    """The doh host's port 853 (RFC 7858), which a lab standing in for the internet sends
    Quad9's DoT address to."""
    from transports.resolver import parse_resolver

    ca = TestCA(tmp_path)
    resolver = LabResolver({"web.telegram.org": ["127.77.1.10"]})
    async with DnsServer(resolver, "127.0.0.1", 0, tls=ca.server_context("127.0.0.1")) as server:
        host, port = server.address
        client = parse_resolver(f"dot={host}:{port};public=127.0.0.0/8").build(ca.client_context())
        try:
            assert [str(a) for a in await client.resolve("web.telegram.org")] == ["127.77.1.10"]
        finally:
            await client.aclose()
