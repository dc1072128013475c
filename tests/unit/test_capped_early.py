"""The early hello of the capped mode (transports/fronted/capped.py), without sockets: the
client's provisional allowance and its confirm (modes.py), and the relay's carrier that
waits for the confirm with its provisional allowance spent (helper/relay/carriers.py)."""

from __future__ import annotations

from types import SimpleNamespace

from helper.relay.carriers import _Link
from transports.fronted.capped import (
    CARRIER_PROTOCOL,
    CARRIER_PROTOCOL_EARLY,
    DEFAULT_BUDGET,
    HOLD,
    MARGIN,
    REMEASURE,
    SLACK,
    parse_confirm,
)
from transports.fronted.modes import CarrierMode
from transports.fronted.session import HEADER


class FakeWs:
    def __init__(self, protocol: str = CARRIER_PROTOCOL_EARLY, answer: int = 200) -> None:
        self.subprotocol = protocol
        self.answer_size = answer
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


def _mode() -> CarrierMode:
    dialer = SimpleNamespace(key=SimpleNamespace(front="cdn.test"), handshake_timeout=5.0)
    return CarrierMode(dialer, "capped")  # type: ignore[arg-type]


def _measured(mode: CarrierMode, tls: int = 500, after: int = 900, answer: int = 200) -> int:
    counted = SimpleNamespace(received=after)
    return mode._measure(FakeWs(answer=answer), counted, tls)  # type: ignore[arg-type]


async def test_the_first_carrier_measures_and_the_next_ones_go_early() -> None:
    mode = _mode()
    assert mode._early_allowance(500) is None  # nothing known of the relay or the front
    assert _measured(mode) == DEFAULT_BUDGET - 900 - MARGIN
    assert mode.relay_early is True
    early = mode._early_allowance(500)
    assert early == DEFAULT_BUDGET - 500 - 400 - SLACK - MARGIN - HOLD
    ws = FakeWs(answer=200)
    final = mode._confirm(ws, early)
    assert final == early + HOLD  # the answer as large as before
    assert parse_confirm(ws.written[0]) == (4, final)


async def test_an_answer_that_grew_takes_its_growth_off_and_is_measured_again() -> None:
    mode = _mode()
    _measured(mode, tls=500, after=900, answer=200)
    early = mode._early_allowance(500)
    assert early is not None
    final = mode._confirm(FakeWs(answer=200 + 700), early)
    # Every byte the front sends on this carrier stays within the budget.
    assert 500 + (400 + 700) + final + MARGIN <= DEFAULT_BUDGET
    assert mode._early_allowance(500) is None  # measured again first
    _measured(mode, tls=500, after=1600, answer=900)
    assert mode._early_allowance(500) == DEFAULT_BUDGET - 500 - 1100 - SLACK - MARGIN - HOLD


async def test_an_answer_that_grew_past_hold_stops_early_hellos_for_a_while() -> None:
    mode = _mode()
    _measured(mode)
    early = mode._early_allowance(500)
    assert early is not None
    mode._confirm(FakeWs(answer=200 + HOLD + 1), early)
    _measured(mode)  # measured again, yet no early hello for a while
    assert mode._early_allowance(500) is None


async def test_the_answer_is_measured_again_every_so_many_carriers() -> None:
    mode = _mode()
    _measured(mode)
    for _ in range(REMEASURE):
        early = mode._early_allowance(500)
        assert early is not None
        mode._confirm(FakeWs(), early)
    assert mode._early_allowance(500) is None


async def test_offers_and_the_relays_choice() -> None:
    mode = _mode()
    assert mode._offer(False) == [CARRIER_PROTOCOL_EARLY, CARRIER_PROTOCOL]
    assert mode._offer(True) == [CARRIER_PROTOCOL_EARLY]
    mode.offer_early = False
    assert mode._offer(False) == [CARRIER_PROTOCOL]
    _ = mode._measure(FakeWs(protocol=CARRIER_PROTOCOL), SimpleNamespace(received=900), 500)  # type: ignore[arg-type]
    assert mode.relay_early is False  # a relay of /1 only: never an early hello
    assert mode._early_allowance(500) is None


async def test_an_early_carrier_of_a_relay_that_changed_fails_and_asks_again() -> None:
    import pytest

    from transports.base import DialError

    mode = _mode()
    _measured(mode)
    early = mode._early_allowance(500)
    ws = FakeWs(protocol=CARRIER_PROTOCOL)
    with pytest.raises(DialError):
        mode._confirm(ws, early)  # type: ignore[arg-type]
    assert ws.aborted and mode.relay_early is None


def test_the_relay_waits_for_the_confirm_with_its_provisional_allowance_spent() -> None:
    link = _Link(ws=SimpleNamespace(write=lambda data: None), allowance=1000, confirmed=False)  # type: ignore[arg-type]
    assert link.usable
    link.used = 1000 - 2 * (HEADER.size + 64)
    assert not link.usable and not link.ended  # waits: the relay sends on the next one
    link.confirm(3000)
    assert link.usable and link.room > 0
    link.confirm(500)  # less than it sent already: it ends (the END fits in the margin)
    assert link.usable and link.room < HEADER.size + 1


def _filled(mode: CarrierMode, excess: int) -> None:
    margin = mode.margin()
    link = SimpleNamespace(
        budget=DEFAULT_BUDGET, margin=margin, counted=SimpleNamespace(received=0)
    )
    link.counted.received = DEFAULT_BUDGET - margin + excess
    mode._retired(link)  # type: ignore[arg-type]


async def test_the_margin_follows_the_framing_seen_on_filled_carriers() -> None:
    from transports.fronted.capped import MARGIN_FLOOR, MEASURED

    mode = _mode()
    for _ in range(MEASURED - 1):
        _filled(mode, -300)
    assert mode.margin() == MARGIN  # not enough seen yet
    _filled(mode, -5000)  # one the relay did not fill (the client ended it): not counted
    assert mode.margin() == MARGIN
    _filled(mode, -300)
    assert mode.margin() == MARGIN_FLOOR  # the relay's own count covered the framing
    _filled(mode, 200)  # a front that framed more: its excess, and the floor, kept back
    assert mode.margin() == 200 + MARGIN_FLOOR
    _filled(mode, 5000)
    assert mode.margin() == MARGIN  # never more than MARGIN


class ScriptedWs:
    """A relay's side of a carrier: reads what the test feeds, records what is written."""

    def __init__(self) -> None:
        import asyncio

        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.writes: list[bytes] = []

    async def read(self, n: int = 65536) -> bytes:
        return await self.incoming.get()

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.incoming.put_nowait(b"")

    def abort(self) -> None:
        self.close()


async def test_the_relay_sends_no_more_than_the_provisional_allowance_before_the_confirm() -> None:
    import asyncio

    from helper.relay.carriers import CarrierHub
    from tests.support.waiting import until
    from transports.fronted.capped import (
        WRITE_COST,
        encode_confirm,
        encode_hello,
    )

    async def serve(stream, name) -> None:  # type: ignore[no-untyped-def]
        stream.write(bytes(48 * 1024))  # more than any carrier may carry
        await stream.ended.wait()

    hub = CarrierHub(serve, per_client=4)
    ws = ScriptedWs()
    ident = bytes(range(16))
    ws.incoming.put_nowait(encode_hello(ident, new=True, allowance=3000, early=True))
    task = asyncio.ensure_future(hub.carrier(ws, "bob", CARRIER_PROTOCOL_EARLY))  # type: ignore[arg-type]
    try:
        await until(lambda: ident in hub.sessions and hub.sessions[ident].links)
        link = hub.sessions[ident].links[0]
        await until(lambda: not link.usable)  # it filled the provisional allowance: it waits
        sent = sum(len(w) + WRITE_COST for w in ws.writes[1:])  # after the welcome
        assert 2000 < sent <= 3000 and not link.ended
        ws.incoming.put_nowait(encode_confirm(9000))
        await until(lambda: link.ended)
        sent = sum(len(w) + WRITE_COST for w in ws.writes[1:])
        assert 8000 < sent <= 9000
    finally:
        ws.close()
        await task
        await hub.aclose()
