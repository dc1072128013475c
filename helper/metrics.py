"""Prometheus metrics for the status API (`GET /metrics`), written by hand in the text
exposition format 0.0.4 so the router build carries no metrics library.

Everything comes from one status snapshot (helper/status.py): the counters kept where their
events happen (connections that reached their destination, bytes of connections that ended,
probe durations, failures), and live state (connections open now and the bytes they moved
so far, route health, the active routes).

Format: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
"""

from __future__ import annotations

import math
import platform
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

from . import __version__
from .status import PROBE_BUCKETS, Histogram, Snapshot

__all__ = ["CONTENT_TYPE", "PROBE_BUCKETS", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """The exposition of a snapshot, and when detour started."""

    def __init__(self) -> None:
        self.started = time.time()

    def render(self, snapshot: Snapshot) -> str:
        """Every metric, from the counters so far and the snapshot's live state."""
        counters = snapshot.counters
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
            out.append(f"# HELP {name} {_escape_help(help_text)}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)

        family(
            "detour_build_info",
            "gauge",
            "detour's version and Python's, as labels; always 1.",
            [
                _sample(
                    "detour_build_info",
                    (("version", __version__), ("python", platform.python_version())),
                    1,
                )
            ],
        )
        family(
            "detour_start_time_seconds",
            "gauge",
            "When detour started, in seconds since the Unix epoch.",
            [_sample("detour_start_time_seconds", (), self.started)],
        )
        open_now: dict[tuple[str, str], int] = defaultdict(int)
        live: dict[tuple[str, str, str], int] = defaultdict(int)
        for conn in snapshot.connections:
            if conn.route is None:  # still in its handshake or choosing a route
                continue
            key = (conn.service or "", conn.route)
            open_now[key] += 1
            live[(*key, "up")] += conn.up
            live[(*key, "down")] += conn.down
        family(
            "detour_connections_open",
            "gauge",
            "Client connections relaying now, by service and route.",
            (_sample("detour_connections_open", _sr(k), v) for k, v in sorted(open_now.items())),
        )
        family(
            "detour_connections_total",
            "counter",
            "Client connections that reached their destination, by service and route.",
            (
                _sample("detour_connections_total", _sr(k), v)
                for k, v in sorted(counters.connections.items())
            ),
        )
        moved = dict(counters.bytes)
        for key, value in live.items():
            moved[key] = moved.get(key, 0) + value
        family(
            "detour_relayed_bytes_total",
            "counter",
            "Bytes relayed for clients, by service, route and direction (up: client to "
            "destination; down: destination to client); open connections included.",
            (
                _sample(
                    "detour_relayed_bytes_total",
                    (*_sr(k[:2]), ("direction", k[2])),
                    v,
                )
                for k, v in sorted(moved.items())
            ),
        )
        family(
            "detour_route_healthy",
            "gauge",
            "1 when a service's route is known to work (last probe or connections), 0 when it "
            "failed or is not checked yet.",
            _health(snapshot),
        )
        family(
            "detour_route_active",
            "gauge",
            "1 for the route new connections of a service try first, when one is known to work.",
            (
                _sample("detour_route_active", _sr((service.name, service.active)), 1)
                for service in snapshot.services
                if service.active is not None
            ),
        )
        family(
            "detour_probe_duration_seconds",
            "histogram",
            "How long a probe of a service through a route took.",
            probe_histograms(counters.probe_seconds),
        )
        family(
            "detour_failures_total",
            "counter",
            "Failures by source (probe or connection), service, route, failure (the taxonomy's "
            "failure string) and operation.",
            (
                _sample(
                    "detour_failures_total",
                    (
                        ("source", k[0]),
                        ("service", k[1]),
                        ("route", k[2]),
                        ("failure", k[3]),
                        ("op", k[4]),
                    ),
                    v,
                )
                for k, v in sorted(counters.failures.items())
            ),
        )
        family(
            "detour_network_state",
            "gauge",
            "1 for the network's state (online, offline, unknown), 0 for the others: offline "
            "when nothing answers, not even the control targets.",
            (
                _sample("detour_network_state", (("state", state),), int(state == network))
                for state in ("online", "offline", "unknown")
                for network in (snapshot.network.state,)
            ),
        )
        udp_families(snapshot, family)
        family(
            "detour_metrics_events_dropped_total",
            "counter",
            # Always 0 now that the counters are kept where their events happen; kept for
            # dashboards that read it.
            "Events the metrics fell too far behind to count (counters undercount by these).",
            [_sample("detour_metrics_events_dropped_total", (), 0)],
        )
        return "\n".join(out) + "\n"


def udp_families(snapshot: Snapshot, family) -> None:
    """UDP (docs/udp.md): associations, datagrams and bytes each way, drops by reason, per
    UDP listener ("mixed": SOCKS5 UDP ASSOCIATE, "transparent-udp"); UDP health per route."""

    def per_listener(name: str, value) -> Iterator[str]:
        for view in snapshot.udp:
            yield _sample(name, (("listener", view.listener),), value(view))

    def each_way(name: str, table) -> Iterator[str]:
        for view in snapshot.udp:
            for direction in ("up", "down"):
                labels = (("listener", view.listener), ("direction", direction))
                yield _sample(name, labels, table(view).get(direction, 0))

    family(
        "detour_udp_associations_open",
        "gauge",
        "UDP associations open now, by listener (mixed: SOCKS5 UDP ASSOCIATE; "
        "transparent-udp: a LAN device's flows).",
        per_listener("detour_udp_associations_open", lambda v: v.open),
    )
    family(
        "detour_udp_associations_total",
        "counter",
        "UDP associations opened, by listener.",
        per_listener("detour_udp_associations_total", lambda v: v.opened),
    )
    family(
        "detour_udp_associations_refused_total",
        "counter",
        "UDP associations refused for listen.udp_associations_per_client, by listener.",
        per_listener("detour_udp_associations_refused_total", lambda v: v.refused),
    )
    family(
        "detour_udp_associations_idle_total",
        "counter",
        "UDP associations ended by listen.udp_idle_timeout, by listener.",
        per_listener("detour_udp_associations_idle_total", lambda v: v.idle_ended),
    )
    family(
        "detour_udp_datagrams_total",
        "counter",
        "UDP datagrams relayed, by listener and direction (up: client to destination).",
        each_way("detour_udp_datagrams_total", lambda v: v.datagrams),
    )
    family(
        "detour_udp_bytes_total",
        "counter",
        "Payload bytes of the UDP datagrams relayed, by listener and direction.",
        each_way("detour_udp_bytes_total", lambda v: v.bytes),
    )
    family(
        "detour_udp_dropped_total",
        "counter",
        "UDP datagrams dropped, by listener and reason (malformed, fragment, foreign: no "
        "association, refused: policy, over_limit, no_route).",
        (
            _sample(
                "detour_udp_dropped_total",
                (("listener", view.listener), ("reason", reason)),
                count,
            )
            for view in snapshot.udp
            for reason, count in view.dropped.items()
        ),
    )
    family(
        "detour_udp_route_healthy",
        "gauge",
        "1 when a service's UDP probes answered through a route at the last probe, 0 when "
        "they were dropped or the route carries no UDP; services with udp_probes only.",
        (
            _sample("detour_udp_route_healthy", _sr(key), int(view.ok))
            for key, view in sorted(snapshot.udp_health.items())
        ),
    )


def _health(snapshot: Snapshot) -> Iterator[str]:
    for service in snapshot.services:
        for name in service.routes:
            ok = snapshot.health_of(service.name, name).ok
            yield _sample("detour_route_healthy", _sr((service.name, name)), 1 if ok else 0)


def probe_histograms(histograms: Mapping[tuple[str, str], Histogram]) -> Iterator[str]:
    name = "detour_probe_duration_seconds"
    for key, histogram in sorted(histograms.items()):
        labels = _sr(key)
        for bound, count in zip(PROBE_BUCKETS, histogram.buckets, strict=True):
            yield _sample(f"{name}_bucket", (*labels, ("le", _number(bound))), count)
        yield _sample(f"{name}_bucket", (*labels, ("le", "+Inf")), histogram.count)
        yield _sample(f"{name}_sum", labels, histogram.sum)
        yield _sample(f"{name}_count", labels, histogram.count)


def _sr(key: tuple[str, str]) -> Labels:
    return (("service", key[0]), ("route", key[1]))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _sample(name: str, labels: Labels, value: float) -> str:
    if labels:
        text = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
        return f"{name}{{{text}}} {_number(value)}"
    return f"{name} {_number(value)}"
