"""The main screen: a status line (where detour listens, probe progress), the routes x services
matrix, and below it the selected cell's details or the live connections; the keys in the
footer. Everything is redrawn from the engine's state by `refresh_view`, which the app calls
on its timer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from . import model
from .connections import ConnectionsTable
from .details import CellDetails, details_text
from .matrix import RouteMatrix, state_styles

if TYPE_CHECKING:
    from ..services import Service
    from .app import DetourApp

__all__ = ["BY_THE_USER", "MainScreen"]

# Ends the reason of a route change made from the keyboard (the key's action says it already).
BY_THE_USER = "by the user"


class MainScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("r", "probe", "probe"),
        Binding("R", "probe_all", "probe all"),
        Binding("p", "pin", "pin"),
        Binding("d", "toggle_route", "on/off"),
        Binding("c", "toggle_connections", "conns"),
    ]

    app: DetourApp  # type: ignore[assignment]

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
        engine = app.engine
        probing = app.progress.cells
        self._status()
        matrix = self.query_one(RouteMatrix)
        matrix.show(model.matrix(engine.router, engine.monitor, probing))
        self._details()
        connections = engine.listener.connections
        self.query_one(ConnectionsTable).show(connections, app.monotonic())
        tab = self.query_one(TabbedContent).get_tab("connections-pane")
        label = f"Connections ({len(connections)})"
        if str(tab.label) != label:
            tab.label = label

    def _status(self) -> None:
        app = self.app
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        left = Text()
        left.append(app.title, "bold")
        left.append(f"  proxy {app.proxy.address}", "")
        left.append("  s: set up apps", "dim")
        results = app.engine.monitor.results.values()
        last = max((r.checked_at for r in results), default=None)
        grid.add_row(left, Text(app.progress.describe(last, app.clock())))
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
        engine = self.app.engine
        service_name, route_name = selected
        service = self._service(service_name)
        route = engine.router.route(route_name)
        cell = model.cell(engine.router, engine.monitor, service, route, self.app.progress.cells)
        widget.show(
            details_text(
                service_name,
                route,
                cell,
                engine.router.health.get(service_name, route_name),
                engine.monitor.results.get((service_name, route_name)),
                self.app.clock(),
                state_styles(self.app),
            )
        )

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        if isinstance(event.data_table, RouteMatrix):
            self._details()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        if isinstance(event.data_table, RouteMatrix):
            self.query_one(TabbedContent).active = "details-pane"

    # --- keys -------------------------------------------------------------------------------

    def _service(self, name: str) -> Service:
        return next(s for s in self.app.engine.router.services if s.name == name)

    def _selection(self) -> tuple[Service, str] | None:
        selected = self.query_one(RouteMatrix).selected
        if selected is None:
            return None
        return self._service(selected[0]), selected[1]

    def action_probe(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        service = selection[0]
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

    def action_pin(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        service, route = selection
        router = self.app.engine.router
        if router.pins.get(service.name) == route:
            del router.pins[service.name]
            router.note_health_change(f"unpinned {BY_THE_USER}")
            self.notify(f"{service.name}: unpinned; detour chooses the route again")
        elif service.routes and route not in service.routes:
            self.notify(f"{route} is not one of {service.name}'s routes", severity="warning")
        elif route in router.disabled:
            self.notify(f"{route} is disabled: press d to enable it first", severity="warning")
        else:
            router.pins[service.name] = route
            router.note_health_change(f"pinned {BY_THE_USER}")
            self.notify(f"{service.name}: pinned to {route}, the only route it takes now")
        self.refresh_view()

    def action_toggle_route(self) -> None:
        selection = self._selection()
        if selection is None:
            return
        route = selection[1]
        router = self.app.engine.router
        if route in router.disabled:
            router.disabled.discard(route)
            router.note_health_change(f"{route} enabled {BY_THE_USER}")
            self.notify(f"{route}: enabled")
            self.refresh_view()
            return
        # A pin to the route goes with it; undone if that would leave a service no route.
        unpinned = [name for name, pinned in router.pins.items() if pinned == route]
        for name in unpinned:
            del router.pins[name]
        router.disabled.add(route)
        stranded = [s.name for s in router.services if not router.candidates(s)]
        if stranded:
            router.disabled.discard(route)
            router.pins.update(dict.fromkeys(unpinned, route))
            self.notify(
                f"{route} is the last enabled route of {', '.join(stranded)}: not disabled",
                severity="warning",
            )
            return
        router.note_health_change(f"{route} disabled {BY_THE_USER}")
        more = f"; {', '.join(unpinned)} no longer pinned" if unpinned else ""
        self.notify(f"{route}: disabled, new connections avoid it{more}")
        self.refresh_view()

    def action_toggle_connections(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "connections-pane" if tabs.active == "details-pane" else "details-pane"
