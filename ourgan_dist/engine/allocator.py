"""glibc malloc settings for processes that allocate and free many megabyte-sized buffers: an
export. (Ray workers do not use them: with a 1 MiB mmap threshold every tile buffer is mapped
and zero-filled afresh, and the demo's tasks took 34 s instead of 22 s.)

With glibc's defaults, each thread may get its own heap ("arena"), and after the first large
buffer is freed the threshold above which buffers are mmapped rises to 32 MB, so later ones come
from those heaps and stay resident when freed: peak RSS then grows with the number of buffers a
process has gone through (the image's size, or the tasks a worker has run) though the live data
does not. Two arenas and a fixed 1 MiB mmap threshold (buffers above it are returned to the
system when freed) keep the peak near the live data. Only memory reuse changes, never results.

The settings are process-wide and permanent (glibc cannot give the dynamic mmap threshold back
once it is set), so library calls never apply them: only code that owns its process does (the
command line around an export, a Ray worker actor, a benchmark).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc mallopt parameters
ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def _libc_mallopt():
    """glibc's ``mallopt``, or None where the C library has none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def bound_allocator() -> bool:
    """Keep glibc's malloc from hoarding freed buffers in this process; ``True`` where it applied
    (a no-op where the C library is not glibc). Call it only in a process you own."""
    mallopt = _libc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
