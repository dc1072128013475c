"""Scenarios: one censorship recipe each, as a TOML file in config/lab/ -- the censor's rules
and DPI model, the lying resolver's rules, and what a tester should observe: which endpoints
fail how for a plain client (`[[check]]`), and which of detour's routes work for which
service (`[[expect]]`).

Rules name lab hosts by key (`hosts = ["telegram-web"]`) or by service
(`services = ["telegram"]`), so a scenario works on any lab network.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from helper.config import ConfigError, Problems, TableReader, string
from helper.config.file import parse_toml
from helper.config.schema import complete, keys_of, read_array, read_section, read_table

from .censor import AllowList, Policy, Rule
from .dns import DnsRule
from .dpi import Depth
from .hosts import HostTable
from .packetcensor import PacketModel, PacketPolicy
from .scenario_keys import (
    CHECK_KINDS,
    SCENARIO_SECTIONS,
    AllowSection,
    CheckTable,
    DnsRuleTable,
    DpiSection,
    ExpectTable,
    RuleTable,
    ScenarioKeys,
    known,
)

__all__ = ["Check", "Expectation", "Scenario", "load_scenario", "parse_scenario", "scenario_names"]


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


def parse_scenario(text: str, name: str, table: HostTable | None = None) -> Scenario:
    """Parse and validate a scenario; every problem is reported with its key path. The keys
    are scenario_keys.py's; what depends on the lab network is checked against `table`."""
    source = f"scenario {name}"
    data = parse_toml(text, source)
    table = table or HostTable()
    problems = Problems()
    top = TableReader("", data, problems, keys_of(ScenarioKeys) + tuple(SCENARIO_SECTIONS))
    host_keys = tuple(h.key for h in table)
    services = tuple(sorted({h.service for h in table if h.service}))

    def targets(path: str, values: dict[str, Any]) -> dict[str, Any]:
        known(problems, f"{path}.hosts", values["hosts"], host_keys)
        known(problems, f"{path}.services", values["services"], services)
        return {k: values[k] for k in ("cidrs", "hosts", "services")}

    dpi = read_section(DpiSection, "dpi", top.data.get("dpi", {}), problems)
    written_dpi = top.data.get("dpi") if isinstance(top.data.get("dpi"), dict) else {}
    residual_ban = dpi.residual_ban or 0.0
    packet_model = None
    if dpi.level == "packets":
        packet_model = PacketModel(
            dpi.depth, reorder=dpi.reorder, urgent=dpi.urgent, check_ttl=dpi.check_ttl
        )
        if residual_ban:
            problems.add("dpi.residual_ban", 'not with level = "packets" (the stream censor\'s)')
    else:
        for key in ("reorder", "urgent", "check_ttl"):
            if key in written_dpi:
                problems.add(f"dpi.{key}", 'only for level = "packets" (a DPI that reads packets)')

    allow = None
    if "allow" in top.data:
        reader = TableReader("allow", top.data["allow"], problems, keys_of(AllowSection))
        values = read_table(AllowSection, reader)
        reader.finish()
        allow = {**targets("allow", values), "names": values["names"]}

    rules: list[dict[str, Any]] = []
    for path, rule, _ in read_array(RuleTable, "rule", top.data.get("rule"), problems):
        rule.update(targets(path, rule))
        if rule["action"] is None:
            continue
        try:  # the censor's own checks (a throttle needs a rate, ...), with this rule's path
            checked = Rule(
                action=rule["action"], sni=rule["sni"], host=rule["host"], match=rule["match"],
                rate=rule["rate"], after=rule["after"], probability=rule["probability"],
            )  # fmt: skip
            if dpi.level == "packets" and checked.content_based:
                PacketPolicy((checked,))
        except ValueError as exc:
            problems.add(path, str(exc))
            continue
        rules.append({k: v for k, v in rule.items() if v not in (None, ())})

    dns_rules = [
        DnsRule(values["match"], values["action"])
        for _, values, _ in read_array(DnsRuleTable, "dns", top.data.get("dns"), problems)
        if complete(DnsRuleTable, values)
    ]

    checks: list[Check] = []
    convert_target = _check_target(table)
    for path, values, _ in read_array(CheckTable, "check", top.data.get("check"), problems):
        stalled = values["stalled_between"]
        if stalled and (len(stalled) != 2 or stalled[0] > stalled[1]):
            problems.add(f"{path}.stalled_between", "expected [LOW, HIGH] in bytes")
        target = ""
        if values["target"] is not None:
            try:
                target = convert_target(values["target"])
            except ValueError as exc:
                problems.add(f"{path}.target", str(exc))
        check = Check(
            target=target,
            failure=values["failure"],
            op=values["op"],
            download=values["download"],
            stalled_between=(stalled[0], stalled[1]) if len(stalled) == 2 else None,
            rate=values["rate"],
            netns_failure=values["netns_failure"],
            netns_op=values["netns_op"],
        )
        if (check.failure is None) != (check.op is None):
            problems.add(path, "give both failure and op (or neither, for a working endpoint)")
        checks.append(check)

    expectations: list[Expectation] = []
    for path, values, _ in read_array(ExpectTable, "expect", top.data.get("expect"), problems):
        routes = list(values["routes"])
        if values["route"] is not None:
            routes.insert(0, values["route"])
        if not routes:
            problems.add(path, "give route = NAME or routes = [NAMES]")
        if values["service"] is not None and values["service"] not in services:
            problems.add(
                f"{path}.service", f"{values['service']!r} is not one of: {', '.join(services)}"
            )
        works, failure = values["works"], values["failure"]
        for route_name in routes:
            expectations.append(
                Expectation(
                    service=values["service"] or "",
                    route=route_name,
                    works=works if works is not None else failure is None,
                    failure=failure,
                    op=values["op"],
                    netns_op=values["netns_op"],
                    pending=values["pending"],
                )
            )

    keys = ScenarioKeys(**read_table(ScenarioKeys, top))
    for what, cells in (("best", keys.best), ("cascade", keys.cascade)):
        TableReader(what, cells, problems, services).finish()  # names a service not in the lab
    best = {k: None if v == "none" else v for k, v in keys.best.items() if k in services}
    cascade = {k: v for k, v in keys.cascade.items() if k in services}
    for key, cell in cascade.items():
        if cell.startswith("none") and not re.fullmatch(r"none: \w+ during \w+", cell):
            problems.add(f"cascade.{key}", 'expected a route, or "none: FAILURE during OP"')

    scenario = Scenario(
        name=keys.name if keys.name is not None else name,
        summary=keys.summary,
        models=keys.models,
        source=keys.source,
        depth=dpi.depth,
        residual_ban=residual_ban,
        level=dpi.level,
        packet_model=packet_model,
        system_resolver=keys.system_resolver,
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
        if not os.path.isfile(path):  # (False too for a name too long to look up)
            known = ", ".join(scenario_names())
            raise ConfigError([f"no scenario named {name_or_path!r} (known: {known})"], "lab")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise ConfigError([f"cannot read {path}: {why or exc}"], "lab") from None
    return parse_scenario(text, path.stem, table)
