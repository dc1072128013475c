"""Live connections: who, to where, which service and route, bytes each way, how long.

The table is refreshed from the status snapshot's connections on the UI's timer (a few times a
second), however many bytes flow: rows are added and removed by connection id and only the
cells that changed are rewritten. The relay never sends the UI a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import TYPE_CHECKING

from textual.widgets import DataTable

from .model import ConnectionRow, connection_row

if TYPE_CHECKING:
    from ..status import ConnectionView

__all__ = ["ConnectionsTable"]

# (key, label, width): the counters get a fixed width ("999.9 KB", "59 m 59 s"), so their
# changes four times a second never make the table measure its columns again.
COLUMNS = (
    ("client", "client", None),
    ("destination", "destination", None),
    ("service", "service", None),
    ("route", "route", None),
    ("up", "↑ up", 8),
    ("down", "↓ down", 8),
    ("duration", "time", 9),
)


class ConnectionsTable(DataTable[str]):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[int, ConnectionRow] = {}

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def show(self, connections: Sequence[ConnectionView], now: float) -> None:
        """`now`: time.monotonic()."""
        by_id = {connection.id: connection for connection in connections}
        for gone in self._rows.keys() - by_id.keys():
            self.remove_row(str(gone))
            del self._rows[gone]
        for conn_id, connection in by_id.items():
            row = connection_row(connection, now)
            old = self._rows.get(conn_id)
            if old is None:
                self.add_row(*astuple(row), key=str(conn_id))
            elif old != row:
                for (key, _, width), before, after in zip(
                    COLUMNS, astuple(old), astuple(row), strict=True
                ):
                    if before != after:
                        self.update_cell(str(conn_id), key, after, update_width=width is None)
            self._rows[conn_id] = row
