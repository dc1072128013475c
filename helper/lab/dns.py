"""The lab's resolver, honest and lying: answers from the lab's host table, lies where a
censorship rule says so, over UDP, TCP and DNS-over-HTTPS.

`detour lab` points a helper at it, and the test suite uses it to reproduce DNS tampering on
one machine (the DNS part of OONI's netem/netemx). The lab declares its hosts in a table
(name -> addresses); a DnsRule makes the resolver lie about a domain and every name under it
the way censors do: NXDOMAIN, a bogon or block-page address, SERVFAIL, an empty answer, or no
reply at all. Rules can be replaced while the lab runs.

    LabResolver   sans-IO: query bytes in, answer bytes out (None: send nothing)
    DnsServer     UDP and TCP (RFC 1035 4.2) on one address and port   (dnsserver.py)
    doh_routes    DoH (RFC 8484) GET and POST routes for the lab's HTTPS server (dnsserver.py)

Nothing in the proxy path imports this module.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DNS_ACTIONS", "DNS_MESSAGE", "MAX_MESSAGE", "DnsAction", "DnsRule", "LabResolver"]

log = logging.getLogger("detour.lab.dns")

DnsAction = Literal["nxdomain", "bogon", "blockpage", "servfail", "noanswer", "drop"]
DNS_ACTIONS: frozenset[str] = frozenset(get_args(DnsAction))

HEADER_SIZE = 12
MAX_MESSAGE = 65535
# What we advertise and the most we send over UDP, whatever a client offers: DNS Flag Day
# 2020's size, which avoids IP fragmentation on real paths. Bigger answers are truncated.
UDP_PAYLOAD = 1232
MAX_TTL = 0x7FFFFFFF  # RFC 2181 8
_OPCODE_BITS = 0x7800  # in the header's second 16-bit word, RFC 1035 4.1.1
DNS_MESSAGE = "application/dns-message"

_A, _AAAA = dns.rdatatype.A, dns.rdatatype.AAAA
_Records = dict[int, tuple[dns.rdata.Rdata, ...]]


@dataclass(frozen=True)
class DnsRule:
    """A lying-resolver rule: which names it applies to, and how it lies.

    `match` is a domain: the rule covers the name itself and every name under it, on label
    boundaries (`telegram.org` covers `web.telegram.org`, not `nottelegram.org`); "." covers
    every name. Names need not be in the host table.

    action     reply
    nxdomain   NXDOMAIN
    bogon      a private address (A and AAAA; other types: NOERROR, no records)
    blockpage  the lab's block-page address (A only; other types: NOERROR, no records)
    servfail   SERVFAIL
    noanswer   NOERROR, no records
    drop       nothing: UDP clients time out, TCP connections stay open unanswered until
               their idle timeout, DoH answers HTTP 504 after `drop_delay` (see doh_routes)
    """

    match: str
    action: DnsAction
    _name: dns.name.Name = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.action not in DNS_ACTIONS:
            raise ValueError(
                f"DNS rule for {self.match!r}: unknown action {self.action!r};"
                f" expected one of {', '.join(sorted(DNS_ACTIONS))}"
            )
        if not self.match.strip():
            raise ValueError("DNS rule: empty match; use '.' to match every name")
        try:
            name = dns.name.from_text(self.match)
        except dns.exception.DNSException as exc:
            raise ValueError(f"DNS rule: {self.match!r} is not a domain name: {exc}") from None
        object.__setattr__(self, "_name", name)

    def covers(self, name: dns.name.Name) -> bool:
        return name.is_subdomain(self._name)  # label-wise and case-insensitive

    def __str__(self) -> str:
        return f"{self.action} {self.match}"


class _Reply(NamedTuple):
    wire: bytes | None
    dropped: bool = False  # no reply because a 'drop' rule said so (not because of bad input)
    # DoH's Cache-Control: the smallest TTL in the reply, the resolver's TTL when it has no
    # records (the lab has no SOA to take a negative TTL from), 0 for malformed queries.
    max_age: int = 0


class LabResolver:
    """Sans-IO: DNS query bytes in, answer bytes out (None = send nothing). Never raises.

    `table` maps names to addresses (IPv4 and IPv6 strings): A queries get the IPv4 ones,
    AAAA the IPv6 ones, other types NOERROR without records; names not in the table are
    NXDOMAIN. The first rule (in order) that covers a name decides instead. `rules` may be
    replaced at any time; the next query sees the new rules.
    """

    def __init__(
        self,
        table: Mapping[str, Sequence[str]],
        rules: Iterable[DnsRule] = (),
        *,
        blockpage_v4: str = "127.77.0.80",
        bogon_v4: str = "10.10.34.34",
        bogon_v6: str = "fd00::bad",
        ttl: int = 60,
    ) -> None:
        if not 0 <= ttl <= MAX_TTL:
            raise ValueError(f"ttl {ttl} out of range 0-{MAX_TTL}")
        self.ttl = ttl
        self._hosts = {_table_name(name): _records(name, addrs) for name, addrs in table.items()}
        bogon = [_address(bogon_v4, 4, "bogon_v4"), _address(bogon_v6, 6, "bogon_v6")]
        blockpage = [_address(blockpage_v4, 4, "blockpage_v4")]
        # Each lying action as (rcode, records by query type): one table, no branches.
        self._lies: dict[str, tuple[dns.rcode.Rcode, _Records]] = {
            "nxdomain": (dns.rcode.NXDOMAIN, {}),
            "servfail": (dns.rcode.SERVFAIL, {}),
            "noanswer": (dns.rcode.NOERROR, {}),
            "bogon": (dns.rcode.NOERROR, _records("bogon", bogon)),
            "blockpage": (dns.rcode.NOERROR, _records("blockpage", blockpage)),
        }
        self.rules = tuple(rules)

    @property
    def rules(self) -> tuple[DnsRule, ...]:
        return self._rules

    @rules.setter
    def rules(self, rules: Iterable[DnsRule]) -> None:
        rules = tuple(rules)
        for rule in rules:
            if not isinstance(rule, DnsRule):
                raise TypeError(f"expected DnsRule, got {type(rule).__name__}")
        # One assignment: a query sees the old rules or the new ones, never a mix.
        self._rules = rules

    def rule_for(self, name: str | dns.name.Name) -> DnsRule | None:
        """The rule that decides for `name`: the first that covers it, or None."""
        if isinstance(name, str):
            name = dns.name.from_text(name)
        return next((rule for rule in self._rules if rule.covers(name)), None)

    def answer(self, query: bytes, *, udp: bool = False) -> bytes | None:
        """The reply to send for `query`, or None to send nothing.

        With `udp`, replies longer than 512 bytes (or the query's EDNS payload size, at most
        UDP_PAYLOAD) are truncated and flagged TC, so the client asks again over TCP.
        """
        return self._reply(query, udp=udp).wire

    def _reply(self, wire: bytes, *, udp: bool) -> _Reply:
        if len(wire) < HEADER_SIZE:
            log.info("ignored %d bytes: too short for a DNS header", len(wire))
            return _Reply(None)
        qid, flags = struct.unpack_from("!HH", wire)
        if flags & dns.flags.QR:
            # A response sent to a server. Answering it could make two servers bounce errors
            # at each other forever; BIND and Unbound drop these too.
            log.info("ignored a response (id %d) sent as a query", qid)
            return _Reply(None)
        opcode = dns.opcode.from_flags(flags)
        if opcode != dns.opcode.QUERY:
            return self._header_only(qid, flags, dns.rcode.NOTIMP, f"opcode {int(opcode)}")
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException as exc:
            # from_wire wraps every decoding error (record data included) in a DNSException;
            # tests/fuzz/test_fuzz_lab_dns.py holds it to that.
            return self._header_only(qid, flags, dns.rcode.FORMERR, type(exc).__name__)
        if len(query.question) != 1:
            return self._error(query, dns.rcode.FORMERR, f"{len(query.question)} questions", udp)
        if query.edns > 0:
            return self._error(query, dns.rcode.BADVERS, f"EDNS version {query.edns}", udp)
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            why = f"class {dns.rdataclass.to_text(question.rdclass)}"
            return self._error(query, dns.rcode.REFUSED, why, udp)
        return self._resolve(query, question, udp=udp)

    def _resolve(
        self, query: dns.message.Message, question: dns.rrset.RRset, *, udp: bool
    ) -> _Reply:
        name, rdtype = question.name, question.rdtype
        what = f"{name} {dns.rdatatype.to_text(rdtype)}"
        rule = self.rule_for(name)
        if rule is not None and rule.action == "drop":
            log.info("%s -> no reply, rule '%s'", what, rule)
            return _Reply(None, dropped=True)
        if rule is not None:
            rcode, by_type = self._lies[rule.action]
            why = f"rule '{rule}'"
        elif name in self._hosts:
            rcode, by_type, why = dns.rcode.NOERROR, self._hosts[name], "host table"
        else:
            rcode, by_type, why = dns.rcode.NXDOMAIN, {}, "not in the host table"
        response = dns.message.make_response(
            query, recursion_available=True, our_payload=UDP_PAYLOAD
        )
        response.set_rcode(rcode)
        records = by_type.get(rdtype, ())
        if records:
            # The owner name is the question as asked, so 0x20 mixed case comes back intact.
            response.answer.append(dns.rrset.from_rdata_list(name, self.ttl, records))
        limit = _size_limit(query, udp)
        # Addresses in table order, not shuffled: the first is the one clients try first, and
        # a lab run should be repeatable.
        wire = response.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)
        outcome = dns.rcode.to_text(rcode)
        if records:
            outcome += f" {len(records)} record{'s' if len(records) > 1 else ''}"
        if _flags(wire) & dns.flags.TC:
            outcome += f", truncated for UDP ({limit} bytes)"
        log.info("%s -> %s, %s", what, outcome, why)
        return _Reply(wire, max_age=self.ttl)

    def _error(
        self, query: dns.message.Message, rcode: dns.rcode.Rcode, why: str, udp: bool
    ) -> _Reply:
        """An error reply that keeps the query's question and EDNS (RFC 6891 7)."""
        response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
        response.set_rcode(rcode)
        log.info("query id %d -> %s: %s", query.id, dns.rcode.to_text(rcode), why)
        wire = response.to_wire(max_size=_size_limit(query, udp), prefer_truncation=True)
        return _Reply(wire, max_age=0)

    def _header_only(self, qid: int, query_flags: int, rcode: dns.rcode.Rcode, why: str) -> _Reply:
        """A reply for a query too broken to echo: just the header (RFC 1035 4.1.1).

        ID    QR Opcode AA TC RD   RA Z AD CD RCODE  QDCOUNT ANCOUNT NSCOUNT ARCOUNT
        same  1  same   0  0  same 0  0 0  0  rcode  0       0       0       0
        """
        flags = dns.flags.QR | (query_flags & (_OPCODE_BITS | dns.flags.RD)) | rcode
        log.info("query id %d -> %s: %s", qid, dns.rcode.to_text(rcode), why)
        return _Reply(struct.pack("!6H", qid, flags, 0, 0, 0, 0), max_age=0)


def _flags(wire: bytes) -> int:
    return struct.unpack_from("!H", wire, 2)[0]


def _size_limit(query: dns.message.Message, udp: bool) -> int:
    if not udp:
        return MAX_MESSAGE
    if query.edns < 0:
        return 512  # RFC 1035 4.2.1
    return max(512, min(query.payload, UDP_PAYLOAD))  # RFC 6891 6.2.5: below 512 means 512


def _table_name(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name)  # hashes and compares case-insensitively
    except dns.exception.DNSException as exc:
        raise ValueError(f"lab host table: {name!r} is not a domain name: {exc}") from None


def _records(name: str, addresses: Sequence[str]) -> _Records:
    """Addresses as A and AAAA records, parsed once here rather than per query."""
    if isinstance(addresses, str):
        raise ValueError(f"lab host table: {name!r}: expected a list of addresses, got a string")
    records: dict[int, list[dns.rdata.Rdata]] = {_A: [], _AAAA: []}
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"lab host table: {name!r}: {text!r} is not an IP address") from None
        rdtype = _A if address.version == 4 else _AAAA
        records[rdtype].append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(address)))
    return {rdtype: tuple(rdatas) for rdtype, rdatas in records.items() if rdatas}


def _address(text: str, version: int, what: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise ValueError(f"{what}: {text!r} is not an IPv{version} address")
    return str(address)
