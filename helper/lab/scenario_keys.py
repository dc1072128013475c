"""A scenario file's keys, each declared once: its default, converter and documentation on a
field of the section dataclasses below (helper/config/schema.py's `setting()`), read by the
schema's generic reader (scenario.py) and listed in docs/lab.md's key tables
(`python -m helper.config.docs`).

What depends on the lab network -- which host keys and services exist, the address `@KEY`
stands for in a check's target -- is checked after reading, against the network's host table
(`known`), with the same key paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from helper.config import choice, domain, flag, network, parse_duration, parse_size, port, string
from helper.config.schema import Problems, setting
from transports import Failure, Op

from . import dns
from .censor import ACTIONS, MATCH_MODES
from .dpi import Depth
from .packetcensor import URGENT_MODES

__all__ = [
    "CHECK_KINDS",
    "DNS_ACTIONS",
    "LEVELS",
    "SCENARIO_SECTIONS",
    "AllowSection",
    "CheckTable",
    "DnsRuleTable",
    "DpiSection",
    "ExpectTable",
    "RuleTable",
    "ScenarioKeys",
    "known",
]

DNS_ACTIONS = tuple(sorted(dns.DNS_ACTIONS))
CHECK_KINDS = ("tcp", "tls", "http", "https")
# Where the censor reads: the userland censor reads the stream a TCP endpoint receives; the
# packet censor (kernel-level lab only) reads packets on the path (packetcensor.py).
LEVELS = ("stream", "packets")


def _depth(value: Any) -> Depth:
    return Depth(choice(tuple(Depth))(value))


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError("a probability is a number more than 0 and at most 1")
    return float(value)


def _failure(value: Any) -> str:
    text = string(value)
    known_failures = {f.value for f in Failure}
    if text not in known_failures:
        raise ValueError(f"unknown failure {text!r} (known: {', '.join(sorted(known_failures))})")
    return text


def _op(value: Any) -> str:
    text = string(value)
    ops = [o.value for o in Op]
    if text not in ops:
        raise ValueError(f"unknown operation {text!r} (known: {', '.join(ops)})")
    return text


def _per_service(path: str, value: Any, problems: Problems, base: Any) -> dict[str, str]:
    """`[best]` / `[cascade]`: service name -> text (the names are checked against the lab
    network's services afterwards)."""
    if not isinstance(value, dict):
        problems.add(path, "expected a table")
        return {}
    out = {}
    for key, item in value.items():
        if isinstance(item, str):
            out[key] = item
        else:
            problems.add(f"{path}.{key}", f"expected a string, got {type(item).__name__}")
    return out


def known(problems: Problems, path: str, values: Iterable[str], options: Iterable[str]) -> None:
    """Names the lab network must have (host keys, services): each one that it does not is
    a problem at `path[i]`."""
    check = choice(options)
    for i, value in enumerate(values):
        try:
            check(value)
        except ValueError as exc:
            problems.add(f"{path}[{i}]", str(exc))


def _listed(options: Iterable[str]) -> str:
    return ", ".join(f"`{option}`" for option in options)


_HOSTS_DOC = "Lab hosts by key (`telegram-web`): their addresses."
_SERVICES_DOC = "Every host of these services (`telegram`)."
_CIDRS_DOC = "Address ranges."


@dataclass(frozen=True)
class ScenarioKeys:
    """The keys at the top of a scenario file (the tables are the sections below)."""

    name: str | None = setting(None, string, "The scenario's name (default: the file's name).")
    summary: str = setting("", string, "One line for `detour lab --list`.")
    models: str = setting("", string, "What it models, in a paragraph.")
    source: str = setting("", string, "The public report it comes from.")
    system_resolver: bool = setting(
        False,
        flag,
        "The written configuration resolves with the system resolver (kernel-level lab only; "
        "see below).",
    )
    best: dict[str, str] = setting(
        {},
        read=_per_service,
        doc="Service -> the route `detour probe` should name best (`none`: no route works).",
    )
    cascade: dict[str, str] = setting(
        {},
        read=_per_service,
        doc='Service -> what the built-in config finds: a route, or `"none: FAILURE during '
        'OP"` ([below](#the-built-in-config-against-the-lab)).',
    )


@dataclass(frozen=True)
class DpiSection:
    depth: Depth = setting(
        "full",
        _depth,
        "How much of a flow's start the DPI reassembles: `first-segment`, `first-record` or "
        "`full` ([The DPI model](#the-dpi-model)).",
    )
    residual_ban: float | None = setting(
        None,
        parse_duration,
        "After a rule blocks a flow, drop every flow to that address this long (the stream "
        "censor's; none: no ban).",
    )
    level: str = setting(
        "stream",
        choice(LEVELS),
        "`stream`: the censor reads what a TCP endpoint receives; `packets`: the packet censor "
        "reads packets on the path ([The DPI variants](#the-dpi-variants)).",
    )
    reorder: bool = setting(
        True,
        flag,
        'Only with `level = "packets"`: put segments in sequence order; `false`: read '
        "payloads as they arrive.",
    )
    urgent: str = setting(
        "inline",
        choice(URGENT_MODES),
        'Only with `level = "packets"`: `inline` keeps TCP urgent data in what it reads; '
        "`skip` takes the urgent byte out.",
    )
    check_ttl: bool = setting(
        False,
        flag,
        'Only with `level = "packets"`: skip segments whose TTL is lower than the SYN\'s.',
    )


@dataclass(frozen=True)
class AllowSection:
    cidrs: tuple[Any, ...] = setting([], each=network, doc=_CIDRS_DOC)
    hosts: tuple[str, ...] = setting([], each=string, doc=_HOSTS_DOC)
    services: tuple[str, ...] = setting([], each=string, doc=_SERVICES_DOC)
    names: tuple[str, ...] = setting(
        [], each=domain, doc="Server names (TLS) or Hosts (HTTP), suffix match."
    )


@dataclass(frozen=True, kw_only=True)  # `action` is required, after `name`
class RuleTable:
    name: str = setting("", string, "A name for the censor's log.")
    action: str = setting(
        convert=choice(ACTIONS),
        doc="What the client sees: "
        + ", ".join(f"`{a}`" for a in ACTIONS)
        + " ([Actions](#actions)).",
    )
    cidrs: tuple[Any, ...] = setting([], each=network, doc=_CIDRS_DOC)
    hosts: tuple[str, ...] = setting([], each=string, doc=_HOSTS_DOC)
    services: tuple[str, ...] = setting([], each=string, doc=_SERVICES_DOC)
    ports: tuple[int, ...] = setting([], each=port, doc="Destination ports.")
    sni: str | None = setting(None, domain, "The server name in the TLS ClientHello.")
    host: str | None = setting(None, domain, "The `Host` of a plain HTTP request.")
    match: str = setting(
        "suffix",
        choice(MATCH_MODES),
        "How `sni` and `host` compare: `exact`, `suffix` (the name or any name under it) or "
        "`substring`.",
    )
    rate: int | None = setting(None, parse_size, "`throttle`: bytes per second each way.")
    after: int | None = setting(
        None, parse_size, "`freeze`: bytes from the server before the flow stops."
    )
    probability: float = setting(
        1, _probability, "The share of flows the rule applies to (more than 0, at most 1)."
    )


@dataclass(frozen=True)
class DnsRuleTable:
    match: str = setting(convert=domain, doc="The name and every name under it.")
    action: str = setting(
        convert=choice(DNS_ACTIONS),
        doc="What the network's resolver answers: "
        + ", ".join(f"`{a}`" for a in DNS_ACTIONS)
        + ".",
    )


@dataclass(frozen=True)
class CheckTable:
    target: str = setting(
        convert=string,
        doc="`tcp://`, `tls://`, `http://` or `https://` URL; `@KEY` stands for lab host "
        "KEY's address.",
    )
    failure: str | None = setting(
        None, _failure, "How a plain client fails (with `op`); none: it works."
    )
    op: str | None = setting(None, _op, "During which operation it fails.")
    netns_failure: str | None = setting(
        None, _failure, "The failure in the kernel-level lab, where it differs."
    )
    netns_op: str | None = setting(None, _op, "The operation in the kernel-level lab.")
    download: int | None = setting(None, parse_size, "Fetch this many bytes (http(s) targets).")
    stalled_between: tuple[int, ...] = setting(
        [],
        each=parse_size,
        doc='`[LOW, HIGH]`: the transfer stops within this range (`failure = "stalled"`).',
    )
    rate: int | None = setting(
        None, parse_size, "The measured rate is this many bytes per second (within 25%)."
    )


@dataclass(frozen=True)
class ExpectTable:
    service: str = setting(convert=string, doc="The service `detour probe` reports on.")
    route: str | None = setting(None, string, "The route (or give `routes`).")
    routes: tuple[str, ...] = setting([], each=string, doc="Several routes, expected alike.")
    works: bool | None = setting(
        None, flag, "Whether the route works (default: whether `failure` is not given)."
    )
    failure: str | None = setting(None, _failure, "How it fails.")
    op: str | None = setting(None, _op, "During which operation.")
    netns_op: str | None = setting(
        None, _op, "The operation in the kernel-level lab, where it differs."
    )
    pending: str | None = setting(
        None,
        string,
        "What a correct detour reports here, which this one does not yet: why (the open issue).",
    )


# The tables of a scenario file: name -> (schema, whether it is an array of tables). The top
# level's own keys are ScenarioKeys.
SCENARIO_SECTIONS: dict[str, tuple[type, bool]] = {
    "dpi": (DpiSection, False),
    "allow": (AllowSection, False),
    "rule": (RuleTable, True),
    "dns": (DnsRuleTable, True),
    "check": (CheckTable, True),
    "expect": (ExpectTable, True),
}
