"""Flat memory for a long-running server on glibc: two malloc arenas and a fixed mmap threshold.

glibc's defaults suit short programs. A server's threads are each handed new 64 MB arenas, and the mmap threshold
grows past any large block that was freed, so later audio and feature buffers of that size come from the heap and
stay resident once freed. Measured with `whispertune serve` on embedded:tiny.en, 200 requests at 8 concurrent
(tests/serve/test_load.py): RSS rose in steps of 100-270 MiB at unpredictable moments with the defaults and with
only MALLOC_ARENA_MAX=2 (1012 -> 1228 -> 1351 MiB); with both settings it stayed at 630-638 MiB.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
SETTINGS = {M_ARENA_MAX: ("MALLOC_ARENA_MAX", 2), M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 256 * 1024)}


def steady_malloc() -> dict[str, int]:
    """Apply SETTINGS through mallopt where the process runs on glibc, except those its environment already sets
    (the user's choice wins). Returns what was applied, by environment variable name."""
    if platform.libc_ver()[0] != "glibc":
        return {}  # musl and others: their allocators have neither knob
    libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them
    applied = {}
    for param, (env, value) in SETTINGS.items():
        if env not in os.environ and libc.mallopt(param, value) == 1:
            applied[env] = value
    return applied
