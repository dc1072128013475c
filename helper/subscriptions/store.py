"""The last good list of each subscription: `subscriptions/NAME.json` in the state directory
(directory 0700, files 0600: the nodes' links hold their secrets), written atomically. A
refresh that fails leaves it as it is; a config load reads it to build the pool."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..routing.state import state_dir
from .formats import Node

__all__ = ["Stored", "load", "save"]

DIRECTORY = "subscriptions"


@dataclass(frozen=True)
class Stored:
    nodes: tuple[Node, ...]
    fetched_at: float  # wall-clock time of the refresh that got the list


def _path(name: str, base: Path | None) -> Path:
    return (base or state_dir()) / DIRECTORY / f"{name}.json"


def load(name: str, base: Path | None = None) -> Stored | None:
    """The last good list, or None (never fetched, or a file that cannot be read)."""
    try:
        document = json.loads(_path(name, base).read_text(encoding="utf-8"))
        nodes = tuple(
            Node(str(n["slug"]), str(n["kind"]), str(n["chain"]), str(n["shown"]))
            for n in document["nodes"]
        )
        return Stored(nodes, float(document["fetched_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(name: str, nodes: tuple[Node, ...], base: Path | None = None) -> Stored:
    stored = Stored(nodes, time.time())
    path = _path(name, base)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    document = {
        "fetched_at": stored.fetched_at,
        "nodes": [
            {"slug": n.slug, "kind": n.kind, "chain": n.chain, "shown": n.shown} for n in nodes
        ],
    }
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return stored
