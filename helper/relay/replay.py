"""The relay's replay cache: every access token that opened a tunnel, until it expires, so
the same token (a request someone saw and sends again) gets the website instead of a tunnel.

One cache for every relay process that serves from the same state directory (several behind
one CDN or load balancer): an SQLite database in that directory (`replay.db`, mode 0600),
whose file locks make "seen before? then remember it" one step across processes. A token's
entry lasts as long as the token is valid (accesskey.TOKEN_WINDOW after its time stamp);
expired entries are deleted as new ones are written.

A relay whose state directory is read-only keeps the cache in its own memory and says so
once at start: a token replayed to another process of that directory then gets a tunnel
(still no further: the inner TLS needs the client's key). Should the database fail later
(disk full, a lock held too long), the token is treated as seen: the website, and an error
in the log, rather than a tunnel nobody checked.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

__all__ = ["ReplayCache"]

log = logging.getLogger("detour.relay")

FILE = "replay.db"
LOCK_WAIT = 2.0  # seconds another process may hold the database before a token counts as seen


class ReplayCache:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self.shared = True
        self._memory: dict[bytes, int] = {}
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            self.shared = False
            log.warning(
                "relay: the replay cache is this process's own (%s is not writable: %s); "
                "relays sharing the directory do not see each other's tokens",
                self.path,
                exc,
            )

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Made 0600 before SQLite writes anything into it (whatever the umask).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=LOCK_WAIT, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # readers never wait; one write per tunnel
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS seen (ident BLOB PRIMARY KEY, expires INTEGER)")
        db.execute("CREATE INDEX IF NOT EXISTS seen_expires ON seen (expires)")
        for extra in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + extra)
            if side.exists():
                side.chmod(0o600)
        return db

    def first_use(self, ident: bytes, expires: int, now: float | None = None) -> bool:
        """True if `ident` was not seen before (and remember it until `expires`); False for
        a replay, or when the cache cannot tell."""
        now = int(time.time() if now is None else now)
        if self._db is None:
            return self._first_use_here(ident, expires, now)
        try:
            with self._transaction() as db:
                db.execute("DELETE FROM seen WHERE expires < ?", (now,))
                db.execute("INSERT INTO seen VALUES (?, ?)", (ident, expires))
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            log.error("relay: the replay cache failed (%s): a tunnel refused", exc)
            return False
        return True

    def _first_use_here(self, ident: bytes, expires: int, now: int) -> bool:
        if len(self._memory) > 4096:
            self._memory = {k: v for k, v in self._memory.items() if v >= now}
        if ident in self._memory:
            return False
        self._memory[ident] = expires
        return True

    def _transaction(self) -> _Transaction:
        assert self._db is not None
        return _Transaction(self._db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an error): the write lock is taken before
    the check, so two processes cannot both find a token new."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
