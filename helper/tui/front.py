"""What the screens use of the app: a Protocol that `DetourApp` (app.py) fulfils, so that the
screens do not import the app module that imports them.

    status      the latest status snapshot (helper/status.py), taken on the app's timer
    engine      for commands: the router's pin/unpin/disable/enable, the monitor's probes
    proxy       where applications reach detour, and the login they need
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..engine import Engine
    from ..status import Snapshot
    from .appsetup import ProxySettings
    from .logbuffer import LogBuffer

__all__ = ["Front"]


class Front(Protocol):
    title: str
    engine: Engine
    notes: list[str]
    log_buffer: LogBuffer
    clock: Callable[[], float]  # wall clock
    monotonic: Callable[[], float]

    @property
    def status(self) -> Snapshot: ...

    @property
    def proxy(self) -> ProxySettings: ...

    def take_snapshot(self) -> Snapshot: ...
