"""The lab's packet censor without sockets: IPv4/TCP headers read and written
(helper/lab/packets.py), the NFQUEUE and nftables netlink messages (helper/lab/nfqueue.py),
and the DPI state machine fed packet by packet (helper/lab/packetcensor.py) -- each DPI model
against the packets each evasion technique puts on the wire."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from helper.config import ConfigError
from helper.lab import nfqueue
from helper.lab.censor import Rule
from helper.lab.dpi import Depth
from helper.lab.packetcensor import PacketCensor, PacketModel, PacketPolicy
from helper.lab.packets import ACK, PSH, RST, SYN, URG, TcpPacket, checksum, parse, reset
from helper.lab.scenario import parse_scenario
from tests.support.tls import client_hello, openssl_client_hello, record
from transports.desync import OOB_BYTE, decoy_client_hello, server_name_in_stream

CLIENT = ipaddress.IPv4Address("169.254.7.1")
SERVER = ipaddress.IPv4Address("10.77.1.10")
HELLO = openssl_client_hello("web.telegram.org")  # a real client's, long enough for a decoy
MIDDLE = server_name_in_stream(HELLO)[1]  # "web.tele" | "gram.org"
ISN = 1000


def tcp(seq: int, payload: bytes = b"", flags: int = ACK | PSH, ttl: int = 63, urgent: int = 0):
    """A client packet as an IPv4 datagram, built independently of packets.reset."""
    header = struct.pack("!HHIIHHHH", 40000, 443, seq, 5000, (5 << 12) | flags, 65535, 0, urgent)
    total = 20 + len(header) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, ttl, 6, 0, CLIENT.packed,
                     SERVER.packed)  # fmt: skip
    return ip + header + payload


# --- packets.py ----------------------------------------------------------------------------


def test_a_client_packet_reads_back() -> None:
    pkt = parse(tcp(ISN + 1, b"hello", ACK | PSH | URG, ttl=2, urgent=3))
    assert pkt == TcpPacket(CLIENT, SERVER, 2, 40000, 443, ISN + 1, 5000, ACK | PSH | URG, 3,
                            b"hello")  # fmt: skip
    assert pkt.urgent_offset == 2 and pkt.client == "169.254.7.1:40000"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x60" + bytes(39),  # IPv6
        tcp(1)[:30],  # cut short
        tcp(1)[:9] + b"\x11" + tcp(1)[10:],  # UDP
        tcp(1)[:6] + b"\x20\x00" + tcp(1)[8:],  # a fragment (more fragments)
        tcp(1)[:2] + b"\x00\x10" + tcp(1)[4:],  # total length below the headers
    ],
)
def test_anything_else_is_not_a_tcp_packet(data: bytes) -> None:
    assert parse(data) is None


def test_a_reset_is_a_valid_packet_with_valid_checksums() -> None:
    packet = reset(SERVER, 443, CLIENT, 40000, seq=5000, ack=ISN + 1)
    assert checksum(packet[:20]) == 0  # a header that includes its checksum sums to zero
    pseudo = SERVER.packed + CLIENT.packed + struct.pack("!BBH", 0, 6, len(packet) - 20)
    assert checksum(pseudo + packet[20:]) == 0
    pkt = parse(packet)
    assert (pkt.src, pkt.dst, pkt.seq, pkt.ack, pkt.flags) == (SERVER, CLIENT, 5000, ISN + 1,
                                                               RST | ACK)  # fmt: skip


# --- nfqueue.py ----------------------------------------------------------------------------


def test_a_verdict_message_on_the_wire() -> None:
    message = nfqueue.verdict_message(3, 77, nfqueue.ACCEPT)
    # nlmsghdr: len 32, type 0x0301 (queue, verdict), flags request | nfgenmsg AF_UNSPEC v0
    # res_id 3 | attribute len 12 type 2 (verdict header): verdict 1, packet id 77
    assert message == (
        struct.pack("=IHHII", 32, 0x0301, 1, 0, 0) + b"\x00\x00\x00\x03"
        + struct.pack("=HH", 12, 2) + struct.pack("!II", 1, 77)
    )  # fmt: skip


def test_a_queued_packet_is_read_with_its_id() -> None:
    body = (
        b"\x02\x00\x00\x03"  # nfgenmsg: AF_INET, v0, queue 3
        + nfqueue.attribute(1, struct.pack("!IHB", 42, 0x0800, 0))  # packet header, id 42
        + nfqueue.attribute(10, b"\x45payload")  # the packet
    )
    data = struct.pack("=IHHII", 16 + len(body), 0x0300, 0, 0, 0) + body
    ack = struct.pack("=IHHII", 36, 2, 0, 9, 0) + struct.pack("=i", 0) + bytes(16)
    packets, errors = nfqueue.queued_packets(data + ack)
    assert packets == [nfqueue.Queued(42, b"\x45payload")] and errors == [0]


def test_the_compat_rule_is_one_transaction() -> None:
    batch = nfqueue.compat_queue_rule("detour_lab_dpi", "inspect", 0)
    kinds = [kind for kind, _, _ in nfqueue.messages(batch)]
    assert kinds == [0x10, 0x0A06, 0x11]  # batch begin, NFT_MSG_NEWRULE, batch end
    rule = list(nfqueue.messages(batch))[1][2][4:]
    found = nfqueue.attributes(rule)
    assert found[1] == b"detour_lab_dpi\0" and found[2] == b"inspect\0"
    target = nfqueue.attributes(nfqueue.attributes(nfqueue.attributes(found[4])[1])[2])
    assert target[1] == b"NFQUEUE\0" and target[2] == struct.pack("!I", 3)
    assert target[3] == struct.pack("=HHH", 0, 1, 0) + b"\0\0"  # queue 0 of 1, no bypass


# --- packetcensor.py -------------------------------------------------------------------------

RULES = (Rule("reset", name="telegram-sni", sni="telegram.org"),)


def censor(**model) -> PacketCensor:
    depth = model.pop("depth", Depth.FULL)
    return PacketCensor(PacketPolicy(RULES, PacketModel(depth, **model), "test"))


def feed(box: PacketCensor, *packets: bytes) -> list[bool]:
    """Whether each packet was let through; a SYN opens the flow first."""
    box.packet(parse(tcp(ISN, flags=SYN, ttl=63)))
    return [box.packet(parse(p)).accept for p in packets]


# The packets each technique puts on the wire (what reaches the censor, hop 2): a segment sent
# with TTL 1 never does; a decoy with TTL 2 arrives with TTL 1.
WIRE = {
    "direct": [tcp(ISN + 1, HELLO)],
    "split": [tcp(ISN + 1, HELLO[:1]), tcp(ISN + 2, HELLO[1:])],
    "disorder": [tcp(ISN + 1 + MIDDLE, HELLO[MIDDLE:]), tcp(ISN + 1, HELLO)],  # then all again
    "oob": [
        tcp(ISN + 1, HELLO[:MIDDLE] + OOB_BYTE, ACK | PSH | URG, urgent=MIDDLE + 1),
        tcp(ISN + 2 + MIDDLE, HELLO[MIDDLE:]),
    ],
    "fake": [
        tcp(ISN + 1, decoy_client_hello("www.example.com", len(HELLO)), ttl=1),
        tcp(ISN + 1, HELLO),
    ],
}
MODELS = {
    "first-segment": {"depth": Depth.FIRST_SEGMENT, "reorder": False},
    "first-record": {"depth": Depth.FIRST_RECORD},
    "arrival-order": {"reorder": False},
    "urgent-inline": {"check_ttl": True},
    "first-hello-wins": {"urgent": "skip"},
    "strict": {"urgent": "skip", "check_ttl": True},
}
FOOLED = {
    "direct": (),
    "split": ("first-segment",),
    "disorder": ("first-segment", "arrival-order"),
    "oob": ("first-segment", "first-record", "arrival-order", "urgent-inline"),
    "fake": ("first-segment", "first-record", "arrival-order", "first-hello-wins"),
}


@pytest.mark.parametrize(
    "technique, model",
    [pytest.param(t, m, id=f"{t}-vs-{m}") for t in WIRE for m in MODELS],
)
def test_each_model_against_each_technique(technique: str, model: str) -> None:
    box = censor(**MODELS[model])
    accepted = feed(box, *WIRE[technique])
    (event,) = box.events
    if model in FOOLED[technique]:
        assert event.verdict == "pass" and event.sni != "web.telegram.org", event
        assert all(accepted)
    else:
        assert event.sni == "web.telegram.org" and event.verdict == "reset (telegram-sni)"
        assert accepted[-1] is False  # the packet that showed the name is dropped


def test_a_reset_goes_to_both_ends_where_each_expects_the_next_byte() -> None:
    box = censor()
    box.packet(parse(tcp(ISN, flags=SYN)))
    decision = box.packet(parse(tcp(ISN + 1, HELLO)))
    assert not decision.accept
    (to_client, c), (to_server, s) = decision.inject
    assert (to_client, to_server) == (str(CLIENT), str(SERVER))
    assert parse(c).seq == 5000 and parse(c).flags & RST  # what the server acknowledged
    assert parse(s).seq == ISN + 1 and parse(s).dst == SERVER


def test_the_verdict_holds_for_the_flow() -> None:
    box = censor()
    assert feed(box, tcp(ISN + 1, HELLO), tcp(ISN + 1, HELLO), tcp(ISN + 1 + len(HELLO))) == [
        False, False, False,
    ]  # fmt: skip
    passing = censor()
    hello = record(client_hello(b"control.lab.test"))
    assert feed(passing, tcp(ISN + 1, hello), tcp(ISN + 1 + len(hello), b"x" * 100)) == [
        True, True,
    ]  # fmt: skip


def test_segments_wait_for_a_gap_to_close_when_the_box_reorders() -> None:
    box = censor()
    feed(box, tcp(ISN + 1 + 50, HELLO[50:]))
    assert box.events == []  # waiting for bytes 0-49
    box.packet(parse(tcp(ISN + 1, HELLO[:50])))
    assert box.events[0].sni == "web.telegram.org"


def test_after_ten_packets_without_a_hello_it_decides_on_what_it_has() -> None:
    box = censor()
    feed(box, *(tcp(ISN + 1 + i, b"\x16") for i in range(9)))
    assert box.events == []
    box.packet(parse(tcp(ISN + 10, b"\x03")))
    assert box.events[0].verdict == "pass"


def test_no_policy_no_censor() -> None:
    box = PacketCensor(None)
    assert box.packet(parse(tcp(ISN + 1, HELLO))).accept and box.events == []


def test_only_reset_and_drop_at_packet_level() -> None:
    with pytest.raises(ValueError, match="resets or drops"):
        PacketPolicy((Rule("throttle", sni="x.org", rate=1000),))


# --- the scenario keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dpi]\nreorder = false\n", 'dpi.reorder: only for level = "packets"'),
        ('[dpi]\nlevel = "packets"\nurgent = "drop"\n', "dpi.urgent"),
        ('[dpi]\nlevel = "wire"\n', "dpi.level"),
        ('[dpi]\nlevel = "packets"\nresidual_ban = "30s"\n', "dpi.residual_ban"),
        (
            '[dpi]\nlevel = "packets"\n[[rule]]\naction = "throttle"\nsni = "x.org"\nrate = 10\n',
            "rule[0]",
        ),
        ("system_resolver = 1\n", "system_resolver"),
        ('[[expect]]\nservice = "signal"\nroute = "direct"\npending = 1\n', "expect[0].pending"),
    ],
)
def test_packet_scenario_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(text, "bad")
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_the_stream_censor_leaves_name_rules_to_the_packet_censor() -> None:
    from helper.lab.hosts import HostTable

    text = (
        '[dpi]\nlevel = "packets"\nreorder = false\n'
        '[[rule]]\naction = "reset"\nsni = "telegram.org"\n'
        '[[rule]]\naction = "drop"\nservices = ["telegram"]\n'
    )
    scenario = parse_scenario(text, "mixed")
    table = HostTable()
    assert [r.action for r in scenario.policy(table).rules] == ["drop"]
    packets = scenario.packet_policy(table)
    assert [r.sni for r in packets.rules] == ["telegram.org"]
    assert packets.model == PacketModel(Depth.FULL, reorder=False)
    assert scenario.needs_netns
    assert parse_scenario("", "plain").packet_policy(table) is None
