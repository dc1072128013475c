"""Scenarios: one censorship recipe each, as a TOML file in config/lab/ -- the censor's rules
and DPI model, the lying resolver's rules, and what a tester should observe: which endpoints
fail how for a plain client (`[[check]]`), and which of detour's routes work for which
service (`[[expect]]`).

Rules name lab hosts by key (`hosts = ["telegram-web"]`) or by service
(`services = ["telegram"]`), so a scenario works on any lab network.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from helper.config import (
    ConfigError,
    Problems,
    TableReader,
    array_of_tables,
    choice,
    domain,
    network,
    parse_duration,
    parse_size,
    port,
    string,
)
from transports import Failure, Op

from . import dns
from .censor import ACTIONS, MATCH_MODES, AllowList, Policy, Rule
from .dns import DnsRule
from .dpi import Depth
from .hosts import HostTable
from .packetcensor import URGENT_MODES, PacketModel, PacketPolicy

__all__ = ["Check", "Expectation", "Scenario", "load_scenario", "scenario_names"]

DNS_ACTIONS = tuple(sorted(dns.DNS_ACTIONS))
CHECK_KINDS = ("tcp", "tls", "http", "https")
# Where the censor reads: the userland censor reads the stream a TCP endpoint receives; the
# packet censor (kernel-level lab only) reads packets on the path (packetcensor.py).
LEVELS = ("stream", "packets")


@dataclass(frozen=True)
class Check:
    """What a plain client (no detour) observes at one endpoint under this scenario."""

    target: str  # tcp://HOST:PORT, tls://HOST:PORT, http(s)://HOST[:PORT]/PATH
    failure: str | None = None  # None: it works
    op: str | None = None
    download: int | None = None  # fetch this many bytes (https/http targets)
    stalled_between: tuple[int, int] | None = None  # the transfer stops within this range
    rate: int | None = None  # the measured rate is this many bytes/s (within 25%)
    # Where the kernel-level lab (--netns) shows it differently: an address black-hole drops
    # the SYN there (timeout at connect) where userland can only go silent after accepting.
    netns_failure: str | None = None
    netns_op: str | None = None

    @property
    def works(self) -> bool:
        return self.failure is None

    def expected(self, netns: bool) -> tuple[str | None, str | None]:
        """(failure, op) a plain client should see in this mode of the lab."""
        if netns and self.netns_op is not None:
            return (self.netns_failure or self.failure, self.netns_op)
        return (self.failure, self.op)


@dataclass(frozen=True)
class Expectation:
    """What `detour probe` should report for one service through one route."""

    service: str
    route: str
    works: bool
    failure: str | None = None
    op: str | None = None
    netns_op: str | None = None  # where the kernel-level lab differs (a dropped SYN)
    # What a correct detour says, which this one does not yet: why (the open issue). The
    # scenario tests expect such an expectation to fail, and fail when it passes.
    pending: str | None = None

    def expected(self, netns: bool) -> tuple[bool, str | None, str | None]:
        op = self.netns_op if netns and self.netns_op is not None else self.op
        return self.works, self.failure, op


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str = ""
    models: str = ""
    source: str = ""
    depth: Depth = Depth.FULL
    residual_ban: float = 0.0
    level: str = "stream"
    packet_model: PacketModel | None = None  # level "packets": how the packet censor reads
    # detour uses the system resolver, which in the kernel-level lab's client namespace is
    # the network's (lying) resolver; detour runs there (NetnsLab.client_command)
    system_resolver: bool = False
    rules: tuple[dict[str, Any], ...] = ()  # as written; placed on a lab network by policy()
    allow: dict[str, Any] | None = None
    dns: tuple[DnsRule, ...] = ()
    checks: tuple[Check, ...] = ()
    expectations: tuple[Expectation, ...] = field(default=())
    # The route `detour probe` should name best for each service (None: no route works).
    best: dict[str, str | None] = field(default_factory=dict, compare=False)
    # What `detour probe` finds with detour's built-in config, in a kernel-level lab that
    # stands in for the internet (helper/lab/cascade.py): the route it names best for each
    # service, or "none: FAILURE during OP" (no route works; how `direct` fails).
    cascade: dict[str, str] = field(default_factory=dict, compare=False)
    text: str = field(default="", repr=False, compare=False)  # the TOML it was read from

    @property
    def needs_netns(self) -> str | None:
        """Why only the kernel-level lab (--netns) can run this scenario, if it cannot run
        in userland."""
        if self.level == "packets":
            return 'its DPI reads packets (level = "packets")'
        if self.system_resolver:
            return "detour must use the network's resolver as its system resolver"
        return None

    def policy(self, table: HostTable) -> Policy:
        """The userland censor's policy on a concrete lab network (without the name rules
        when the packet censor enforces them)."""
        rules = tuple(
            rule for rule in self._rules(table) if self.level == "stream" or not rule.content_based
        )
        allow = None
        if self.allow is not None:
            allow = AllowList(
                cidrs=_cidrs(self.allow, table), names=tuple(self.allow.get("names", ()))
            )
        return Policy(rules, self.depth, allow, self.residual_ban, self.name)

    def packet_policy(self, table: HostTable) -> PacketPolicy | None:
        """The packet censor's policy (its name rules and how it reads), for level
        "packets"; None for a scenario the packet censor leaves alone."""
        if self.level != "packets":
            return None
        rules = tuple(rule for rule in self._rules(table) if rule.content_based)
        return PacketPolicy(rules, self.packet_model or PacketModel(self.depth), self.name)

    def _rules(self, table: HostTable) -> tuple[Rule, ...]:
        return tuple(
            Rule(
                action=r["action"],
                name=r.get("name", ""),
                cidrs=_cidrs(r, table),
                ports=frozenset(r.get("ports", ())),
                sni=r.get("sni"),
                host=r.get("host"),
                match=r.get("match", "suffix"),
                rate=r.get("rate"),
                after=r.get("after"),
                probability=r.get("probability", 1.0),
            )
            for r in self.rules
        )


def _cidrs(entry: dict[str, Any], table: HostTable) -> tuple[Any, ...]:
    nets = list(entry.get("cidrs", ()))
    for key in entry.get("hosts", ()):
        nets.append(ipaddress.ip_network(table.address(key)))
    for service in entry.get("services", ()):
        nets.extend(ipaddress.ip_network(table.address(h)) for h in table if h.service == service)
    return tuple(nets)


# --- parsing --------------------------------------------------------------------------------


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError("a probability is a number more than 0 and at most 1")
    return float(value)


def _check_target(table: HostTable) -> Callable[[Any], str]:
    """Targets are URLs; `@KEY` stands for the address of lab host KEY (for IP literals
    that must follow the lab network: `tcp://@telegram-dc2:443`)."""

    def convert(value: Any) -> str:
        text = string(value)
        kind = text.split("://", 1)[0]
        if kind not in CHECK_KINDS or "://" not in text:
            forms = ", ".join(k + "://..." for k in CHECK_KINDS)
            raise ValueError(f"{text!r}: write targets as {forms}")

        def address(match: re.Match[str]) -> str:
            try:
                return table.address(match.group(1))
            except KeyError:
                raise ValueError(f"{text!r}: no lab host {match.group(1)!r}") from None

        return re.sub(r"@([A-Za-z0-9.-]+)", address, text)

    return convert


def _failure(value: Any) -> str:
    text = string(value)
    known = {f.value for f in Failure}
    if text not in known:
        raise ValueError(f"unknown failure {text!r} (known: {', '.join(sorted(known))})")
    return text


def _op(value: Any) -> str:
    text = string(value)
    known = [o.value for o in Op]
    if text not in known:
        raise ValueError(f"unknown operation {text!r} (known: {', '.join(known)})")
    return text


def parse_scenario(text: str, name: str, table: HostTable | None = None) -> Scenario:
    """Parse and validate a scenario; every problem is reported with its key path."""
    source = f"scenario {name}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    table = table or HostTable()
    problems = Problems()
    top = TableReader(
        "", data, problems,
        ("name", "summary", "models", "source", "dpi", "allow", "dns", "rule", "check", "expect",
         "best", "cascade", "system_resolver"),
    )  # fmt: skip
    dpi = TableReader(
        "dpi", top.data.get("dpi", {}), problems,
        ("depth", "residual_ban", "level", "reorder", "urgent", "check_ttl"),
    )  # fmt: skip
    depth = Depth(dpi.get("depth", choice(tuple(Depth)), "full"))
    residual_ban = dpi.get("residual_ban", parse_duration, 0.0)
    level = dpi.get("level", choice(LEVELS), "stream")
    packet_model = None
    if level == "packets":
        packet_model = PacketModel(
            depth,
            reorder=dpi.get("reorder", _bool, True),
            urgent=dpi.get("urgent", choice(URGENT_MODES), "inline"),
            check_ttl=dpi.get("check_ttl", _bool, False),
        )
        if residual_ban:
            problems.add("dpi.residual_ban", 'not with level = "packets" (the stream censor\'s)')
    else:
        for key in ("reorder", "urgent", "check_ttl"):
            if key in dpi.data:
                problems.add(f"dpi.{key}", 'only for level = "packets" (a DPI that reads packets)')
    dpi.finish()

    host_keys = tuple(h.key for h in table)
    services = tuple(sorted({h.service for h in table if h.service}))

    def host_key(value: Any) -> str:
        return choice(host_keys)(value)

    def service(value: Any) -> str:
        return choice(services)(value)

    def targets(reader: TableReader) -> dict[str, Any]:
        return {
            "cidrs": tuple(reader.get_list("cidrs", network)),
            "hosts": tuple(reader.get_list("hosts", host_key)),
            "services": tuple(reader.get_list("services", service)),
        }

    allow = None
    if "allow" in top.data:
        reader = TableReader(
            "allow", top.data["allow"], problems, ("cidrs", "hosts", "services", "names")
        )
        allow = {**targets(reader), "names": tuple(reader.get_list("names", domain))}
        reader.finish()

    rules: list[dict[str, Any]] = []
    for path, item in array_of_tables("rule", top.data.get("rule"), problems):
        reader = TableReader(
            path, item, problems,
            ("name", "action", "cidrs", "hosts", "services", "ports", "sni", "host", "match",
             "rate", "after", "probability"),
        )  # fmt: skip
        rule = {
            "name": reader.get("name", string, ""),
            "action": reader.get("action", choice(ACTIONS), required=True),
            **targets(reader),
            "ports": tuple(reader.get_list("ports", port)),
            "sni": reader.get("sni", domain),
            "host": reader.get("host", domain),
            "match": reader.get("match", choice(MATCH_MODES), "suffix"),
            "rate": reader.get("rate", parse_size),
            "after": reader.get("after", parse_size),
            "probability": reader.get("probability", _probability, 1.0),
        }
        reader.finish()
        if rule["action"] is None:
            continue
        try:  # the censor's own checks (a throttle needs a rate, ...), with this rule's path
            checked = Rule(
                action=rule["action"], sni=rule["sni"], host=rule["host"], match=rule["match"],
                rate=rule["rate"], after=rule["after"], probability=rule["probability"],
            )  # fmt: skip
            if level == "packets" and checked.content_based:
                PacketPolicy((checked,))
        except ValueError as exc:
            problems.add(path, str(exc))
            continue
        rules.append({k: v for k, v in rule.items() if v not in (None, ())})

    dns_rules: list[DnsRule] = []
    for path, item in array_of_tables("dns", top.data.get("dns"), problems):
        reader = TableReader(path, item, problems, ("match", "action"))
        match = reader.get("match", domain, required=True)
        action = reader.get("action", choice(DNS_ACTIONS), required=True)
        reader.finish()
        if match and action:
            dns_rules.append(DnsRule(match, action))

    checks: list[Check] = []
    for path, item in array_of_tables("check", top.data.get("check"), problems):
        reader = TableReader(
            path, item, problems,
            ("target", "failure", "op", "netns_failure", "netns_op", "download",
             "stalled_between", "rate"),
        )  # fmt: skip
        stalled = reader.get_list("stalled_between", parse_size)
        if stalled and (len(stalled) != 2 or stalled[0] > stalled[1]):
            problems.add(f"{path}.stalled_between", "expected [LOW, HIGH] in bytes")
        check = Check(
            target=reader.get("target", _check_target(table), "", required=True),
            failure=reader.get("failure", _failure),
            op=reader.get("op", _op),
            download=reader.get("download", parse_size),
            stalled_between=(stalled[0], stalled[1]) if len(stalled) == 2 else None,
            rate=reader.get("rate", parse_size),
            netns_failure=reader.get("netns_failure", _failure),
            netns_op=reader.get("netns_op", _op),
        )
        reader.finish()
        if (check.failure is None) != (check.op is None):
            problems.add(path, "give both failure and op (or neither, for a working endpoint)")
        checks.append(check)

    expectations: list[Expectation] = []
    for path, item in array_of_tables("expect", top.data.get("expect"), problems):
        reader = TableReader(
            path, item, problems,
            ("service", "route", "routes", "works", "failure", "op", "netns_op", "pending"),
        )  # fmt: skip
        works = reader.get("works", _bool, None)
        failure = reader.get("failure", _failure)
        routes = reader.get_list("routes", string)
        if (route := reader.get("route", string)) is not None:
            routes.insert(0, route)
        if not routes:
            problems.add(path, "give route = NAME or routes = [NAMES]")
        what = reader.get("service", service, "", required=True)
        for route_name in routes:
            expectations.append(
                Expectation(
                    service=what,
                    route=route_name,
                    works=works if works is not None else failure is None,
                    failure=failure,
                    op=reader.get("op", _op),
                    netns_op=reader.get("netns_op", _op),
                    pending=reader.get("pending", string),
                )
            )
        reader.finish()

    best: dict[str, str | None] = {}
    best_table = TableReader("best", top.data.get("best", {}), problems, services)
    for key in services:
        if key in best_table.data:
            route = best_table.get(key, string)
            best[key] = None if route == "none" else route
    best_table.finish()
    cascade: dict[str, str] = {}
    cascade_table = TableReader("cascade", top.data.get("cascade", {}), problems, services)
    for key in services:
        if key in cascade_table.data:
            cell = cascade_table.get(key, string)
            if cell.startswith("none") and not re.fullmatch(r"none: \w+ during \w+", cell):
                problems.add(f"cascade.{key}", 'expected a route, or "none: FAILURE during OP"')
            cascade[key] = cell
    cascade_table.finish()

    scenario = Scenario(
        name=top.get("name", string, name),
        summary=top.get("summary", string, ""),
        models=top.get("models", string, ""),
        source=top.get("source", string, ""),
        depth=depth,
        residual_ban=residual_ban,
        level=level,
        packet_model=packet_model,
        system_resolver=top.get("system_resolver", _bool, False),
        rules=tuple(rules),
        allow=allow,
        dns=tuple(dns_rules),
        checks=tuple(checks),
        expectations=tuple(expectations),
        best=best,
        cascade=cascade,
        text=text,
    )
    top.finish()
    if problems.items:
        raise ConfigError(problems.items, source)
    return scenario


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


# --- the shipped scenarios ------------------------------------------------------------------


def _scenario_dir() -> Path:
    packaged = resources.files("helper").joinpath("_config", "lab")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "config" / "lab"


def scenario_names() -> list[str]:
    return sorted(p.stem for p in _scenario_dir().glob("*.toml"))


def load_scenario(name_or_path: str, table: HostTable | None = None) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = _scenario_dir() / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(scenario_names())
            raise ConfigError([f"no scenario named {name_or_path!r} (known: {known})"], "lab")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"], "lab") from None
    return parse_scenario(text, path.stem, table)
