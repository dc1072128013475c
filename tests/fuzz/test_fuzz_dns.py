"""Property tests for reading DNS answers (transports/dns.py `read_answer`): the answer comes
from a server on a network that may tamper with it, so any bytes must give addresses or a
DialError during resolve; never another exception.

Inputs are raw bytes and mutations of real answers to the query (a byte changed, inserted or
cut off), so dnspython's parser and the CNAME chase see near-valid messages too."""

from __future__ import annotations

import dns.message
import dns.rrset
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices, edit_bytes
from transports.base import DialError, Op
from transports.dns import read_answer

# A fixed ID (make_query draws one at random): the same answer, and examples, in every run.
QUERY = dns.message.make_query("web.telegram.org", "A", use_edns=0, payload=1232, id=0x5A17)


def _answer() -> bytes:
    response = dns.message.make_response(QUERY)
    response.answer.append(
        dns.rrset.from_text("web.telegram.org.", 60, "IN", "CNAME", "edge.telegram.org.")
    )
    response.answer.append(
        dns.rrset.from_text("edge.telegram.org.", 30, "IN", "A", "149.154.167.99", "149.154.167.98")
    )
    return response.to_wire()


ANSWER = _answer()


def _mutated(data: bytes) -> bytes:
    c = Choices(data)
    return bytes(edit_bytes(c, bytearray(ANSWER), 1 + c.size(3)))


def _wire(raw: bytes) -> bytes:
    """One draw (tests/fuzz/strategies.py says why), its first byte picking: any bytes, the
    answer's ID and any header, or the answer mutated."""
    form, rest = (raw[0] % 3, raw[1:]) if raw else (0, b"")
    if form == 0:
        return rest
    if form == 1:
        return ANSWER[:2] + rest[:12]
    return _mutated(rest[:16])


answers = st.binary(max_size=201).map(_wire)


@given(answers)
def test_any_answer_gives_addresses_or_a_dial_error(wire: bytes) -> None:
    try:
        addresses, ttl = read_answer(QUERY, wire, "fuzz")
    except DialError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.op is Op.RESOLVE
        return
    assert ttl >= 0
    assert all(address.version in (4, 6) for address in addresses)


def test_the_unmutated_answer_is_read() -> None:
    addresses, ttl = read_answer(QUERY, ANSWER, "fuzz")
    assert sorted(str(a) for a in addresses) == ["149.154.167.98", "149.154.167.99"]
    assert ttl == 30
