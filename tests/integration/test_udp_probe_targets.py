"""Where UDP probe targets come from (docs/udp.md, "Probe targets for the services' calls"):
the built-in services have none (the public facts detour's defaults come from name no STUN
or call relay address for Telegram, WhatsApp or Signal); a user's file gives a built-in
service its own and keeps the rest of it. And a probe says `ok` only for the answer it
asked for: a STUN request echoed back, a plain datagram sent to a STUN server, a port where
nothing answers are each `udp_dropped` with a "no answer" detail, against the lab's STUN
mock and UDP echo on loopback."""

from __future__ import annotations

import socket

import pytest

from helper.config import ConfigError
from helper.config.load import load_config
from helper.lab.udpmocks import StunServer, UdpEcho, start_udp
from helper.probe.udp import probe_udp, udp_verdict
from helper.routing import Route
from helper.services import UdpProbeTarget
from transports import Endpoint, parse_chain
from transports.direct import DirectDialer

SERVICES = ("telegram", "whatsapp", "signal")


def _service(config, name: str):
    return next(s for s in config.services if s.name == name)


def test_the_built_in_services_have_no_udp_probes() -> None:
    config = load_config(None)
    for name in SERVICES:
        assert _service(config, name).udp_probes == (), name


def test_a_users_file_gives_a_built_in_service_its_targets(tmp_path) -> None:
    file = tmp_path / "detour.toml"
    file.write_text(
        '[[service]]\nname = "telegram"\n'
        'udp_probes = ["stun://stun.example.net", "udp-echo://192.0.2.10:1400"]\n'
    )
    config = load_config(file)
    telegram, built_in = _service(config, "telegram"), _service(load_config(None), "telegram")
    assert [str(t) for t in telegram.udp_probes] == [
        "stun://stun.example.net:3478",
        "udp-echo://192.0.2.10:1400",
    ]
    assert telegram.cidrs == built_in.cidrs and telegram.probes == built_in.probes
    assert _service(config, "whatsapp").udp_probes == ()


def test_a_bad_target_is_an_error_naming_the_key(tmp_path) -> None:
    file = tmp_path / "detour.toml"
    file.write_text('[[service]]\nname = "signal"\nudp_probes = ["udp-echo://192.0.2.1"]\n')
    with pytest.raises(ConfigError, match="udp_probes") as raised:
        load_config(file)
    assert "need a port" in str(raised.value)


@pytest.fixture
async def mocks():
    stun, echo = await start_udp(StunServer()), await start_udp(UdpEcho())
    yield stun, echo
    stun.close()
    echo.close()


def _direct() -> Route:
    return Route("direct", parse_chain("direct"), DirectDialer())


def _silent_port() -> Endpoint:
    """A loopback UDP port with a socket that never answers (bound, never read)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    _SILENT.append(sock)
    return Endpoint("127.0.0.1", sock.getsockname()[1])


_SILENT: list[socket.socket] = []


def _closed_port() -> Endpoint:
    """A loopback UDP port nobody holds: the kernel answers ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return Endpoint("127.0.0.1", sock.getsockname()[1])


async def test_the_stun_mock_answers_a_stun_probe(mocks) -> None:
    stun, _ = mocks
    result = await probe_udp("calls", _direct(), [UdpProbeTarget("stun", stun.address)], 3.0)
    assert result.ok and result.diagnosis == "ok" and result.rtt_ms is not None


@pytest.mark.parametrize("case", ["stun-echoed", "echo-to-stun", "silent", "closed", "one-of-two"])
async def test_what_is_not_the_answer_is_no_answer(mocks, case) -> None:
    """Never a false "works": an echo of the STUN request is no binding response; a STUN
    server does not echo; a port that keeps quiet; a port nobody holds (ICMP unreachable);
    one target of two unanswered."""
    stun, echo = mocks
    targets = {
        "stun-echoed": [UdpProbeTarget("stun", echo.address)],
        "echo-to-stun": [UdpProbeTarget("udp-echo", stun.address)],
        "silent": [UdpProbeTarget("stun", _silent_port())],
        "closed": [UdpProbeTarget("stun", _closed_port())],
        "one-of-two": [UdpProbeTarget("stun", stun.address), UdpProbeTarget("stun", echo.address)],
    }[case]
    try:
        result = await probe_udp("calls", _direct(), targets, 0.6)
    finally:
        while _SILENT:
            _SILENT.pop().close()
    assert not result.ok and result.diagnosis == "udp_dropped", result
    assert "no answer to 3 datagrams" in result.detail and result.rtt_ms is None
    assert udp_verdict([result])[0] == "udp_dropped_everywhere"
