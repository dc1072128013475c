"""Property test for the lab's resolver, which reads DNS queries from anyone who can reach it.

For any bytes (random, or a valid query mutated), in both the UDP and the TCP/DoH mode,
LabResolver.answer never raises and either returns None — only for input shorter than a
header or with the QR bit set (the resolver under test has no 'drop' rule) — or a reply
dnspython parses as a response to that query: QR set, the same ID and opcode, no longer than
the transport allows.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rdatatype
from hypothesis import given
from hypothesis import strategies as st

from helper.lab.dns import UDP_PAYLOAD, DnsRule, LabResolver
from tests.fuzz.strategies import Choices, mutate

RESOLVER = LabResolver(
    {
        "web.telegram.org": ["127.77.1.1", "fd77::1"],
        "v4.lab": ["127.77.2.1"],
        "many.lab": [f"127.77.3.{i}" for i in range(1, 41)],  # > 512 bytes: truncated over UDP
    },
    [
        DnsRule("whatsapp.com", "nxdomain"),
        DnsRule("bogon.lab", "bogon"),
        DnsRule("blocked.lab", "blockpage"),
        DnsRule("broken.lab", "servfail"),
        DnsRule("empty.lab", "noanswer"),
    ],
)
NAMES = [
    "web.telegram.org",
    "WeB.TeLeGrAm.OrG",
    "v4.lab",
    "many.lab",
    "x.whatsapp.com",
    "bogon.lab",
    "a.blocked.lab",
    "broken.lab",
    "empty.lab",
    "unknown.lab",
    ".",
]
TYPES = ["A", "AAAA", "MX", "TXT", "HTTPS", "ANY", "AXFR", "OPT"]


def _query(data: bytes) -> bytes:
    """A valid query decoded from fuzz bytes: name, type, EDNS or not, its payload size and
    its ID."""
    c = Choices(data)
    name = c.pick(NAMES) if c.byte() < 200 else c.hostname(60)
    rdtype = c.pick(TYPES) if c.byte() < 220 else dns.rdatatype.RdataType.make(c.port())
    edns = c.pick([None, 0, 0, 1])
    payload = c.port()
    ident = c.byte() << 8 | c.byte()  # drawn: make_query would draw one at random
    query = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload, id=ident)
    return query.to_wire()


def check(wire: bytes, udp: bool) -> None:
    reply = RESOLVER.answer(wire, udp=udp)
    if reply is None:
        assert len(wire) < 12 or wire[2] & 0x80, "only non-queries go unanswered"
        return
    assert len(wire) >= 12
    response = dns.message.from_wire(reply)
    (qid, qflags), (rid, rflags) = struct.unpack_from("!HH", wire), struct.unpack_from("!HH", reply)
    assert rflags & dns.flags.QR
    assert rid == qid
    assert rflags & 0x7800 == qflags & 0x7800, "the opcode is echoed"
    assert len(reply) <= (UDP_PAYLOAD if udp else 65535)
    if udp and response.edns < 0:
        assert len(reply) <= 512


# One draw: 28 bytes for the structured part (a query's 12 bytes, 15 bytes of edits, the
# transport), then any bytes: hypothesis costs more per draw than the resolver does per
# answer.
@given(st.binary(min_size=28, max_size=188))
def test_answer_any_bytes(raw: bytes) -> None:
    data, junk = raw[:28], raw[28:]
    query, edits, udp = _query(data[:12]), data[12:27], bool(data[27] & 1)
    check(query, udp)
    check(mutate(query, edits), udp)
    check(junk, udp)
