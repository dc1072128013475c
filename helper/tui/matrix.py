"""The routes x services matrix: one row per route, one column per service, each cell a
glyph and a few words; each column's header says whether the service works and through
which route. Routes run down because they are what users add; services are few.

The table is rebuilt from a MatrixView only when the view (or the room it has) changed, and
the cursor stays on the same service and route across rebuilds.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import App
from textual.widgets import DataTable

from .model import Cell, MatrixView

__all__ = ["RouteMatrix", "state_styles"]

MIN_COLUMN = 12  # "▶✓ works 9 ms" still reads at this width; longer texts end in "…"


class RouteMatrix(DataTable[Text]):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="cell", header_height=2, zebra_stripes=False, **kwargs)
        self._view: MatrixView | None = None
        self._built: tuple[MatrixView, int] | None = None
        self._expected_width = 0
        self._relabels = 0

    @property
    def view(self) -> MatrixView | None:
        return self._view

    @property
    def selected(self) -> tuple[str, str] | None:
        """(service, route) under the cursor."""
        if not self.row_count or not self.columns:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate)
        if key.row_key.value is None or key.column_key.value is None:
            return None
        return key.column_key.value, key.row_key.value

    def select(self, service: str, route: str) -> None:
        self.move_cursor(
            row=self.get_row_index(route), column=self.get_column_index(service), animate=False
        )

    def action_select_cursor(self) -> None:
        if self.selected is not None:  # a config without services has no cell to select
            super().action_select_cursor()

    def show(self, view: MatrixView) -> None:
        self._view = view
        self._rebuild()

    def on_resize(self) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        view = self._view
        width = self.size.width
        if view is None or not width or self._built == (view, width):
            return
        self._built = (view, width)
        selected = self.selected
        styles = {k: Style.parse(v) for k, v in state_styles(self.app).items()}
        label_width = max([len("route"), *(len(_route_label(n, off)) for n, off in view.routes)])
        widths = _column_widths(view, width - label_width - 2)
        self.clear(columns=True)
        for header, column_width in zip(view.services, widths, strict=True):
            label = Text.assemble(
                (header.name, "bold"), "\n", (header.text, styles.get(header.state, ""))
            )
            label.no_wrap, label.overflow = True, "ellipsis"
            self.add_column(label, width=column_width, key=header.name)
        for (name, off), cells in zip(view.routes, view.cells, strict=True):
            self.add_row(
                *(_cell_text(c, styles) for c in cells),
                key=name,
                label=Text(_route_label(name, off), style="dim" if off else ""),
            )
        if selected is not None and selected[1] in self.rows and selected[0] in self.columns:
            self.select(*selected)
        self._expected_width = label_width + 2 + sum(widths) + 2 * len(widths)
        self._relabels = 0
        self.call_after_refresh(self._check_labels)

    def _check_labels(self) -> None:
        """Rebuild once more if the route names came out zero wide. (Textual's DataTable
        measures its row labels when idle, from renderables it may have cached in a repaint
        just after the rows were added, before it knew the rows had labels.)"""
        built = self._built
        if built is None or self.virtual_size.width >= self._expected_width:
            return
        if self._relabels < 3:
            self._relabels += 1
            self._built = None
            relabels = self._relabels
            self._rebuild()
            self._relabels = relabels


def state_styles(app: App) -> dict[str, str]:
    """A Rich style per cell state, in the theme's colours for text."""
    colours = app.get_css_variables()
    return {
        "ok": colours.get("text-success", "green"),
        "fail": colours.get("text-error", "red"),
        "probing": colours.get("text-warning", "yellow"),
        "unknown": "dim",
        "disabled": "dim",
        "unused": "dim",
        "offline": colours.get("text-warning", "yellow"),
    }


def _route_label(name: str, disabled: bool) -> str:
    return f"{name} (off)" if disabled else name


def _cell_text(cell: Cell, styles: dict[str, Style]) -> Text:
    text = Text(cell.label(), style=styles.get(cell.state, ""), no_wrap=True, overflow="ellipsis")
    if cell.active or cell.pinned:
        text.stylize("bold")
    return text


def _column_widths(view: MatrixView, room: int) -> list[int]:
    """Each column as wide as its longest text when there is room; otherwise narrow columns
    keep their width and the others share what is left evenly (never below MIN_COLUMN,
    longer texts end in "…"). Two cells of padding per column come off the room first."""
    count = len(view.services)
    natural = [
        max(
            len(header.name),
            len(header.text),
            *(len(row[i].label()) for row in view.cells),
        )
        for i, header in enumerate(view.services)
    ]
    left = room - 2 * count
    widths = [0] * count
    for placed, i in enumerate(sorted(range(count), key=natural.__getitem__)):
        widths[i] = max(MIN_COLUMN, min(natural[i], left // (count - placed)))
        left -= widths[i]
    return widths
