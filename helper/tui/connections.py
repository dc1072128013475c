"""Live connections: who, to where, which service and route, bytes each way, how long.

The table is refreshed from the listener's connection list on the UI's timer (a few times a
second), however many bytes flow: rows are added and removed by connection id and only the
cells that changed are rewritten. The relay never sends the UI a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple
from typing import TYPE_CHECKING

from textual.widgets import DataTable

from .model import ConnectionRow, connection_row

if TYPE_CHECKING:
    from ..proxy.listener import ActiveConnection

__all__ = ["ConnectionsTable"]

COLUMNS = (
    ("client", "client"),
    ("destination", "destination"),
    ("service", "service"),
    ("route", "route"),
    ("up", "↑ up"),
    ("down", "↓ down"),
    ("duration", "time"),
)


class ConnectionsTable(DataTable[str]):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[int, ConnectionRow] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, connections: Mapping[int, ActiveConnection], now: float) -> None:
        """`now`: time.monotonic()."""
        for gone in self._rows.keys() - connections.keys():
            self.remove_row(str(gone))
            del self._rows[gone]
        for conn_id, connection in connections.items():
            row = connection_row(connection, now)
            old = self._rows.get(conn_id)
            if old is None:
                self.add_row(*astuple(row), key=str(conn_id))
            elif old != row:
                for (key, _), before, after in zip(
                    COLUMNS, astuple(old), astuple(row), strict=True
                ):
                    if before != after:
                        self.update_cell(str(conn_id), key, after, update_width=True)
            self._rows[conn_id] = row
