"""Remembering what worked, per network: a restart on the same network starts with the routes
that worked there last time; on another network (another gateway, another subnet) that memory
is not used.

The network is identified by the default gateway and the local address's subnet (Linux reads
the routing table; elsewhere the local address alone). The state file lives in the user's
state directory ($XDG_STATE_HOME/detour, ~/Library/Application Support/detour, %LOCALAPPDATA%
\\detour), or in $DETOUR_STATE_DIR.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

from .health import HealthBook, RouteHealth

__all__ = ["HealthStore", "network_id", "state_dir", "usable_state_dir"]

log = logging.getLogger("detour.routing")

STATE_FILE = "health.json"
MAX_AGE = 7 * 86400  # older memories say little about the network now
MAX_NETWORKS = 32


def state_dir() -> Path:
    if override := os.environ.get("DETOUR_STATE_DIR"):
        return Path(override)
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local")) / "detour"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "detour"
    return Path(os.environ.get("XDG_STATE_HOME", home / ".local" / "state")) / "detour"


_SAID: set[str] = set()  # state directories already said to be unusable, in this process


def usable_state_dir(directory: Path) -> bool:
    """Whether `directory` can hold detour's state: a directory, or nothing yet (made when
    first written). Anything else (a file where it should be, or in its path) is said once
    per process, naming the path and what detour does instead; False then."""
    try:
        if stat.S_ISDIR(os.stat(directory).st_mode):
            return True
        why = "is not a directory"
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        why = "cannot be made: a part of its path is a file"
    except OSError as exc:  # a name too long, a directory on the way that cannot be searched
        why = f"cannot be used ({exc.strerror or exc})"
    if str(directory) not in _SAID:
        _SAID.add(str(directory))
        log.warning(
            "the state directory %s %s; detour runs without remembering what worked per "
            "network (set DETOUR_STATE_DIR to a directory, or move the file away)",
            directory,
            why,
        )
    return False


def _default_gateway() -> str | None:
    """The IPv4 default gateway from Linux's routing table, or None."""
    try:
        with open("/proc/net/route") as table:
            next(table)
            for line in table:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
                    gateway = bytes.fromhex(fields[2])[::-1]  # little-endian hex
                    return f"{ipaddress.IPv4Address(gateway)} dev {fields[0]}"
    except (OSError, ValueError, StopIteration):
        return None
    return None


def _local_subnet() -> str | None:
    """The local address the default route would use, as its /24 (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() on UDP only picks a route
            local = sock.getsockname()[0]
    except OSError:
        return None
    return str(ipaddress.IPv4Network(f"{local}/24", strict=False))


def network_id() -> str:
    """A short identifier of the network this machine is on now ("" when unknown)."""
    parts = [part for part in (_default_gateway(), _local_subnet()) if part]
    if not parts:
        return ""
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


class HealthStore:
    """The state file: {network: {"saved": time, "routes": {service: {route: health}}}}."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or state_dir()) / STATE_FILE

    def _read(self) -> dict:
        if not usable_state_dir(self.path.parent):
            return {}
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the state file %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def knows(self, network: str) -> bool:
        """Whether anything is kept for `network`."""
        return bool(network) and isinstance(self._read().get(network), dict)

    def load(self, network: str, book: HealthBook) -> int:
        """Put what worked on `network` into `book`; returns how many routes were known."""
        if not network:
            return 0
        entry = self._read().get(network)
        if not isinstance(entry, dict):
            return 0
        count = 0
        now = time.time()
        for service, routes in (entry.get("routes") or {}).items():
            if not isinstance(routes, dict):
                continue
            for route, data in routes.items():
                if not isinstance(data, dict):
                    continue
                try:
                    health = RouteHealth.from_json(data)
                except TypeError:
                    continue
                if now - health.checked_at > MAX_AGE or health.ok is None:
                    continue
                health.source = "memory"
                health.dial_failures = 0
                book.set(service, route, health)
                count += 1
        return count

    def save(self, network: str, book: HealthBook) -> None:
        if not network:
            return
        data = self._read()
        routes: dict[str, dict[str, dict]] = {}
        for (service, route), health in book.items():
            if health.ok is not None:
                routes.setdefault(service, {})[route] = health.to_json()
        entry = data.get(network) if isinstance(data.get(network), dict) else {}
        data[network] = {**entry, "saved": time.time(), "routes": routes}
        self._write(data)

    # --- strategies a search found (helper/search/), kept with the network's health ------

    def load_strategies(self, network: str) -> dict[str, list[dict]]:
        """{service: [{"route": name, "chain": chain, "found_at": time}, ...]} for `network`."""
        entry = self._read().get(network) if network else None
        found = entry.get("strategies") if isinstance(entry, dict) else None
        if not isinstance(found, dict):
            return {}
        return {
            service: [s for s in items if isinstance(s, dict) and "route" in s and "chain" in s]
            for service, items in found.items()
            if isinstance(items, list)
        }

    def save_strategies(self, network: str, strategies: dict[str, list[dict]]) -> None:
        """Replace what is kept for `network` (an empty dict forgets it)."""
        if not network:
            return
        data = self._read()
        entry = data.get(network) if isinstance(data.get(network), dict) else {}
        entry = {**entry, "saved": time.time(), "strategies": strategies}
        if not strategies:
            del entry["strategies"]
            # The forgotten routes' health goes too: it was about those strategies.
            routes = entry.get("routes") or {}
            if isinstance(routes, dict):
                entry["routes"] = {
                    service: {r: h for r, h in per.items() if not r.startswith("found-")}
                    for service, per in routes.items()
                    if isinstance(per, dict)
                }
        data[network] = entry
        self._write(data)

    def _write(self, data: dict) -> None:
        if len(data) > MAX_NETWORKS:  # forget the networks not seen for longest
            for old in sorted(data, key=lambda n: data[n].get("saved", 0))[
                : len(data) - MAX_NETWORKS
            ]:
                del data[old]
        if not usable_state_dir(self.path.parent):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, prefix=".health-", delete=False
            ) as tmp:
                json.dump(data, tmp, indent=1, sort_keys=True)
            os.replace(tmp.name, self.path)  # never a half-written state file
        except OSError as exc:  # said once per process (a save follows every probe round)
            said = f"save {self.path}" in _SAID
            _SAID.add(f"save {self.path}")
            log.log(
                logging.DEBUG if said else logging.WARNING,
                "cannot save the state file %s: %s%s",
                self.path,
                exc,
                "" if said else " (said once; detour runs on without remembering)",
            )
