"""Strategies a search found as routes of the running router: only for their service, after
its own routes, pinnable, forgotten on demand; kept per network in the state file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from helper.config import parse_config
from helper.probe.result import ProbeResult, TargetResult
from helper.routing import Router
from helper.routing.health import RouteHealth
from helper.routing.state import HealthStore
from helper.search.candidates import Candidate
from helper.search.control import Searches
from helper.search.runner import (
    SearchReport,
    StrategySearch,
    found_strategies,
    restore_strategies,
)
from transports import Endpoint, parse_chain

CONFIG = """
[base]
config = "none"
[[route]]
name = "direct"
chain = "direct"
[[route]]
name = "proxy"
chain = "socks5://127.0.0.1:9"
[[service]]
name = "telegram"
domains = ["telegram.org"]
probes = ["tls://web.telegram.org:443"]
[[service]]
name = "signal"
domains = ["signal.org"]
routes = ["direct"]
probes = ["tls://chat.signal.org:443"]
"""


def router() -> Router:
    return Router.from_config(parse_config(CONFIG))


def names(routes) -> list[str]:
    return [r.name for r in routes]


def test_a_found_route_is_a_route_of_its_service_only() -> None:
    r = router()
    telegram, signal = r.services.services
    r.add_found("telegram", r.build_route("found-tlsfrag-sni", parse_chain("tlsfrag:sni")))
    r.add_found("signal", r.build_route("found-oob-sni", parse_chain("oob:sni")))
    assert names(r.candidates(telegram)) == ["direct", "proxy", "found-tlsfrag-sni"]
    assert names(r.candidates(signal)) == ["direct", "found-oob-sni"]
    assert "found-tlsfrag-sni" in names(r.routes)  # visible like any route


def test_health_puts_a_working_found_route_first_and_it_can_be_pinned() -> None:
    r = router()
    telegram = r.services.services[0]
    r.add_found("telegram", r.build_route("found-tlsfrag-sni", parse_chain("tlsfrag:sni")))
    r.health.set("telegram", "direct", RouteHealth(ok=False))
    r.health.set("telegram", "found-tlsfrag-sni", RouteHealth(ok=True))
    _, ordered = r.plan(Endpoint("web.telegram.org", 443))
    assert ordered[0].name == "found-tlsfrag-sni"
    r.pin("telegram", "found-tlsfrag-sni")  # one of its routes
    assert names(r.candidates(telegram)) == ["found-tlsfrag-sni"]


def test_forgetting_removes_the_routes_their_pins_and_health() -> None:
    r = router()
    telegram = r.services.services[0]
    r.add_found("telegram", r.build_route("found-tlsfrag-sni", parse_chain("tlsfrag:sni")))
    r.health.set("telegram", "found-tlsfrag-sni", RouteHealth(ok=True))
    r.pin("telegram", "found-tlsfrag-sni")
    assert r.forget_found() == ["found-tlsfrag-sni"]
    assert names(r.candidates(telegram)) == ["direct", "proxy"]
    assert not r.has_route("found-tlsfrag-sni") and r.pins == {}
    assert r.health.items() == []


def test_kept_per_network(tmp_path: Path) -> None:
    store = HealthStore(tmp_path)
    r = router()
    r.add_found("telegram", r.build_route("found-tlsfrag-sni", parse_chain("tlsfrag:sni")))
    store.save_strategies("home", found_strategies(r))
    store.save("home", r.health)  # saving health keeps the strategies
    assert store.load_strategies("home") == {
        "telegram": [{"route": "found-tlsfrag-sni", "chain": "tlsfrag:sni"}]
    }
    assert store.load_strategies("cafe") == {}
    again = router()
    assert restore_strategies(again, store, "home") == 1
    assert names(again.candidates(again.services.services[0]))[-1] == "found-tlsfrag-sni"
    assert restore_strategies(router(), store, "cafe") == 0
    store.save_strategies("home", {})  # forgotten
    assert store.load_strategies("home") == {}


def test_a_broken_state_file_entry_is_skipped(tmp_path: Path) -> None:
    store = HealthStore(tmp_path)
    store.save_strategies(
        "home",
        {
            "telegram": [
                {"route": "found-x", "chain": "nonsense-layer"},
                {"route": "not-found-prefix", "chain": "tlsfrag:sni"},
                "garbage",
            ],
            "nosuchservice": [{"route": "found-y", "chain": "tlsfrag:sni"}],
        },
    )
    r = router()
    assert restore_strategies(r, store, "home") == 0
    assert r.found == {}


def test_config_keys_and_reserved_names_are_checked() -> None:
    import pytest

    from helper.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG + '[search]\nconfirm = 0\nauto = "yes"\n[probe]\nhandshakes = -1\n')
    text = str(caught.value)
    assert "search.confirm:" in text and "search.auto:" in text and "probe.handshakes:" in text
    with pytest.raises(ConfigError, match=r"route\[2\].name: names starting with 'found-'"):
        parse_config(CONFIG + '[[route]]\nname = "found-mine"\nchain = "tlsfrag:sni"\n')
    config = parse_config(CONFIG)
    assert (config.search.auto, config.search.confirm, config.search.attempts) == (True, 2, 30)
    assert (config.probe.handshakes, config.probe.handshake_gap) == (3, 0.4)


def test_a_reload_keeps_the_found_routes_and_what_was_learnt() -> None:
    old = router()
    route = old.build_route("found-tlsfrag-sni", parse_chain("tlsfrag:sni"))
    old.add_found("telegram", route)
    old.add_found("signal", route)
    old.health.set("telegram", "found-tlsfrag-sni", RouteHealth(ok=True))
    old.pin("telegram", "found-tlsfrag-sni")
    new = router()
    new.adopt(old)
    assert new.found == {"telegram": ["found-tlsfrag-sni"], "signal": ["found-tlsfrag-sni"]}
    assert new.health.get("telegram", "found-tlsfrag-sni").ok is True
    assert new.pins == {"telegram": "found-tlsfrag-sni"}
    assert new.route("found-tlsfrag-sni") is not route  # built for the new router


async def test_a_winner_found_while_a_reload_happens_is_kept(tmp_path: Path) -> None:
    """The search runs on the router it started with; a reload replaces router, monitor and
    StrategySearch meanwhile. What it finds then goes to the new router and the state file."""
    winner = Candidate("tlsfrag:sni", "tlsfrag")
    gate = asyncio.Event()

    class HeldSearch(StrategySearch):
        async def run(self, services, direct=None):  # finds `winner` once `gate` opens
            report = self.report = SearchReport()
            await gate.wait()
            service = next(s for s in services if s.name == "telegram")
            report.services["telegram"] = SimpleNamespace(winner=winner)
            result = ProbeResult("telegram", winner.route_name, winner.chain, [TargetResult("x")])
            report.results["telegram"] = result
            self._adopt(service, winner, result)
            return report

    store = HealthStore(tmp_path)
    old = router()
    host = SimpleNamespace(
        router=old,
        monitor=SimpleNamespace(results={}),
        search=HeldSearch(old, prober=None, store=store, network="net1"),  # type: ignore[arg-type]
        config=None,
    )
    searches = Searches(host)
    task = searches.start(["telegram"])
    await asyncio.sleep(0)
    new = router()  # the reload: a new router (adopting the old one's state), a new search
    new.adopt(old)
    host.router, host.search = new, StrategySearch(new, prober=None, store=store, network="net1")  # type: ignore[arg-type]
    gate.set()
    await task
    telegram = new.services.services[0]
    assert winner.route_name in names(new.candidates(telegram))
    assert new.health.get("telegram", winner.route_name).ok is True
    assert host.monitor.results[("telegram", winner.route_name)] is not None
    kept = store.load_strategies("net1")["telegram"]
    assert [(s["route"], s["chain"]) for s in kept] == [(winner.route_name, "tlsfrag:sni")]
