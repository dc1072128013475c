"""The main screen: a status line (where detour listens, probe progress), the routes x services
matrix, and below it the selected cell's details or the live connections; the keys in the
footer. Everything is redrawn from the app's latest status snapshot by `refresh_view`, which
the app calls on its timer. The keys are commands to the router (pin, unpin, disable,
enable: it enforces the rules and announces the change) and to the monitor (probe now)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from ..routing.router import CommandRefused
from . import model
from .connections import ConnectionsTable
from .details import CellDetails, details_text, search_text, udp_text
from .matrix import RouteMatrix, state_styles

if TYPE_CHECKING:
    from ..status import ServiceView
    from .front import Front

__all__ = ["MainScreen"]


class MainScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("r", "probe", "probe"),
        Binding("R", "probe_all", "probe all"),
        Binding("p", "pin", "pin"),
        Binding("d", "toggle_route", "on/off"),
        Binding("f", "search", "find"),
        Binding("c", "toggle_connections", "conns"),
    ]

    app: Front  # type: ignore[assignment]

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Vertical(id="routes"):
            yield RouteMatrix(id="matrix")
        with TabbedContent(id="lower", initial="details-pane"):
            with TabPane("Details", id="details-pane"), VerticalScroll():
                yield CellDetails(id="details")
            with TabPane("Connections", id="connections-pane"):
                yield ConnectionsTable(id="connections")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        routes = self.query_one("#routes")
        routes.border_title = "Routes × services"
        routes.border_subtitle = (
            f"{model.ACTIVE} active  {model.PINNED} pinned  {model.WORKS} works  "
            f"{model.FAILS} fails  {model.NOT_TRIED} not tried  {model.PROBING} probing"
        )
        self.refresh_view()
        self.query_one(RouteMatrix).focus()

    # --- what is shown ----------------------------------------------------------------------

    def refresh_view(self) -> None:
        app = self.app
        snapshot = app.status
        self._status()
        self.query_one(RouteMatrix).show(model.matrix(snapshot))
        try:
            table = self.query_one(ConnectionsTable)
            tab = self.query_one(TabbedContent).get_tab("connections-pane")
            self.query_one(CellDetails)
        except NoMatches:
            # The lower panes and their tabs are mounted after the screen (TabbedContent
            # moves them into place): on a busy machine a refresh can come first. The next
            # one draws them.
            return
        self._details()
        connections = snapshot.connections
        table.show(connections, app.monotonic())
        label = f"Connections ({len(connections)})"
        if str(tab.label) != label:
            tab.label = label

    def _status(self) -> None:
        app = self.app
        snapshot = app.status
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        left = Text()
        left.append(app.title, "bold")
        left.append(f"  proxy {app.proxy.address}", "")
        left.append("  s: set up apps", "dim")
        progress = model.describe_probes(snapshot.probes, snapshot.last_probe, app.clock())
        if not snapshot.probes.running:
            progress = model.describe_network(snapshot.network) or progress
        if snapshot.search is not None and snapshot.search.running:
            progress = f"searching strategies · {progress}"
        grid.add_row(left, Text(progress))
        self.query_one("#status", Static).update(grid)

    def _details(self) -> None:
        selected = self.query_one(RouteMatrix).selected
        widget = self.query_one(CellDetails)
        if selected is None:
            widget.show(
                Text(
                    "No services configured: detour relays every destination through the "
                    "[default] policy route. Add [[service]] entries to see which routes "
                    "reach them (docs/configuration.md)."
                )
            )
            return
        snapshot = self.app.status
        service_name, route_name = selected
        route = snapshot.route(route_name)
        cell = model.cell(snapshot, snapshot.service(service_name), route)
        text = details_text(
            service_name,
            route,
            cell,
            snapshot.health_of(service_name, route_name),
            snapshot.result_of(service_name, route_name),
            self.app.clock(),
            state_styles(self.app),
        )
        if snapshot.search is not None and service_name in snapshot.search.services:
            text.append_text(
                search_text(snapshot.search.services[service_name], snapshot.search.running)
            )
        if snapshot.service(service_name).service.udp_probes:
            udp = snapshot.udp_health.get((service_name, route_name))
            text.append_text(udp_text(udp, state_styles(self.app)))
        widget.show(text)

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        if isinstance(event.data_table, RouteMatrix):
            self._details()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        if isinstance(event.data_table, RouteMatrix):
            self.query_one(TabbedContent).active = "details-pane"

    # --- keys -------------------------------------------------------------------------------

    def _selection(self) -> tuple[ServiceView, str] | None:
        selected = self.query_one(RouteMatrix).selected
        if selected is None:
            return None
        return self.app.status.service(selected[0]), selected[1]

    def _changed(self) -> None:
        """After a command: show its effect now, not at the next tick."""
        self.app.take_snapshot()
        self.refresh_view()

    def action_probe(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        service = selection[0].service
        if not service.probes:
            self.notify(f"{service.name} has no probe targets to check", severity="warning")
            return
        self.app.engine.monitor.request(service)
        self.notify(f"probing {service.name} through every route")

    def action_probe_all(self) -> None:
        monitor = self.app.engine.monitor
        for service in monitor.services:
            monitor.request(service)
        self.notify("probing every service through every route")

    def action_search(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        service = selection[0].service
        if not service.probes:
            self.notify(f"{service.name} has no probe targets to search with", severity="warning")
            return
        searches = self.app.engine.searches
        if searches.running:
            self.notify("a strategy search is running already", severity="warning")
            return
        searches.start([service.name])
        self.notify(f"searching a strategy that works for {service.name} (details: what it tried)")
        self._changed()

    def action_pin(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        service, route = selection
        router = self.app.engine.router
        if service.pinned == route:
            router.unpin(service.name)
            self.notify(f"{service.name}: unpinned; detour chooses the route again")
        else:
            try:
                router.pin(service.name, route)
            except CommandRefused as exc:
                hint = ": press d to enable it first" if exc.why == "disabled" else ""
                self.notify(f"{exc}{hint}", severity="warning")
            else:
                self.notify(f"{service.name}: pinned to {route}, the only route it takes now")
        self._changed()

    def action_toggle_route(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        route = selection[1]
        router = self.app.engine.router
        if router.enable(route):
            self.notify(f"{route}: enabled")
            self._changed()
            return
        try:
            unpinned = router.disable(route)
        except CommandRefused as exc:
            self.notify(str(exc), severity="warning")
            return
        more = f"; {', '.join(unpinned)} no longer pinned" if unpinned else ""
        self.notify(f"{route}: disabled, new connections avoid it{more}")
        self._changed()

    def action_toggle_connections(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "connections-pane" if tabs.active == "details-pane" else "details-pane"
