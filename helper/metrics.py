"""Prometheus metrics for the status API (`GET /metrics`), written by hand in the text
exposition format 0.0.4 so the router build carries no metrics library.

Two sources: counters fed by the engine's event stream (connections opened, bytes of
connections that ended, probe durations, failures), and values read from live state when a
scraper asks (connections open now and the bytes they moved so far, route health). Counters
are read after the event queue is drained, so a scrape sees every event published before it.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
"""

from __future__ import annotations

import asyncio
import math
import platform
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from . import __version__
from .events import (
    ConnectionClosed,
    ConnectionOpened,
    DialFailed,
    Event,
    EventBus,
    ProbeFinished,
    ProbeStarted,
)

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["CONTENT_TYPE", "PROBE_BUCKETS", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Upper bounds (seconds) of the probe duration histogram: a probe is one or a few round trips
# (fast), or waits for its timeout (5 s by default).
PROBE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Events that may wait unread between drains; past it the oldest are lost (and counted).
QUEUE_LIMIT = 10_000

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(PROBE_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(PROBE_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1


class Metrics:
    """Counters kept from the engine's events. Create it before the engine starts, so the
    first probes are counted too."""

    def __init__(self, events: EventBus) -> None:
        self._subscription = events.subscribe(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.started = time.time()
        self.connections: dict[tuple[str, str], int] = defaultdict(int)
        self.bytes: dict[tuple[str, str, str], int] = defaultdict(int)  # +direction
        self.failures: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        self.probe_seconds: dict[tuple[str, str], _Histogram] = defaultdict(_Histogram)
        self._open: dict[int, tuple[str, str]] = {}  # connection id -> (service, route)
        self._probing: dict[tuple[str, str], float] = {}  # (service, route) -> started at

    def start(self) -> None:
        """Keep draining the events in the background, so a rare scraper loses none."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._subscription.close()

    async def _follow(self) -> None:
        async for event in self._subscription:
            self.observe(event)

    def drain(self) -> None:
        while (event := self._subscription.get_nowait()) is not None:
            self.observe(event)

    @property
    def dropped(self) -> int:
        return self._subscription.dropped

    def observe(self, event: Event) -> None:
        if isinstance(event, ConnectionOpened):
            key = (event.service or "", event.route)
            self._open[event.id] = key
            self.connections[key] += 1
        elif isinstance(event, ConnectionClosed):
            opened = self._open.pop(event.id, None)
            if opened is not None:
                self.bytes[(*opened, "up")] += event.up
                self.bytes[(*opened, "down")] += event.down
        elif isinstance(event, ProbeStarted):
            self._probing[(event.service, event.route)] = event.at
        elif isinstance(event, ProbeFinished):
            result = event.result
            started = self._probing.pop((result.service, result.route), None)
            if started is not None:
                seconds = max(0.0, event.at - started)
            else:  # its start was lost: the probe's own steps are the next best measure
                seconds = sum(step.ms for t in result.targets for step in t.steps) / 1000
            self.probe_seconds[(result.service, result.route)].observe(seconds)
            # A route that cannot carry the service at all (tgws) has not failed.
            if result.applicable and result.failure is not None and result.op is not None:
                key = ("probe", result.service, result.route, result.failure.value, result.op.value)
                self.failures[key] += 1
        elif isinstance(event, DialFailed):
            key = ("connection", event.service or "", event.route, event.failure, event.op)
            self.failures[key] += 1

    # --- exposition -----------------------------------------------------------------------

    def render(self, engine: Engine) -> str:
        """Every metric, from the events so far and the engine's live state."""
        self.drain()
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

        # With the queue drained, a connection the listener no longer has but still counted
        # open lost its ConnectionClosed to an overflow: forget it rather than keep it forever.
        for gone in self._open.keys() - engine.listener.connections.keys():
            del self._open[gone]
        open_now: dict[tuple[str, str], int] = defaultdict(int)
        live: dict[tuple[str, str, str], int] = defaultdict(int)
        for conn in engine.listener.connections.values():
            key = self._open.get(conn.id)
            if key is None:  # still in its handshake or choosing a route
                continue
            open_now[key] += 1
            live[(*key, "up")] += conn.stats.up
            live[(*key, "down")] += conn.stats.down
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
                for k, v in sorted(self.connections.items())
            ),
        )
        moved = dict(self.bytes)
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
            self._health(engine),
        )
        family(
            "detour_route_active",
            "gauge",
            "1 for the route new connections of a service try first, when one is known to work.",
            self._active(engine),
        )
        family(
            "detour_probe_duration_seconds",
            "histogram",
            "How long a probe of a service through a route took.",
            self._probe_histograms(),
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
                for k, v in sorted(self.failures.items())
            ),
        )
        family(
            "detour_metrics_events_dropped_total",
            "counter",
            "Events the metrics fell too far behind to count (counters undercount by these).",
            [_sample("detour_metrics_events_dropped_total", (), self.dropped)],
        )
        return "\n".join(out) + "\n"

    def _health(self, engine: Engine) -> Iterator[str]:
        router = engine.router
        for service in router.services:
            for name in service.routes or [route.name for route in router.routes]:
                ok = router.health.get(service.name, name).ok
                yield _sample("detour_route_healthy", _sr((service.name, name)), 1 if ok else 0)

    def _active(self, engine: Engine) -> Iterator[str]:
        for service in engine.router.services:
            active = engine.router.active_route(service)
            if active is not None:
                yield _sample("detour_route_active", _sr((service.name, active.name)), 1)

    def _probe_histograms(self) -> Iterator[str]:
        name = "detour_probe_duration_seconds"
        for key, histogram in sorted(self.probe_seconds.items()):
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
