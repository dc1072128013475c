"""`detour router-rules` (helper/router_rules.py) takes interface names and numbers from the
command line and writes them into nftables text: whatever it is given, a name is either one
that cannot end its quoted string or break the rule, or refused with one line naming the
option; a number is in its range or refused the same way. The sets it writes from any
service ranges hold exactly the addresses of the ranges, without overlaps (nftables refuses
overlapping intervals), in order."""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import given

from helper.router_rules import RulesError, _number, _service_sets, interface_name
from helper.services import Service
from tests.fuzz.strategies import fixed_bytes

NAME_CHARS = "abrlnw0129.-_" + '"\\/: \t\n{};#*+@é'  # mostly what names hold, some not
NUMBER_CHARS = "0123456789" + "0123456789xXabf-+_ ."


def _text(data: bytes, alphabet: str) -> str:
    """Text from bytes: the first byte gives the length; a byte below 128 picks from the
    alphabet (so that valid inputs are common), one above is itself (latin-1)."""
    if not data:
        return ""
    chosen = data[1 : 1 + data[0] % 20]
    return "".join(alphabet[b % len(alphabet)] if b < 128 else chr(b) for b in chosen)


def _prop_interface_name(data: bytes) -> None:
    text = _text(data, NAME_CHARS)
    try:
        name = interface_name(text)
    except RulesError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("--lan: ") and "\n" not in refusal
        return
    assert name == text and 1 <= len(name.encode()) <= 15 and name not in (".", "..")
    assert not any(c in name for c in '"\\/: \t\n\r{};#*') and name.isascii()


def _prop_number(data: bytes) -> None:
    text = _text(data, NUMBER_CHARS)
    try:
        value = _number("--route-table", text, 1, 0xFFFFFFFE, (253, 254, 255))
    except RulesError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("--route-table: ") and "\n" not in refusal
        return
    assert 1 <= value <= 0xFFFFFFFE and value not in (253, 254, 255)


def _prop_sets_hold_exactly_the_ranges(data: bytes) -> None:
    """Ranges from 5-byte chunks (4 address bytes, a prefix length from 8 to 32); compared as
    integer intervals (ipaddress' own comparisons cost more than the rules)."""
    nets, given = [], []
    for i in range(1, 1 + 5 * (data[0] % 7 if data else 0), 5):
        prefix = 8 + data[i + 4] % 25
        size = 1 << (32 - prefix)
        start = int.from_bytes(data[i : i + 4], "big") & ~(size - 1)
        nets.append(ipaddress.IPv4Network((start, prefix)))
        given.append((start, start + size - 1))
    if not nets:
        return
    service = Service("s", cidrs=tuple(nets))
    written = []
    for text in _service_sets([service], "")[0].cidrs["ip"]:
        net = ipaddress.IPv4Network(text)
        written.append((int(net.network_address), int(net.broadcast_address)))
    assert written == sorted(written)
    for (_, end), (start, _) in itertools.pairwise(written):
        assert end < start  # no overlap
    for start, end in given:  # every range given is in one written
        assert any(s <= start and end <= e for s, e in written)
    for s, e in written:  # and nothing else: each written range is a union of given ones
        inside = sorted((a, b) for a, b in given if s <= a and b <= e)
        reach = s - 1
        for a, b in inside:
            assert a <= reach + 1, (s, e, inside)
            reach = max(reach, b)
        assert reach == e


@given(data=fixed_bytes(20 + 20 + 31))
def test_router_rules_inputs(data: bytes) -> None:
    """One draw, three inputs (docs/testing.md "What a property test costs")."""
    _prop_interface_name(data[:20])
    _prop_number(data[20:40])
    _prop_sets_hold_exactly_the_ranges(data[40:])
