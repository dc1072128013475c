"""Property tests for the datagram parsers, which read what anyone may send to a UDP relay
socket (transports/udp.py, the SOCKS5 UDP header) or back from a STUN server
(transports/stun.py):

- any bytes give a message or ProtocolError saying what is wrong; nothing else;
- what the encoders write parses back to what was encoded (address, fragment, payload; a
  binding response's mapped address and transaction);
- a valid header with any tail keeps the tail as the payload, byte for byte.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
from transports import Endpoint
from transports.stun import (
    StunMessage,
    binding_request,
    binding_response,
    looks_like_stun,
    parse_message,
)
from transports.udp import Datagram, encode_datagram, parse_datagram
from transports.wire import ProtocolError


def _address(c: Choices) -> Endpoint:
    kind = c.pick(("v4", "v6", "name"))
    port = c.byte() << 8 | c.byte()
    if kind == "v4":
        return Endpoint(str(ipaddress.IPv4Address(c.take(4).ljust(4, b"\0"))), port)
    if kind == "v6":
        return Endpoint(str(ipaddress.IPv6Address(c.take(16).ljust(16, b"\0"))), port)
    return Endpoint(c.hostname(60), port)


def any_bytes_give_a_message_or_protocol_error(data: bytes) -> None:
    """Both parsers, on the same bytes (what a relay socket or a probe may receive)."""
    try:
        datagram = parse_datagram(data)
    except ProtocolError as exc:
        error: ProtocolError | None = exc
    else:
        error = None
        assert isinstance(datagram, Datagram)
        assert data.endswith(datagram.payload)
    assert error is None or str(error)
    try:
        message = parse_message(data)
    except ProtocolError as exc:
        error = exc
    else:
        error = None
        assert looks_like_stun(data)
        assert len(message.transaction) == 12
        message.mapped  # never raises, whatever the attribute holds  # noqa: B018
    assert error is None or str(error)


def encoded_datagrams_parse_back(data: bytes) -> None:
    c = Choices(data)
    address, frag = _address(c), c.byte()
    payload = c.take(len(data))
    assert parse_datagram(encode_datagram(address, payload, frag)) == Datagram(
        frag, address, payload
    )


def stun_round_trip(data: bytes) -> None:
    c = Choices(data)
    transaction = c.take(12).ljust(12, b"\0")
    request, tid = binding_request(transaction)
    assert parse_message(request) == StunMessage(1, tid, ())
    address = _address(c)
    if address.ip is None:
        address = Endpoint("192.0.2.1", address.port)
    message = parse_message(binding_response(transaction, address, c.text(30)))
    assert message.transaction == transaction
    assert message.mapped == address


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    data=st.binary(max_size=300),
    data_1=st.binary(max_size=120),
    data_2=st.binary(max_size=80),
)
def test_datagrams_and_stun_messages(data, data_1, data_2) -> None:
    any_bytes_give_a_message_or_protocol_error(data)
    encoded_datagrams_parse_back(data_1)
    stun_round_trip(data_2)
