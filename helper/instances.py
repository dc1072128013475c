"""Running detours and the config files they read, so a command that changes a file
(`detour add`) can have the detour running from it take the change without a restart.

Each `detour run` with a config file writes `instances/PID.json` in the state directory
(mode 0600): its pid, the file's absolute path and the signal that reloads it (SIGHUP
headless, SIGUSR1 under the terminal UI, where a hang-up means the terminal is gone). The
entry goes when detour stops; one left by a detour that died is skipped and removed by the
next reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .routing.state import state_dir

__all__ = ["Instance", "reload_instances", "running", "serving"]

log = logging.getLogger("detour")
DIRECTORY = "instances"


@dataclass(frozen=True)
class Instance:
    pid: int
    config: str  # absolute path of its config file
    reload_signal: str  # "SIGHUP" or "SIGUSR1"


def _directory(base: Path | None) -> Path:
    return (base or state_dir()) / DIRECTORY


@contextlib.contextmanager
def serving(config: str | None, reload_signal: str, base: Path | None = None) -> Iterator[None]:
    """Record this process as running from `config` while the block runs (nothing without
    a file, or where the state directory cannot be written)."""
    if config is None:
        yield
        return
    entry = _directory(base) / f"{os.getpid()}.json"
    record = {"pid": os.getpid(), "config": str(Path(config).resolve()), "signal": reload_signal}
    written = False
    try:
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        written = True
    except OSError as exc:
        log.debug("cannot record the running instance in %s: %s", entry.parent, exc)
    try:
        yield
    finally:
        if written:
            with contextlib.suppress(OSError):
                entry.unlink()


def running(config: str | Path, base: Path | None = None) -> list[Instance]:
    """The live detours running from `config`."""
    wanted = str(Path(config).resolve())
    found: list[Instance] = []
    directory = _directory(base)
    try:
        entries = sorted(directory.glob("*.json"))
    except OSError:
        return []
    for entry in entries:
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
            instance = Instance(int(record["pid"]), str(record["config"]), str(record["signal"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if instance.reload_signal not in ("SIGHUP", "SIGUSR1") or instance.pid <= 1:
            continue
        if not _alive(instance.pid):
            with contextlib.suppress(OSError):
                entry.unlink()
            continue
        if instance.config == wanted:
            found.append(instance)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def reload_instances(config: str | Path, base: Path | None = None) -> list[int]:
    """Signal every detour running from `config` to read it again; the pids signalled."""
    signalled = []
    for instance in running(config, base):
        try:
            os.kill(instance.pid, getattr(signal, instance.reload_signal))
        except (OSError, AttributeError):
            continue
        signalled.append(instance.pid)
    return signalled
