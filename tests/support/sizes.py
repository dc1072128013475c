"""How many bytes the bulk transfers of the integration tests carry, by the kind of run.

A sha256-checked transfer proves that bytes arrive intact past every buffer on the way; its
size is what the route's relay loops and ciphers cost in CPU, most of it in the test's own
process. CI (`DETOUR_FUZZ_PROFILE=ci`, as `.ci/run` runs, or `CI` set) carries each test's
full size (16 MiB, 64 MiB where an issue's acceptance says so); DETOUR_FULL_LOAD=1 carries
64 MiB everywhere; `make test` (the `dev` profile) carries a quarter, at least 4 MiB, still
far past the buffers (reads of 64-256 KiB, socket buffers of a few MiB per hop on loopback).
docs/testing.md "Transfer sizes" has the figures.

Read when a test module is imported: the hypothesis profile is loaded by then
(tests/conftest.py's pytest_configure), so --hypothesis-profile and --long count too.
"""

from __future__ import annotations

import os

from hypothesis import settings


def _set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false")


FULL_LOAD = _set("DETOUR_FULL_LOAD")
# The quick sizes only where nothing asked for more: the dev profile, not CI.
QUICK = settings.get_current_profile_name() == "dev" and not FULL_LOAD and not _set("CI")

MIN_QUICK = 4 << 20


def transfer_size(ci: int, full: int = 64 << 20, dev: int | None = None) -> int:
    """The bytes each way of a bulk transfer: `ci` in CI, `full` with DETOUR_FULL_LOAD=1, in
    `make test` `dev` or else a quarter of `ci` (at least MIN_QUICK, at most `ci`)."""
    if FULL_LOAD:
        return max(ci, full)
    if QUICK:
        return min(ci, dev if dev is not None else max(ci // 4, MIN_QUICK))
    return ci


def count(ci: int, dev: int) -> int:
    """How many of something a test sends (datagrams, round trips): `ci` in CI and with
    DETOUR_FULL_LOAD=1, `dev` in `make test`."""
    return dev if QUICK else ci
