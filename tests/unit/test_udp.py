"""UDP without sockets: which routes carry datagrams (and why not), UDP probe targets as
written in a service, UDP health's order, and the SOCKS5 UDP header and STUN codecs on
exact bytes."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest

from helper.routing.udp_health import UdpHealth
from helper.services import UdpProbeTarget
from transports import DialOptions, Endpoint, parse_chain
from transports.core.datagrams import CoreDatagrams
from transports.datagram import (
    DirectDatagrams,
    NoDatagrams,
    Socks5Datagrams,
    datagram_dialer,
    udp_refusal,
)
from transports.stun import binding_response, parse_message
from transports.udp import Datagram, encode_datagram, parse_datagram
from transports.wire import ProtocolError

_UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"


def _dialer(chain: str):
    parsed = parse_chain(chain)
    return datagram_dialer("r", parsed, parsed.build(DialOptions()))


@pytest.mark.parametrize(
    ("chain", "kind"),
    [
        ("direct", DirectDatagrams),
        ("resolve:doh=https://1.1.1.1/dns-query", DirectDatagrams),
        ("socks5://127.0.0.1:1080", Socks5Datagrams),
        ("socks5://alice:pw@127.0.0.1:1080", Socks5Datagrams),
        (f"vless://{_UUID}@192.0.2.1:443?type=ws&security=tls&sni=a.example", CoreDatagrams),
        (f"vmess://{_UUID}@192.0.2.1:443?type=tcp&security=tls", CoreDatagrams),
        ("trojan://pw@192.0.2.1:443?sni=a.example", CoreDatagrams),
        (f"direct | vless://{_UUID}@192.0.2.1:443?type=tcp&security=tls", CoreDatagrams),
    ],
)
def test_routes_that_carry_udp(chain: str, kind) -> None:
    assert isinstance(_dialer(chain), kind)
    assert udp_refusal(parse_chain(chain)) is None


@pytest.mark.parametrize(
    ("chain", "why"),
    [
        ("http://127.0.0.1:3128", "HTTP CONNECT proxy carries TCP only"),
        ("socks4a://127.0.0.1:1080", "SOCKS4a has no UDP"),
        ("tlsfrag:sni", "tlsfrag shapes TLS records"),
        ("split:1", "split shapes TCP segments"),
        ("tlsfrag:sni | tgws", "tlsfrag"),
        ("socks5://127.0.0.1:1 | socks5://127.0.0.1:2", "one SOCKS5 upstream at most"),
        ("socks5://127.0.0.1:1 | tlsfrag:sni", "tlsfrag"),
        (f"vless://{_UUID}@192.0.2.1:443?security=tls | tlsfrag:sni", "proxy core"),
        (f"vless://{_UUID}@192.0.2.1:443?security=tls | socks5://127.0.0.1:1", "proxy core"),
    ],
)
def test_routes_that_carry_no_udp_say_why(chain: str, why: str) -> None:
    with pytest.raises(NoDatagrams) as err:
        _dialer(chain)
    assert "route 'r'" in str(err.value) and why in str(err.value)
    refusal = udp_refusal(parse_chain(chain))
    assert refusal is not None and why in refusal


def test_direct_datagrams_keep_the_dialers_source_address() -> None:
    parsed = parse_chain("direct")
    from transports.direct import DirectDialer

    dialer = datagram_dialer("r", parsed, DirectDialer(local_address="127.0.0.2"))
    assert isinstance(dialer, DirectDatagrams) and dialer.local_address == "127.0.0.2"


@pytest.mark.parametrize(
    ("text", "kind", "endpoint"),
    [
        ("stun://stun.example", "stun", Endpoint("stun.example", 3478)),
        ("stun://192.0.2.1:19302", "stun", Endpoint("192.0.2.1", 19302)),
        ("udp-echo://[2001:db8::1]:1400", "udp-echo", Endpoint("2001:db8::1", 1400)),
    ],
)
def test_udp_probe_targets(text: str, kind: str, endpoint: Endpoint) -> None:
    target = UdpProbeTarget.parse(text)
    assert (target.kind, target.endpoint) == (kind, endpoint)
    assert UdpProbeTarget.parse(str(target)) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp://h:1", "unknown UDP probe kind"),
        ("udp-echo://h", "need a port"),
        ("stun://h:0", "port 0"),
        ("stun://h/path", "no path"),
        ("stun://", "missing host"),
    ],
)
def test_bad_udp_probe_targets(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UdpProbeTarget.parse(text)


@dataclass
class _R:
    name: str


def test_udp_health_orders_known_good_first_and_dropped_last() -> None:
    health = UdpHealth()
    routes = [_R("direct"), _R("web"), _R("abroad")]
    health.record("calls", "direct", False)
    health.record("calls", "abroad", True)
    assert [r.name for r in health.order("calls", routes)] == ["abroad", "web", "direct"]
    assert [r.name for r in health.order("other", routes)] == ["direct", "web", "abroad"]


def test_udp_health_keeps_the_latest_row_and_carries_it_over_a_reload() -> None:
    health = UdpHealth()
    row = {"route": "direct", "ok": False, "diagnosis": "udp_dropped", "detail": "x",
           "rtt_ms": None, "targets": []}  # fmt: skip
    health.record("calls", "direct", False, row)
    health.record("calls", "web", False)  # a verdict without a row: not shown
    (view,) = health.latest().values()
    assert (view.ok, view.diagnosis) == (False, "udp_dropped")
    assert view.to_json() == {**row, "checked_at": round(view.checked_at, 3)}
    fresh = UdpHealth()
    fresh.record("calls", "direct", True, {**row, "ok": True, "diagnosis": "ok"})
    fresh.adopt(health)  # what the new router learnt already wins
    assert fresh.get("calls", "direct") is True and fresh.get("calls", "web") is False
    assert fresh.latest()[("calls", "direct")].diagnosis == "ok"


V4 = Datagram(0, Endpoint("127.0.0.1", 7), b"hi")
NAME = Datagram(2, Endpoint("a.example", 3478), b"")
V6 = Datagram(0, Endpoint("::1", 443), b"x")


@pytest.mark.parametrize(
    ("wire", "datagram"),
    [
        #  RSV   FRAG ATYP=1 127.0.0.1        :7        data
        (b"\0\0" b"\0" b"\x01\x7f\0\0\x01" b"\0\x07" b"hi", V4),
        #  RSV   FRAG ATYP=3 len 9 "a.example"  :3478
        (b"\0\0" b"\x02" b"\x03\x09a.example" b"\x0d\x96", NAME),
        #  RSV   FRAG ATYP=4 ::1                   :443
        (b"\0\0" b"\0" b"\x04" + b"\0" * 15 + b"\x01" b"\x01\xbb" b"x", V6),
    ],
)  # fmt: skip
def test_udp_header_wire(wire: bytes, datagram: Datagram) -> None:
    assert parse_datagram(wire) == datagram
    assert encode_datagram(datagram.address, datagram.payload, datagram.frag) == wire


@pytest.mark.parametrize(
    "wire",
    [
        b"\0\0\0",  # shorter than a header
        b"\0\x01\0\x01\x7f\0\0\x01\0\x07",  # RSV not zero
        b"\0\0\0\x02\x7f\0\0\x01\0\x07",  # ATYP 2
        b"\0\0\0\x01\x7f\0\0",  # address cut short
        b"\0\0\0\x03\x00\0\x07",  # empty name
        b"\0\0\0\x03\x03a b\0\x07",  # a blank in the name
        b"\0\0\0\x03\x02\xc3\xa9\0\x07",  # not ASCII
    ],
)
def test_bad_udp_headers(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_datagram(wire)


def test_stun_binding_response_bytes() -> None:
    # RFC 5769 §2.2's mapped address 192.0.2.1:32853 XORed with the cookie.
    transaction = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    wire = binding_response(transaction, Endpoint("192.0.2.1", 32853))
    assert wire[:2] == b"\x01\x01" and wire[4:8] == b"\x21\x12\xa4\x42"
    #            XOR-MAPPED-ADDRESS len 8: 00 01 X-PORT a147 X-ADDR e112a643
    assert wire[20:] == bytes.fromhex("0020000800 01a147e112a643".replace(" ", ""))
    assert parse_message(wire).mapped == Endpoint("192.0.2.1", 32853)


def test_original_destination_from_ip_origdstaddr() -> None:
    from helper.proxy.tproxy_udp import IP_RECVORIGDSTADDR, SOL_IP, original_destination

    #        sockaddr_in: family (host order)  port 3478  10.82.0.2     zero padding
    sockaddr = (2).to_bytes(2, "little") + b"\x0d\x96" + b"\x0a\x52\x00\x02" + b"\0" * 8
    assert original_destination([(SOL_IP, IP_RECVORIGDSTADDR, sockaddr)]) == Endpoint(
        "10.82.0.2", 3478
    )
    assert original_destination([]) is None
    assert original_destination([(SOL_IP, IP_RECVORIGDSTADDR, b"\x02\x00")]) is None


def test_original_destination_from_ipv6_origdstaddr() -> None:
    from helper.proxy.tproxy_udp import IPV6_RECVORIGDSTADDR, SOL_IPV6, original_destination

    def sockaddr_in6(address: str, port: int) -> bytes:
        #      family (host order)              port            flowinfo
        return (
            (10).to_bytes(2, "little")
            + port.to_bytes(2, "big")
            + b"\0" * 4
            + (
                socket.inet_pton(socket.AF_INET6, address) + b"\0" * 4  # address, scope id
            )
        )

    found = original_destination(
        [(SOL_IPV6, IPV6_RECVORIGDSTADDR, sockaddr_in6("fd00:82::2", 3478))]
    )
    assert found == Endpoint("fd00:82::2", 3478)
    # An IPv4 datagram's destination seen through a dual-stack socket: the IPv4 address.
    mapped = sockaddr_in6("::ffff:10.82.0.2", 7000)
    found = original_destination([(SOL_IPV6, IPV6_RECVORIGDSTADDR, mapped)])
    assert found == Endpoint("10.82.0.2", 7000)
    assert original_destination([(SOL_IPV6, IPV6_RECVORIGDSTADDR, mapped[:20])]) is None


def _result(route: str, diagnosis: str):
    from helper.probe.udp import UdpProbeResult

    return UdpProbeResult("calls", route, diagnosis == "ok", diagnosis, f"{route} said so")


@pytest.mark.parametrize(
    ("diagnoses", "verdict"),
    [
        ({"direct": "udp_dropped", "abroad": "ok"}, "udp_works"),
        ({"direct": "udp_dropped", "abroad": "udp_dropped", "web": "udp_not_carried"},
         "udp_dropped_everywhere"),
        ({"web": "udp_not_carried"}, "udp_not_carried"),
        ({}, "udp_not_carried"),
        ({"direct": "udp_dropped", "abroad": "udp_unreachable"}, "udp_unreachable"),
    ],
)  # fmt: skip
def test_udp_verdict_over_a_services_routes(diagnoses: dict[str, str], verdict: str) -> None:
    from helper.probe.udp import udp_verdict

    found, detail = udp_verdict([_result(r, d) for r, d in diagnoses.items()])
    assert found == verdict
    if verdict == "udp_unreachable":
        assert "abroad: abroad said so" in detail


def test_config_check_says_which_routes_carry_udp() -> None:
    from helper.config import parse_config
    from helper.config_commands import _udp_line
    from tests.conftest import config_text

    text = config_text(
        routes={
            "own": f"vless://{_UUID}@192.0.2.1:443?type=tcp&security=tls&sni=a.example",
            "web": "http://127.0.0.1:3128",
        }
    )
    line = _udp_line(parse_config(text))
    carried, _, not_carried = line.partition("; not: ")
    assert "own" in carried.split(", ")
    assert "web (an HTTP CONNECT proxy carries TCP only)" in not_carried


def test_a_route_that_says_udp_false_carries_none() -> None:
    # A SOCKS5 proxy that refuses UDP ASSOCIATE (a local Tor): skipped for datagrams, and
    # config check and the status say why.
    from helper.config import parse_config
    from helper.config_commands import _udp_line
    from helper.routing.route import build_routes

    text = (
        '[[route]]\nname = "tor"\nchain = "socks5://127.0.0.1:9050"\n'
        'udp = false\n[[route]]\nname = "other"\nchain = "socks5://127.0.0.1:1081"\n'
    )
    config = parse_config(text)
    assert "tor (its [[route]] says udp = false)" in _udp_line(config)
    assert "other" in _udp_line(config).partition("; not: ")[0].split(", ")
    tor, other = build_routes(config, None)
    assert (tor.udp, other.udp) == (False, True)
    with pytest.raises(NoDatagrams, match=r"route 'tor' .*udp = false"):
        datagram_dialer(tor.name, tor.chain, tor.dialer, off=not tor.udp)
    datagram_dialer(other.name, other.chain, other.dialer, off=not other.udp)


def test_the_built_in_tor_routes_carry_no_udp() -> None:
    from helper.config import parse_config
    from helper.config.load import default_config_text

    routes = {r.name: r for r in parse_config(default_config_text()).routes}
    assert not routes["local-tor"].udp and not routes["local-tor-browser"].udp
    assert routes["direct"].udp
