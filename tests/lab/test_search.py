"""The strategy search in the lab: on each DPI scenario it finds the technique that works
there (the kernel-level lab for the packet tricks), on a scenario where nothing serverless
works it ends with one verdict per service, it keeps the handshake budget (counted at the
lab's censor, in front of every server), and connections keep their route while it runs."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import ssl
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helper.api import status_document
from helper.config import Config, parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from helper.lab.netns import NetnsLab
from helper.routing.state import HealthStore, network_id
from helper.search.budget import Booking
from tests.lab.conftest import free_network, require_netns
from tests.support.unhurried import SLOW, unhurried
from tests.support.waiting import loop_lag, until
from transports import Endpoint
from transports.tls import tls_connect

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVICES = ("telegram", "whatsapp", "signal")
NOTHING_WORKS = "the network reads the server name however the ClientHello is cut"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def userland() -> AsyncIterator[Lab]:
    async with Lab("baseline", network=free_network(kernel=False)) as lab:
        yield lab


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kernel() -> AsyncIterator[NetnsLab]:
    require_netns()
    async with NetnsLab("baseline", network=free_network(kernel=True)) as lab:
        yield lab


def lab_config(lab: Lab | NetnsLab, *, budget: bool = False) -> Config:
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
    if budget:  # the built-in budget (the lab's config turns it off for quick probing)
        config = dataclasses.replace(config, probe=dataclasses.replace(config.probe, handshakes=3))
    return config


async def search(lab: Lab | NetnsLab, tmp_path: Path, **kwargs):
    engine = Engine(
        lab_config(lab, **kwargs), probe_on_start=False, store=HealthStore(tmp_path), network="lab"
    )
    try:
        report = await engine.search.run(engine.router.services)
        return report, engine.router.found, HealthStore(tmp_path).load_strategies("lab")
    finally:
        await engine.stop()


async def test_records_win_where_the_dpi_reads_one_record(userland: Lab, tmp_path: Path) -> None:
    await userland.set_scenario("sni-reset")
    report, found, kept = await search(userland, tmp_path)
    for name in SERVICES:
        winner = report.winner(name)
        assert winner is not None and winner.chain == "tlsfrag:sni", report.services[name].verdict
        assert found[name] == ["found-tlsfrag-sni"]  # a route of the running router
        assert kept[name] == [{"route": "found-tlsfrag-sni", "chain": "tlsfrag:sni"}]
        result = report.results[name]
        assert result.ok and result.route == "found-tlsfrag-sni"


async def test_nothing_serverless_works_one_verdict_and_the_budget_held(
    userland: Lab, tmp_path: Path
) -> None:
    """A full search (every candidate fails) with the built-in budget: per server name, no
    two handshakes closer than the gap and never more than 3 within a second, as the lab's
    censor saw them arrive."""
    await userland.set_scenario("sni-reset-reassembling")
    assert userland.censor is not None
    began = time.monotonic()
    async with loop_lag() as lag:
        report, found, kept = await search(userland, tmp_path, budget=True)
    for name in SERVICES:
        searched = report.services[name]
        assert searched.winner is None and searched.done
        assert searched.verdict.startswith(NOTHING_WORKS), searched.verdict
        assert len(searched.tried) >= 10  # it did search
    assert found == {} and kept == {}
    # The services' server names (an encrypted resolver's own connections are its own).
    names = {
        target.endpoint.host
        for service in lab_config(userland).services
        for target in service.probes
        if target.kind in ("tls", "https")
    }
    arrivals: dict[str, list[float]] = defaultdict(list)
    for event in userland.censor.events:
        if event.accepted >= began and event.seen.sni in names:
            # when the connection arrived (what it takes to read its hello varies: a decoy
            # or a held-back segment can take its retransmission time)
            arrivals[event.seen.sni].append(event.accepted)
    assert arrivals["web.telegram.org"] and arrivals["chat.signal.org"]
    for name, times in arrivals.items():
        times.sort()
        # 0.4 s apart at the client; what reaches the censor (on the same loop) can be closer
        # by a little, or on a busy machine by twice the loop's worst lateness: the first
        # handshake's dial can resume late after its grant and its arrival be read late,
        # each by up to that lateness, while the next one is on time
        closest = min((b - a for a, b in itertools.pairwise(times)), default=1.0)
        assert closest >= 0.4 - max(0.15, 2 * lag[0]), (name, times, lag[0])
        for i, first in enumerate(times):
            assert len([t for t in times[i:] if t < first + 1.0]) <= 3, (name, times)


async def test_connections_keep_their_route_while_a_search_runs(
    userland: Lab, tmp_path: Path
) -> None:
    """While a search runs (nothing serverless works here), new connections go through the
    route that works (the lab's SOCKS proxy), first and alone: no budget wait, no other
    route tried, a TLS handshake through it succeeds -- one connection after each of the
    search's attempts, so they interleave with its handshakes. (A search of 5 attempts, not
    the built-in 30: how many it makes is not what this shows.)"""
    await userland.set_scenario("sni-reset-reassembling")
    config = unhurried(lab_config(userland, budget=True))
    config = dataclasses.replace(config, search=dataclasses.replace(config.search, attempts=5))
    engine = Engine(config, store=HealthStore(tmp_path), network="lab")
    waits: list[tuple[str, bool, float]] = []  # (name, a client's, how long it waits)
    book = engine.budget.book

    def spy(name: str, now: float, *, client: bool = False, first: bool = False) -> Booking:
        booking = book(name, now, client=client, first=first)
        waits.append((name, client or first, booking.at - now))
        return booking

    def tried() -> int:
        report = engine.search.report
        searched = report.services.get("telegram") if report is not None else None
        return len(searched.tried) if searched is not None else 0

    engine.budget.book = spy  # type: ignore[method-assign]
    # Each of the search's attempts starts once a connection of the loop below has started,
    # so that they interleave however slow the machine: unheld, a search on a busy machine
    # made its attempts while one connection was under way, and fewer of the connections
    # fell within it.
    turns = asyncio.Semaphore(0)
    probe = engine.search.prober.probe

    async def held(service, route, **kwargs):
        if route.name != "direct":  # the search's direct probe is its first verdict
            await turns.acquire()
        return await probe(service, route, **kwargs)

    engine.search.prober.probe = held  # type: ignore[method-assign]
    async with engine:
        telegram = next(s for s in engine.router.services if s.name == "telegram")
        # Once the lab's SOCKS proxy has its full verdict, not an early pass (which ranks
        # after a sure one): on a busy machine the lab's HTTP proxy can pass first, and the
        # route would then move while the connections below are made.
        health = engine.router.health
        await until(
            lambda: (h := health.get("telegram", "lab-socks")).ok and not h.freeze_unsure, SLOW
        )
        best = engine.router.active_route(telegram)
        assert best is not None and best.name == "lab-socks"
        # A race starts its next route when the first is slower than the stagger: on a
        # loaded machine the lab's SOCKS proxy can be. The search's effect is what is shown.
        engine.router.stagger = SLOW
        task = engine.searches.start(["telegram"])
        assert engine.searches.start(["telegram"]) is task  # one search at a time
        context = ssl.create_default_context(cafile=str(userland.ca.ca_path))
        made = during = 0
        while engine.searches.running or made == 0:
            waits.clear()
            searching = engine.searches.running
            seen = tried()
            turns.release()  # the search's next attempt, alongside this connection
            connection = await engine.router.connect(Endpoint("web.telegram.org", 443))
            assert connection.route.name == best.name
            tls = await tls_connect(connection.stream, context, "web.telegram.org", timeout=SLOW)
            tls.close()
            client = [w for w in waits if w[1]]
            assert client == [("web.telegram.org", True, 0.0)]  # first and only attempt
            made += 1
            during += searching and engine.searches.running  # began and ended in the search
            # The next once the search has made one more attempt (or ended).
            await until(lambda seen=seen: tried() > seen or not engine.searches.running, SLOW)
        report = await task
        assert report.services["telegram"].verdict.startswith(NOTHING_WORKS)
        assert len(report.services["telegram"].tried) == 5  # it did search
        assert during >= 3  # connections were made while the search ran
        assert engine.router.active_route(telegram) is best


# --- the kernel-level lab: the packet tricks -------------------------------------------

# scenario -> the technique the search settles on (None: nothing serverless works)
EXPECTED = {
    "dpi-first-segment": "tlsfrag:sni",
    "dpi-first-record": "tlsfrag:sni",
    "dpi-arrival-order": "oob:sni | tlsfrag:sni",
    "dpi-urgent-inline": "oob:sni | tlsfrag:sni",
    "dpi-first-hello-wins": "fake:ttl=2 | tlsfrag:sni",  # the censor is 2 hops away
    "dpi-strict": None,
}


@pytest.mark.parametrize("scenario", EXPECTED)
async def test_the_search_finds_what_works_at_packet_level(
    kernel: NetnsLab, scenario: str, tmp_path: Path
) -> None:
    await kernel.set_scenario(scenario)
    report, found, _ = await search(kernel, tmp_path)
    for name in SERVICES:
        searched = report.services[name]
        winner = EXPECTED[scenario]
        if winner is None:
            assert searched.winner is None
            assert searched.verdict.startswith(NOTHING_WORKS), searched.verdict
        else:
            assert searched.winner is not None, searched.verdict
            assert searched.winner.chain == winner
            assert found[name] == [searched.winner.route_name]


# --- detour probe --search -------------------------------------------------------------


async def test_probe_search_json_and_forget(userland: Lab, tmp_path: Path) -> None:
    await userland.set_scenario("sni-reset")
    config = tmp_path / "lab.toml"
    config.write_text(userland.helper_config(listen="127.0.0.1:0"))
    env = {**os.environ, "DETOUR_STATE_DIR": str(tmp_path / "state")}

    async def detour(*argv: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "helper", *argv, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode in (0, 1), err.decode()
        return process.returncode, out.decode()

    code, out = await detour(
        "probe", "--search", "--json", "--service", "telegram", "-c", str(config)
    )
    (service,) = json.loads(out)["services"]
    assert code == 0 and service["reachable"]
    searched = service["search"]
    assert searched["winner"] == {"route": "found-tlsfrag-sni", "chain": "tlsfrag:sni"}
    assert [t["stage"] for t in searched["tried"]] == ["screen", "confirm"]
    assert service["routes"][-1]["route"] == "found-tlsfrag-sni"
    assert service["routes"][-1]["ok"]
    store = HealthStore(tmp_path / "state")
    assert store.load_strategies(network_id()) == {
        "telegram": [{"route": "found-tlsfrag-sni", "chain": "tlsfrag:sni"}]
    }
    # without --search: the same document as before, no "search" key
    _, out = await detour("probe", "--json", "--service", "telegram", "-c", str(config))
    assert "search" not in json.loads(out)["services"][0]
    _, out = await detour("probe", "--forget", "-c", str(config))
    assert out.strip() == "forgot found-tlsfrag-sni"
    assert store.load_strategies(network_id()) == {}


# --- when a search runs on its own -----------------------------------------------------


def auto_config(lab: Lab, *, only_direct: bool = False) -> Config:
    config = lab_config(lab)
    config = dataclasses.replace(config, search=dataclasses.replace(config.search, auto=True))
    if only_direct:
        config = dataclasses.replace(config, routes=(config.route("direct"),))
    return config


async def test_a_network_not_seen_is_searched_and_remembered(userland: Lab, tmp_path: Path) -> None:
    await userland.set_scenario("sni-reset")
    store = HealthStore(tmp_path)
    async with Engine(auto_config(userland), store=store, network="new") as engine:
        await until(lambda: len(engine.router.found) == 3 and not engine.searches.running)
        assert engine.router.found["telegram"] == ["found-tlsfrag-sni"]
    # the next start on that network: the strategy is a route at once, no search
    engine = Engine(auto_config(userland), store=store, network="new", probe_on_start=False)
    async with engine:
        assert engine.router.found["signal"] == ["found-tlsfrag-sni"]
        assert not engine.searches.running and engine.search.report is None


async def test_a_search_when_no_route_works_any_more_and_not_again_in_vain(
    userland: Lab, tmp_path: Path
) -> None:
    await userland.set_scenario("baseline")
    store = HealthStore(tmp_path)
    store.save_strategies("known", {})  # a network detour has seen
    config = auto_config(userland, only_direct=True)
    async with Engine(config, store=store, network="known") as engine:
        telegram = next(s for s in engine.router.services if s.name == "telegram")
        await until(lambda: engine.router.active_route(telegram) is not None)
        assert engine.search.report is None  # direct works: nothing to search
        await userland.set_scenario("sni-reset")
        await engine.monitor.probe_now(telegram)  # as when its connections keep failing
        await until(lambda: "telegram" in engine.router.found and not engine.searches.running)
        assert engine.router.active_route(telegram).name == "found-tlsfrag-sni"
        # the status API (through the snapshot) says what the search tried and what won
        document = status_document(engine.snapshot())
        assert document["search"]["running"] is False and document["search"]["finished"]
        (entry,) = [s for s in document["services"] if s["name"] == "telegram"]
        assert entry["search"]["winner"] == {"route": "found-tlsfrag-sni", "chain": "tlsfrag:sni"}
        assert entry["search"]["tried"][0]["chain"] == "tlsfrag:sni"
        assert entry["active_route"] == "found-tlsfrag-sni"
        assert "found-tlsfrag-sni" in [r["route"] for r in entry["routes"]]
        assert "found-tlsfrag-sni" in [r.name for r in engine.snapshot().routes]

        await userland.set_scenario("sni-reset-reassembling")
        await engine.monitor.probe_now(telegram)
        await until(lambda: not engine.searches.running and engine.search.report.finished)
        report = engine.search.report
        assert report.services["telegram"].winner is None
        await engine.monitor.probe_now(telegram)  # still nothing works: no second search
        assert not engine.searches.running and engine.search.report is report
        # on demand, it searches again
        again = await engine.searches.start(["telegram"])
        assert again is not report and again.services["telegram"].winner is None
