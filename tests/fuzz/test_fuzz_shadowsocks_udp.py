"""Property tests for Shadowsocks UDP packets (transports/shadowsocks/udp.py), which a client
reads from whatever answers from its server's port:

- any bytes, and any authentic packet with any body, give (source, payload) or PacketError;
  nothing else;
- what is sealed opens to what was sealed (address and payload), both editions;
- the replay window accepts each packet id once, whatever the order.
"""

from __future__ import annotations

import base64
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
from tests.support.seeded import seeded_urandom
from transports import Endpoint
from transports.shadowsocks.server import shadowsocks_server
from transports.shadowsocks.udp import (
    ClientPackets,
    PacketError,
    ReplayWindow,
    ServerPackets,
    parse_address,
)

AEAD = shadowsocks_server("127.0.0.1", 1, "aes-128-gcm", "pw").key
SS2022 = shadowsocks_server(
    "127.0.0.1", 1, "2022-blake3-aes-128-gcm", base64.b64encode(bytes(16)).decode()
).key
NOW = 1_765_000_000


def _address(c: Choices) -> Endpoint:
    kind = c.pick(("v4", "v6", "name"))
    port = c.byte() << 8 | c.byte()
    if kind == "v4":
        return Endpoint(str(ipaddress.IPv4Address(c.take(4).ljust(4, b"\0"))), port)
    if kind == "v6":
        return Endpoint(str(ipaddress.IPv6Address(c.take(16).ljust(16, b"\0"))), port)
    return Endpoint(c.hostname(60), port)


CLIENTS = (ClientPackets(AEAD), ClientPackets(SS2022))


def _error(call) -> str | None:
    try:
        call()
    except PacketError as exc:
        return str(exc)
    return None


def any_bytes_give_a_datagram_or_packet_error(data: bytes) -> None:
    for client in CLIENTS:  # forging a tag by chance does not happen
        assert _error(lambda client=client: client.open(data))
    try:
        used, address = parse_address(data)
    except PacketError as exc:
        error: PacketError | None = exc
    else:
        error = None
        assert 0 < used <= len(data) and isinstance(address, Endpoint)
    assert error is None or str(error)


def authentic_packets_with_any_body_open_or_say_why(data: bytes) -> None:
    """A server with the key that sends nonsense inside a valid seal (the AEAD edition: the
    body is all address and payload)."""
    from transports.shadowsocks.udp import _seal_2017

    packet = _seal_2017(AEAD, data, lambda n: bytes(n))
    try:
        source, payload = CLIENTS[0].open(packet)
    except PacketError as exc:
        error: PacketError | None = exc
    else:
        error = None
        assert data.endswith(payload) and isinstance(source, Endpoint)
    assert error is None or str(error)


def sealed_packets_open_to_what_was_sealed(data: bytes) -> None:
    c = Choices(data)
    key = c.pick((AEAD, SS2022))
    target, payload = _address(c), c.take(len(data))
    # The clock and the client's salts fixed by the example (a seal and its opening are
    # otherwise apart by whatever time the machine takes).
    client = ClientPackets(key, clock=lambda: NOW, random=seeded_urandom(data))
    server = ServerPackets(key, clock=lambda: NOW)
    session, got, body = server.open(client.seal(target, payload))
    assert (got, body) == (target, payload)
    assert client.open(server.seal(session, target, payload)) == (target, payload)


def replay_window_accepts_each_id_once(data: bytes) -> None:
    ids = [b + (b & 1) * 200 for b in data]  # ids 0-455: jumps past the window and back
    window = ReplayWindow(size=64)
    accepted: list[int] = []
    for packet in ids:
        if window.check(packet):
            window.accept(packet)
            accepted.append(packet)
    assert len(accepted) == len(set(accepted))
    highest = max(ids, default=-1)
    for packet in set(ids):
        if packet > highest - 64 and packet not in accepted:
            raise AssertionError(f"{packet} within the window was never accepted")


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    data=st.binary(max_size=200),
    data_1=st.binary(max_size=120),
    data_2=st.binary(max_size=120),
    data_3=st.binary(max_size=60),
)
def test_packets_seals_and_the_replay_window(data, data_1, data_2, data_3) -> None:
    any_bytes_give_a_datagram_or_packet_error(data)
    authentic_packets_with_any_body_open_or_say_why(data_1)
    sealed_packets_open_to_what_was_sealed(data_2)
    replay_window_accepts_each_id_once(data_3)
