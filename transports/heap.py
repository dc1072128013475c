"""Large short-lived buffers and glibc's allocator.

Several of detour's paths make buffers of 128-256 KiB that are new and freed again within
one turn of the event loop: the fronted tunnel's (a TLS write's ciphertext, a WebSocket
frame, a batch of decrypted records), a cipher's output per read (`ss://`: 0.6-0.7 page
faults per 4 KiB carried without this), a TLS stream's reads. glibc serves blocks over its
mmap threshold with a mapping of their own, and hands the top of its heap back to the
kernel once more than its trim threshold is free there; the threshold adapts to the blocks
freed, but with blocks of several sizes freed in turn it still gives memory back and takes
it again many times a second. Memory new from the kernel costs a page fault per 4 KiB on
first touch (the kernel zero-fills the page): 64 for a 256 KiB buffer, more CPU than
copying into it (docs/performance.md, "Where the tunnel's time goes" and "Large buffers
kept in every detour process").

`keep_large_buffers` fixes the mmap threshold at 1 MiB and the trim threshold at 8 MiB, so
those buffers come from the heap and at most 8 MiB of free heap is kept for the next ones.
The engine calls it when it starts (helper/engine.py), the relay and the fronted tunnel's
dialer when they are built. Once per process, on glibc only (musl, OpenWrt's C library, has
no such knobs), and not where the user has set glibc's allocator through the environment
(`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc` tunables in
`GLIBC_TUNABLES`).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_large_buffers"]

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 8 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied: bool | None = None


def keep_large_buffers() -> bool:
    """Set glibc's thresholds (module docstring), once: True when they are set."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not _is_glibc() or _user_settings():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 on success, 0 for a value it refuses.
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and (
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )


def _user_settings() -> bool:
    """The environment sets glibc's allocator itself."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(os.environ.get(name) for name in USER_SETTINGS) or "glibc.malloc." in tunables


def _is_glibc() -> bool:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return False
    return bool(version) and version.startswith("glibc")
