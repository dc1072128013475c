"""`detour probe`'s output: the JSON document scripts read, the table people read, and a
summary at the end that names what works for each service (as zapret's blockcheck does).

JSON (stable; extra keys may be added, none removed; `search` only with `--search`; `udp`
only for a service with `udp_probes`: [{"route", "ok", "diagnosis", "detail", "rtt_ms",
"targets"}], docs/udp.md):

    {"services": [{"name": "telegram", "reachable": true, "best_route": "tls-fragment",
                   "routes": [{"route": "direct", "ok": false, "failure": "connection_reset",
                               "op": "tls_handshake", "latency_ms": null, "rate_kbps": null,
                               "diagnosis": "...", "chain": "direct", "targets": [...]}, ...]}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .result import ProbeResult

__all__ = ["ServiceReport", "json_report", "summary", "table"]

OK_MARK, FAIL_MARK, NA_MARK = "✓", "✗", "–"


@dataclass
class ServiceReport:
    name: str
    results: list[ProbeResult]  # in the service's route order
    search: dict[str, Any] | None = None  # what a strategy search tried and what won
    # UDP probes of the service's `udp_probes` per route (helper/probe/udp.py), if it has any
    udp: list[dict[str, Any]] | None = None

    @property
    def working(self) -> list[ProbeResult]:
        return [r for r in self.results if r.ok]

    @property
    def best_route(self) -> str | None:
        return self.working[0].route if self.working else None

    @property
    def reachable(self) -> bool:
        return bool(self.working)

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "reachable": self.reachable,
            "best_route": self.best_route,
            "routes": [result.to_json() for result in self.results],
        }
        if self.search is not None:
            data["search"] = self.search
        if self.udp is not None:
            data["udp"] = self.udp
        return data


def json_report(reports: list[ServiceReport]) -> dict[str, Any]:
    return {"services": [report.to_json() for report in reports]}


def _verdict(result: ProbeResult) -> str:
    if result.ok:
        extra = []
        if result.latency_ms is not None:
            extra.append(f"{result.latency_ms:.0f} ms")
        if result.rate_kbps is not None:
            extra.append(f"{result.rate_kbps:.0f} KB/s")
        return f"{OK_MARK} works" + (f", {', '.join(extra)}" if extra else "")
    if not result.applicable:
        return f"{NA_MARK} {result.diagnosis}"
    return f"{FAIL_MARK} {result.diagnosis or result.failure}"


def table(reports: list[ServiceReport]) -> str:
    service_width = max([len("SERVICE"), *(len(r.name) for r in reports)])
    route_width = max([len("ROUTE"), *(len(x.route) for r in reports for x in r.results)])
    lines = [f"{'SERVICE':{service_width}}  {'ROUTE':{route_width}}  RESULT"]
    for report in reports:
        for i, result in enumerate(report.results):
            name = report.name if i == 0 else ""
            lines.append(
                f"{name:{service_width}}  {result.route:{route_width}}  {_verdict(result)}"
            )
        for udp in report.udp or ():  # the service's calls, route by route (docs/udp.md)
            verdict = (
                f"{OK_MARK} UDP works" + (f", {udp['rtt_ms']:.0f} ms" if udp["rtt_ms"] else "")
                if udp["ok"]
                else f"{FAIL_MARK} UDP: {udp['diagnosis']}"
            )
            lines.append(f"{'':{service_width}}  {udp['route']:{route_width}}  {verdict}")
    return "\n".join(lines) + "\n"


def summary(reports: list[ServiceReport]) -> str:
    width = max([0, *(len(r.name) for r in reports)])
    lines = ["Summary:"]
    for report in reports:
        if report.reachable:
            best = report.working[0]
            timing = f" ({best.latency_ms:.0f} ms)" if best.latency_ms is not None else ""
            others = ", ".join(r.route for r in report.working[1:])
            also = f"; also {others}" if others else ""
            lines.append(f"  {OK_MARK} {report.name:{width}}  works via {best.route}{timing}{also}")
        else:
            # Routes that cannot carry the service at all are not part of why it fails.
            tried = [r for r in report.results if r.applicable] or report.results
            why = "; ".join(f"{r.route}: {r.diagnosis or r.failure}" for r in tried)
            lines.append(
                f"  {FAIL_MARK} {report.name:{width}}  no route works ({why or 'no routes'})"
            )
        if report.search is not None:
            tried = len({t["chain"] for t in report.search["tried"]})
            lines.append(f"    search ({tried} strategies tried): {report.search['verdict']}")
    return "\n".join(lines) + "\n"
