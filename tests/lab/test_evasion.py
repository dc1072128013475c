"""Each evasion technique against each kind of DPI, in the kernel-level lab: the packet
censor reads the client's packets one hop away and resets flows that name telegram.org; the
client is detour's own chain (no engine), doing a TLS handshake with web.telegram.org.

For every (technique, DPI) cell the test asserts two things that do not depend on timing:
whether the handshake completed (the server got the real ClientHello and answered it), and
what the packet censor read for that flow (the server name, its verdict, the low-TTL segments
it skipped, the urgent bytes it took out). The table is docs/lab.md's.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import pytest_asyncio

from helper.lab.netns import NetnsLab
from tests.lab.conftest import free_network, require_netns
from transports import DialOptions, Endpoint, parse_chain
from transports.base import DialError
from transports.resolver import StaticResolver
from transports.tls import tls_connect

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAME = "web.telegram.org"
DPIS = (
    "dpi-first-segment",
    "dpi-first-record",
    "dpi-arrival-order",
    "dpi-urgent-inline",
    "dpi-first-hello-wins",
    "dpi-strict",
)
# technique -> the DPIs it gets past (✓ in docs/lab.md's table); it fails against the rest
PASSES = {
    "direct": (),
    "split:1": ("dpi-first-segment",),
    "tlsfrag:sni": ("dpi-first-segment", "dpi-first-record"),
    "disorder:sni": ("dpi-first-segment", "dpi-arrival-order"),
    "oob:sni": ("dpi-first-segment", "dpi-first-record", "dpi-arrival-order", "dpi-urgent-inline"),
    "fake:ttl=2": ("dpi-first-segment", "dpi-first-record", "dpi-arrival-order",
                   "dpi-first-hello-wins"),
    # composed: the packet trick and the records together
    "disorder:sni | tlsfrag:sni": ("dpi-first-segment", "dpi-first-record", "dpi-arrival-order"),
}  # fmt: skip
CASES = [
    pytest.param(dpi, technique, dpi in passes, id=f"{dpi}:{technique}")
    for technique, passes in PASSES.items()
    for dpi in DPIS
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab():
    require_netns()
    async with NetnsLab("baseline", network=free_network(kernel=True)) as kernel:
        yield kernel


async def handshake(lab: NetnsLab, chain: str) -> tuple[str, DialError | None]:
    """A TLS handshake with web.telegram.org through `chain`: the client's address:port
    (how the packet censor names the flow) and the error, if it failed."""
    options = DialOptions(resolver=StaticResolver(lab.table.dns_table()), connect_timeout=3)
    stream = await parse_chain(chain).build(options).dial(Endpoint(NAME, 443))
    host, port = stream.get_extra_info("sockname")[:2]
    context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
    try:
        tls = await tls_connect(stream, context, NAME, timeout=3)
    except DialError as exc:
        return f"{host}:{port}", exc
    tls.close()
    return f"{host}:{port}", None


async def read_by_censor(lab: NetnsLab, client: str) -> dict[str, Any]:
    events = [e for e in await lab.packet_events() if e["client"] == client]
    assert len(events) == 1, events
    return events[0]


@pytest.mark.parametrize("dpi, technique, passes", CASES)
async def test_technique_against_dpi(lab: NetnsLab, dpi: str, technique: str, passes: bool) -> None:
    if lab.scenario.name != dpi:
        await lab.set_scenario(dpi)
    client, error = await handshake(lab, technique)
    seen = await read_by_censor(lab, client)
    model = lab.scenario.packet_model
    assert model is not None
    if passes:
        assert error is None, f"{error} (the censor read {seen})"
        assert seen["verdict"] == "pass" and seen["sni"] != NAME, seen
    else:
        assert error is not None and error.failure.value == "connection_reset", error
        assert seen["sni"] == NAME and seen["verdict"].startswith("reset"), seen
    if technique.startswith("fake"):
        # The decoy reached the censor: read as the first hello, or skipped for its TTL.
        assert seen["sni"] == ("www.example.com" if passes else NAME)
        assert seen["ignored"] == (1 if model.check_ttl else 0)
    if technique.startswith("oob"):
        assert seen["urgent"] == (1 if model.urgent == "skip" else 0)


async def test_a_decoy_that_expires_before_the_censor_fools_nothing(lab: NetnsLab) -> None:
    await lab.set_scenario("dpi-first-hello-wins")
    client, error = await handshake(lab, "fake:ttl=1")  # dies at the gateway, hop 1
    assert error is not None and error.failure.value == "connection_reset"
    seen = await read_by_censor(lab, client)
    assert seen["sni"] == NAME  # it read the real hello: the decoy never reached it


async def test_a_decoy_that_reaches_the_server_breaks_the_handshake(lab: NetnsLab) -> None:
    await lab.set_scenario("dpi-first-hello-wins")
    client, error = await handshake(lab, "fake:ttl=3")  # outlives both hops
    seen = await read_by_censor(lab, client)
    assert seen["sni"] == "www.example.com" and seen["verdict"] == "pass"  # fooled...
    assert error is not None and error.failure.value != "connection_reset"  # ...but useless


async def test_every_technique_works_where_nothing_is_blocked(lab: NetnsLab) -> None:
    await lab.set_scenario("baseline")
    for technique in [*PASSES, "fake:ttl=2,100,name=www.iana.org"]:
        _, error = await handshake(lab, technique)
        assert error is None, f"{technique}: {error}"
    assert await lab.packet_events() == []  # the packet censor is out of the path
