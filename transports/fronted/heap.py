"""The fronted tunnel's large buffers: transports/heap.py, where every detour process's are."""

from transports.heap import MMAP_THRESHOLD, TRIM_THRESHOLD, keep_large_buffers

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_large_buffers"]
