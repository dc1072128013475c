"""`detour router-rules`: the firewall rules that hand a router's LAN traffic for the services
to detour, written from the config detour runs with (docs/router.md "Transparent redirect").

    config ([listen] transparent, transparent_udp; each [[service]]'s cidrs, domains, ports)
        -> RouterRules (what to hand over, checked)  -> nftables text / dnsmasq lines / ip rules

It prints; it never loads rules itself (`detour router-rules --lan br-lan | nft -f -`). The
output is the same for the same config and options (sets sorted, no timestamp), so it can be
written to a file and compared.

Per service: its `cidrs` in an interval set per family (collapsed: nftables refuses
overlapping intervals), its `domains` in a set per family that dnsmasq fills as the LAN's
devices look the names up (`--dnsmasq` prints the lines), and its `ports` (none: any port).
TCP to these is redirected to `listen.transparent`; UDP other than 443 goes by TPROXY to
`listen.transparent_udp`; QUIC (UDP 443) to them is rejected, so apps fall back to TCP at
once. TPROXY needs policy routing for its mark (`--policy-routing` prints it).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transports import Endpoint

from . import __version__

__all__ = [
    "FLAVOURS",
    "RouterRules",
    "RulesError",
    "add_router_rules_parser",
    "interface_name",
    "router_rules_command",
]

EXIT_OK, EXIT_USAGE = 0, 2
FLAVOURS = ("nftables", "openwrt")
QUIC = 443  # UDP 443 is QUIC: rejected to the services so apps use TCP (redirected) at once
NAME_TIMEOUT = "1h"  # how long an address dnsmasq put in a name set stays there
TABLE = "detour"  # the nftables flavour's table (inet)
OPENWRT_TABLE = "fw4"  # fw4 includes /etc/nftables.d/*.nft inside its own table
RESERVED_TABLES = (253, 254, 255)  # the kernel's default, main and local tables
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # Linux: < IFNAMSIZ (16), a safe alphabet


class RulesError(ValueError):
    """A reason no rules can be written, naming the key or option: one line."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


def interface_name(text: str) -> str:
    """A LAN interface name as `--lan` takes it (written into the rules between quotes), or
    RulesError. Linux names are at most 15 bytes without '/', ':' or spaces; this takes the
    characters names have in practice (br-lan, eth0.2, wlan0) and nothing that could
    end the quoted string."""
    if not isinstance(text, str) or not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise RulesError(
            "--lan",
            f"{text!r} is not an interface name (1 to 15 letters, digits, '.', '_' or '-', "
            "e.g. br-lan)",
        )
    return text


def _number(option: str, text: str, low: int, high: int, reserved: tuple[int, ...] = ()) -> int:
    try:
        value = int(text, 0)
    except (TypeError, ValueError):
        value = low - 1
    if not low <= value <= high or value in reserved:
        also = f" other than {', '.join(map(str, reserved))}" if reserved else ""
        raise RulesError(option, f"{text!r} is not a number from {low} to {high}{also}")
    return value


@dataclass(frozen=True)
class Target:
    """Where the firewall hands a family's packets: `address` None for the address the packet
    came in on (a listener on [::] or 0.0.0.0), else the listener's own address."""

    port: int
    families: dict[str, str | None]  # "ip" / "ip6" -> address or None


def _target(endpoint: Endpoint | None, key: str) -> Target | None:
    if endpoint is None:
        return None
    ip = endpoint.ip
    if ip is None or ip.is_loopback:
        raise RulesError(
            key,
            f"{endpoint} is a loopback address: traffic from the LAN cannot be handed to it; "
            'listen on "[::]:PORT", "0.0.0.0:PORT" or the router\'s LAN address',
        )
    if endpoint.port == 0:
        raise RulesError(key, f"{endpoint}: port 0 is any free port; the rules need a fixed one")
    families: dict[str, str | None]
    if ip.is_unspecified:  # [::] is one dual-stack socket: it takes both families
        families = dict.fromkeys(("ip", "ip6") if ip.version == 6 else ("ip",))
    else:
        families = {"ip" if ip.version == 4 else "ip6": str(ip)}
    return Target(endpoint.port, families)


@dataclass(frozen=True)
class ServiceSets:
    """One service as the firewall sees it."""

    name: str  # the service's name in the config
    key: str  # its sets' name stem
    cidrs: dict[str, tuple[str, ...]]  # "ip" / "ip6" -> collapsed ranges, sorted
    domains: tuple[str, ...]
    ports: tuple[int, ...]  # empty: any port

    def udp_ports(self) -> tuple[int, ...] | None:
        """The ports to TPROXY (empty tuple: none; None: any but QUIC)."""
        if not self.ports:
            return None
        return tuple(p for p in self.ports if p != QUIC)


def _service_sets(services: Any, prefix: str) -> list[ServiceSets]:
    result = []
    for service in sorted(services, key=lambda s: s.name):
        cidrs: dict[str, tuple[str, ...]] = {}
        for family, version in (("ip", 4), ("ip6", 6)):
            nets = [n for n in service.cidrs if n.version == version]
            if nets:
                collapsed = sorted(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
                cidrs[family] = tuple(str(n) for n in collapsed)
        # nftables names start with a letter ("1x" would not parse)
        key = prefix + (service.name if service.name[:1].isalpha() else f"svc_{service.name}")
        domains, ports = tuple(sorted(service.domains)), tuple(sorted(service.ports))
        result.append(ServiceSets(service.name, key, cidrs, domains, ports))
    return result


_SUFFIX = {"ip": "4", "ip6": "6"}
_ADDR_TYPE = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}


@dataclass(frozen=True)
class RouterRules:
    """The rules for one config and the LAN interfaces, in one of the flavours."""

    lans: tuple[str, ...]
    tcp: Target | None
    udp: Target | None
    services: tuple[ServiceSets, ...]
    flavour: str = "nftables"
    fwmark: int = 1
    route_table: int = 100
    source: str = "built-in"

    @classmethod
    def from_config(
        cls,
        config: Any,
        lans: list[str] | tuple[str, ...],
        flavour: str = "nftables",
        *,
        fwmark: int = 1,
        route_table: int = 100,
    ) -> RouterRules:
        if flavour not in FLAVOURS:
            raise RulesError("--flavour", f"{flavour!r} is not one of {', '.join(FLAVOURS)}")
        if not lans:
            raise RulesError("--lan", "required: the LAN interface (e.g. --lan br-lan)")
        checked = tuple(sorted({interface_name(lan) for lan in lans}))
        listen = config.listen
        tcp = _target(listen.transparent, "listen.transparent")
        udp = _target(listen.transparent_udp, "listen.transparent_udp")
        if tcp is None and udp is None:
            raise RulesError(
                "listen.transparent",
                'not set (nor listen.transparent_udp): add transparent = "[::]:1090" to '
                "[listen] (and transparent_udp for calls) in the config",
            )
        prefix = "detour_" if flavour == "openwrt" else ""
        services = tuple(_service_sets(config.services, prefix))
        if not services:
            raise RulesError("service", "the config has no [[service]]: nothing to redirect")
        return cls(
            lans=checked,
            tcp=tcp,
            udp=udp,
            services=services,
            flavour=flavour,
            fwmark=fwmark,
            route_table=route_table,
            source=config.source,
        )

    # --- pieces ---------------------------------------------------------------------------

    def header(self, what: str) -> list[str]:
        # The file's name as a comment: nothing in it may end the comment line.
        source = "".join(c if c.isprintable() else "?" for c in self.source)
        return [
            f"# {what}, written by detour {__version__} (detour router-rules) from {source}.",
            "# Written again when the config's services or [listen] change; edits here are lost.",
        ]

    def _iif(self) -> str:
        if len(self.lans) == 1:
            return f'iifname "{self.lans[0]}"'
        return "iifname { " + ", ".join(f'"{lan}"' for lan in self.lans) + " }"

    def _sets(self) -> list[tuple[str, list[str]]]:
        """(name, body lines) of every set."""
        sets = []
        for service in self.services:
            for family, ranges in service.cidrs.items():
                elements = "elements = { " + ", ".join(ranges) + " }"
                body = [f"type {_ADDR_TYPE[family]}; flags interval;", elements]
                sets.append((f"{service.key}_v{_SUFFIX[family]}", body))
            for family in ("ip", "ip6") if service.domains else ():
                body = [f"type {_ADDR_TYPE[family]}; flags timeout; timeout {NAME_TIMEOUT};"]
                sets.append((f"{service.key}_dns{_SUFFIX[family]}", body))
        return sets

    def _matches(self, service: ServiceSets, families: list[str]) -> list[tuple[str, str]]:
        """(family, `ip daddr @set`) for each of the service's sets in these families."""
        found = []
        for family in families:
            if family in service.cidrs:
                found.append((family, f"{family} daddr @{service.key}_v{_SUFFIX[family]}"))
            if service.domains:
                found.append((family, f"{family} daddr @{service.key}_dns{_SUFFIX[family]}"))
        return found

    def _handover(
        self,
        target: Target,
        ports: Callable[[ServiceSets], str | None],
        action: Callable[[str, str], str],
    ) -> list[str]:
        """Per service, a comment and a rule for each of its sets in the target's families:
        `ports` gives the rule's port match (None: no rules for it), `action` what is done
        (given the family and the address to hand to: "" for the one the packet came in on,
        as a listener on [::] or 0.0.0.0 takes it)."""
        rules = []
        for service in self.services:
            matches = self._matches(service, list(target.families))
            match_ports = ports(service)
            if match_ports is None or not matches:
                continue
            rules.append(f"# {service.name}")
            for family, match in matches:
                address = target.families[family]
                to = "" if address is None else (f"[{address}]" if family == "ip6" else address)
                rules.append(f"{self._iif()} {match} {match_ports} {action(family, to)}")
        return rules

    def _redirect_rules(self) -> list[str]:
        assert self.tcp is not None
        port = self.tcp.port
        return self._handover(
            self.tcp,
            lambda s: _port_match("tcp", s.ports) if s.ports else "meta l4proto tcp",
            lambda family, to: f"dnat {family} to {to}:{port}" if to else f"redirect to :{port}",
        )

    def _tproxy_rules(self) -> list[str]:
        assert self.udp is not None
        port, mark = self.udp.port, self.fwmark

        def ports(service: ServiceSets) -> str | None:
            udp_ports = service.udp_ports()
            if udp_ports == ():
                return None  # its only port is QUIC's
            return f"udp dport != {QUIC}" if udp_ports is None else _port_match("udp", udp_ports)

        return self._handover(
            self.udp,
            ports,
            lambda family, to: f"tproxy {family} to {to}:{port} meta mark set {mark} accept",
        )

    def _quic_rules(self) -> list[str]:
        rules = []
        for service in self.services:
            if service.ports and QUIC not in service.ports:
                continue
            for _family, match in self._matches(service, ["ip", "ip6"]):
                rules.append(f"{self._iif()} {match} udp dport {QUIC} reject")
        return rules

    def _chains(self, prefix: str, openwrt: bool) -> list[tuple[str, str, list[str]]]:
        """(name, hook line, rules) of every chain."""
        chains = []
        if self.tcp is not None:
            nat = "dstnat - 5" if openwrt else "dstnat"  # before fw4's own dstnat chain
            note = f"# TCP to the services -> listen.transparent (:{self.tcp.port})"
            chains.append(
                (
                    f"{prefix}redirect",
                    f"type nat hook prerouting priority {nat}; policy accept;",
                    [note, *self._redirect_rules()],
                )
            )
        if self.udp is not None:
            note = (
                f"# UDP to the services but QUIC -> listen.transparent_udp (:{self.udp.port}) "
                f"by TPROXY; mark {self.fwmark} makes them local (policy routing)"
            )
            chains.append(
                (
                    f"{prefix}calls",
                    "type filter hook prerouting priority mangle; policy accept;",
                    [note, *self._tproxy_rules()],
                )
            )
        quic = self._quic_rules() if self.tcp is not None else []
        if quic:
            forward = "filter - 5" if openwrt else "filter"
            note = "# no QUIC to the services: apps fall back to TCP at once"
            chains.append(
                (
                    f"{prefix}noquic",
                    f"type filter hook forward priority {forward}; policy accept;",
                    [note, *quic],
                )
            )
        return chains

    # --- outputs --------------------------------------------------------------------------

    def nftables(self) -> str:
        """The ruleset: a whole `table inet detour` (loaded again, it replaces itself), or
        for OpenWrt the sets and chains that fw4 puts inside its own table."""
        openwrt = self.flavour == "openwrt"
        indent = "" if openwrt else "    "
        what = "fw4 include (/etc/nftables.d/20-detour.nft)" if openwrt else "nftables rules"
        lines = self.header(what)
        lines.append(f"# LAN: {', '.join(self.lans)}")
        if openwrt:
            lines.append("# fw4 reload (or service firewall restart) loads it.")
        else:
            lines += [
                "# nft -f FILE loads it (or detour router-rules ... | nft -f -).",
                f"table inet {TABLE}",
                f"delete table inet {TABLE}",  # loading again replaces the table
                f"table inet {TABLE} {{",
            ]
        for name, body in self._sets():
            lines.append(f"{indent}set {name} {{")
            lines += [f"{indent}    {line}" for line in body]
            lines.append(f"{indent}}}")
        for name, hook, rules in self._chains("detour_", openwrt):
            lines.append(f"{indent}chain {name} {{")
            lines.append(f"{indent}    {hook}")
            lines += [f"{indent}    {rule}" for rule in rules]
            lines.append(f"{indent}}}")
        if not openwrt:
            lines.append("}")
        if self.udp is not None:
            lines.append("# TPROXY also needs, at boot (detour router-rules --policy-routing):")
            lines += [f"#   {line}" for line in self._policy_lines()]
        return "\n".join(lines) + "\n"

    def _policy_lines(self) -> list[str]:
        assert self.udp is not None
        lines = []
        everything = {"ip": ("-4", "0.0.0.0/0"), "ip6": ("-6", "::/0")}
        for family in self.udp.families:
            flag, network = everything[family]
            rule = f"fwmark {self.fwmark} lookup {self.route_table}"
            lines += [
                f"ip {flag} rule del {rule} 2>/dev/null || true",
                f"ip {flag} rule add {rule}",
                f"ip {flag} route replace local {network} dev lo table {self.route_table}",
            ]
        return lines

    def policy_routing(self) -> str:
        """A shell script: the rules that make TPROXY's marked packets local (idempotent)."""
        if self.udp is None:
            raise RulesError(
                "listen.transparent_udp",
                "not set: policy routing is for transparent UDP (TPROXY) only",
            )
        lines = ["#!/bin/sh", *self.header("Policy routing for TPROXY")]
        return "\n".join([*lines, *self._policy_lines()]) + "\n"

    def dnsmasq(self) -> str:
        """dnsmasq's `nftset=` lines (2.87 and later): each service's names into its sets."""
        table = f"inet#{OPENWRT_TABLE if self.flavour == 'openwrt' else TABLE}"
        lines = self.header("dnsmasq configuration")
        named = [s for s in self.services if s.domains]
        if not named:
            lines.append("# no service is known by name: nothing to add")
        for service in named:
            names = "/".join(service.domains)
            lines.append(
                f"nftset=/{names}/4#{table}#{service.key}_dns4,6#{table}#{service.key}_dns6"
            )
        return "\n".join(lines) + "\n"


def _port_match(protocol: str, ports: tuple[int, ...]) -> str:
    if len(ports) == 1:
        return f"{protocol} dport {ports[0]}"
    return f"{protocol} dport {{ " + ", ".join(str(p) for p in ports) + " }"


# --- the command ----------------------------------------------------------------------------


def add_router_rules_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "router-rules",
        help="print the router's firewall rules for the services",
        description="Print the nftables rules that hand the LAN's traffic for the services "
        "to detour's transparent listeners ([listen] transparent, transparent_udp), from the "
        "config: each service's cidrs, names and ports. Pipe them to `nft -f -` or write them "
        "to a file; nothing is loaded by detour. Exit 2 naming the key or option when the "
        "rules cannot be written.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        dest="rules_config",
        help="config file (default: built-in)",
    )
    parser.add_argument(
        "--lan",
        metavar="IFACE",
        action="append",
        help="the LAN interface the devices come in on (e.g. br-lan); repeat for several",
    )
    parser.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default="nftables",
        help="nftables: a whole `table inet detour`; openwrt: the sets and chains of an fw4 "
        "include (/etc/nftables.d/20-detour.nft) (default: nftables)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--dnsmasq",
        action="store_true",
        help="instead: dnsmasq's nftset= lines that fill the services' name sets",
    )
    what.add_argument(
        "--policy-routing",
        action="store_true",
        help="instead: the ip rule/ip route commands TPROXY needs (a shell script)",
    )
    parser.add_argument(
        "--fwmark", metavar="N", default="1", help="the mark of TPROXY'd packets (default: 1)"
    )
    parser.add_argument(
        "--route-table",
        metavar="N",
        default="100",
        help="the routing table that makes marked packets local (default: 100)",
    )


def router_rules_command(args: argparse.Namespace, config_path: str | None) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rules = RouterRules.from_config(
            config,
            args.lan or [],
            args.flavour,
            fwmark=_number("--fwmark", args.fwmark, 1, 0xFFFFFFFF),
            route_table=_number("--route-table", args.route_table, 1, 0xFFFFFFFE, RESERVED_TABLES),
        )
        if args.dnsmasq:
            text = rules.dnsmasq()
        elif args.policy_routing:
            text = rules.policy_routing()
        else:
            text = rules.nftables()
    except RulesError as exc:
        print(f"detour router-rules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(text)
    return EXIT_OK
