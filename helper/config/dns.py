"""`[dns]`: how detour itself resolves names, and fixed answers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import redact
from transports.resolver import ResolverSpec

from .schema import Problems, setting
from .values import domain, parse_duration, resolver, string


def _read_hosts(
    path: str, data: Any, problems: Problems, base: Path | None
) -> dict[str, tuple[str, ...]]:
    # A table whose keys are names the user chooses, each with a list of addresses: the
    # problems name the host (`dns.hosts."origin.test"[0]`).
    if not isinstance(data, dict):
        problems.add(path, 'expected a table like { "example.org" = ["192.0.2.1"] }')
        return {}
    hosts: dict[str, tuple[str, ...]] = {}
    for name, addresses in data.items():
        where = f'{path}."{name}"'
        try:
            normalized = domain(name)
        except ValueError as exc:
            problems.add(where, str(exc))
            continue
        if isinstance(addresses, str):
            addresses = [addresses]
        if not isinstance(addresses, list) or not addresses:
            problems.add(where, "expected a list of IP addresses")
            continue
        parsed = []
        for i, address in enumerate(addresses):
            try:
                parsed.append(str(ipaddress.ip_address(string(address))))
            except ValueError:
                problems.add(f"{where}[{i}]", f"{address!r} is not an IP address")
        hosts[normalized] = tuple(parsed)
    return hosts


@dataclass(frozen=True)
class DnsConfig:
    resolver: ResolverSpec = setting(
        "system",
        resolver,
        secret=redact,
        doc="How the `direct` base of a chain resolves names. One of the forms below.",
    )
    timeout: float = setting(
        "5s",
        parse_duration,
        "How long a lookup may take before it fails with `dns_timeout`: the `resolver` "
        "above, and `resolve:` layers (those get half their route's `timeout` when that is "
        "longer). Raise it on a slow network.",
    )
    # Fixed answers, like a hosts file for detour alone: name -> addresses.
    hosts: dict[str, tuple[str, ...]] = setting(
        {},
        read=_read_hosts,
        doc='Fixed answers, like a hosts file for detour alone: `{ "web.telegram.org" = '
        '["149.154.167.99"] }`. A name listed here is never sent to the resolver — a way '
        "around DNS poisoning when you know a good address — and applies to `resolve:` layers "
        "too.",
    )
