"""The details of one cell: the route's chain (credentials redacted), what is known and where
it came from, the diagnosis in full, and each probe target's steps with their timings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Static

from .model import FAILS, WORKS, Cell, format_bytes, format_duration

if TYPE_CHECKING:
    from ..probe.result import ProbeResult, TargetResult
    from ..status import Health, RouteView, UdpHealthView

__all__ = ["CellDetails", "details_text", "search_text", "udp_text"]

_SOURCES = {
    "probe": "probed",
    "dial": "from client connections",
    "memory": "remembered from the last run on this network",
}


def details_text(
    service: str,
    route: RouteView,
    cell: Cell,
    health: Health,
    result: ProbeResult | None,
    now: float,
    styles: dict[str, str] | None = None,
) -> Text:
    """`now` is wall-clock time (probes are stamped with it)."""
    styles = styles or {}
    ok_style, fail_style = styles.get("ok", "green"), styles.get("fail", "red")
    text = Text()
    text.append(f"{service} via {route.name}", "bold")
    text.append(f"   chain: {route.chain}\n", "dim")
    state = cell.label().strip()
    text.append(state, styles.get(cell.state, ""))
    notes = []
    if cell.pinned:
        notes.append("pinned by you: the only route it takes")
    elif cell.active:
        notes.append("new connections take this route first")
    if health.checked_at:
        ago = format_duration(max(0.0, now - health.checked_at))
        notes.append(f"{_SOURCES.get(health.source, health.source)} {ago} ago")
    if notes:
        text.append("   (" + "; ".join(notes) + ")", "dim")
    text.append("\n")
    if health.ok is False:
        text.append(health.diagnosis or (health.failure or "fails"), fail_style)
        if health.failure and health.op:
            text.append(f"\n{health.failure} during {health.op}", "dim")
        text.append("\n")
    if result is None:
        if cell.state not in ("disabled", "unused"):
            text.append("No probe through this route yet: r probes this service.", "dim")
        return text
    if result.checked_at != health.checked_at:
        ago = format_duration(max(0.0, now - result.checked_at))
        text.append(f"The last probe, {ago} ago:\n", "dim")
    for target in result.targets:
        _target(text, target, ok_style, fail_style)
    return text


def _target(text: Text, target: TargetResult, ok_style: str, fail_style: str) -> None:
    if target.skipped:
        text.append(f"– {target.target}\n    not applicable: {target.skipped}\n", "dim")
        return
    text.append(f"{WORKS if target.ok else FAILS} ", ok_style if target.ok else fail_style)
    text.append(target.target)
    if target.rate_kbps is not None:
        text.append(f"  {format_bytes(round(target.rate_kbps * 1000))}/s", "dim")
    text.append("\n    ")
    for i, step in enumerate(target.steps):
        if i:
            text.append(" · ", "dim")
        text.append(f"{step.name} {step.ms:.0f} ms ")
        text.append(WORKS if step.ok else FAILS, ok_style if step.ok else fail_style)
    if not target.steps:
        text.append("no step completed", "dim")
    text.append("\n")
    if not target.ok:
        what = f"{target.failure} during {target.op}" if target.failure else "failed"
        text.append(f"    {what}", fail_style)
        if target.detail:
            text.append(f": {target.detail}", "dim")
        text.append("\n")


def search_text(search: Mapping[str, Any], running: bool) -> Text:
    """What the latest strategy search tried for the service, and what won
    (docs/search.md)."""
    text = Text("\nStrategy search", "bold")
    tried = search.get("tried") or []
    winner = search.get("winner")
    if running and not search.get("verdict"):
        text.append(f"  running: {len(tried)} attempts so far\n", "dim")
    else:
        text.append(f"  {len(tried)} attempts\n", "dim")
    if search.get("verdict"):
        text.append(str(search["verdict"]) + "\n", "" if winner else "dim")
    for attempt in tried[-8:]:
        mark = WORKS if attempt.get("ok") else FAILS
        what = (
            "works" if attempt.get("ok") else f"{attempt.get('failure')} during {attempt.get('op')}"
        )
        where = "every target" if attempt.get("stage") == "confirm" else attempt.get("target")
        text.append(f"{mark} {attempt.get('chain')}", "")
        text.append(f"  {what} ({where})\n", "dim")
    return text


def udp_text(view: UdpHealthView | None, styles: dict[str, str] | None = None) -> Text:
    """The latest UDP probe of the service through the route (docs/udp.md), for a
    service with udp_probes: UDP health is apart from TCP's."""
    styles = styles or {}
    text = Text("\nUDP", "bold")
    if view is None:
        text.append("  not probed yet\n", "dim")
        return text
    if view.ok:
        rtt = view.row.get("rtt_ms")
        text.append(f"  {WORKS} works", styles.get("ok", "green"))
        if rtt is not None:
            text.append(f"  {rtt} ms", "dim")
        text.append("\n")
        return text
    text.append(f"  {FAILS} {view.diagnosis}", styles.get("fail", "red"))
    detail = view.row.get("detail")
    if detail:
        text.append(f": {detail}", "dim")
    text.append("\n")
    return text


class CellDetails(Static):
    """Shows details_text for the cell under the matrix cursor."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: Text | None = None

    def show(self, content: Text) -> None:
        # Redrawn four times a second: only a change is worth a repaint.
        if self._shown is None or self._shown != content:
            self._shown = content
            self.update(content)
