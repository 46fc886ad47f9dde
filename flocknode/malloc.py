"""glibc malloc settings for a process that handles model-sized arrays.

glibc serves an allocation of 128 KiB or more with its own ``mmap`` (given
back on ``free``) until a block that large is freed; from then on it raises
that threshold, up to 32 MiB, so the temporaries of training, encoding and
aggregation land in heaps that only shrink from the top, and each worker
thread can get a heap of its own. A node that trains, encodes and seals a
100 MB model in three worker threads peaked 1,088 MB above its start and
kept 619 MB after three rounds (wide-mlp-100mb, in-process replay).

``tune()`` fixes the mmap threshold at 16 MiB (blocks of a model's size are
mapped and given back; the few-MB blocks of the aggregation stay in the heap,
where they are reused without faulting in fresh pages), the trim threshold at
64 MiB, and the number of heaps at two: the same replay peaked 652 MB above
its start and kept 170 MB; one fedavg of three 100 MB updates (0.91-1.00 s)
and one wide-mlp-100mb training (13.2 s) took as long (0.94 s, 13.6 s). A
1 MiB threshold kept less (148 MB) but made aggregation 45% slower.

It runs once, at the start of ``flocknode run`` and of a task worker. An
operator's own ``MALLOC_*`` environment settings (glibc's tunables) win;
other C libraries are left alone.

The heap still only shrinks from its top on its own: freed blocks below a
live one stay resident. ``trim()`` (glibc's ``malloc_trim(0)``) gives every
free page of the heaps back; a node calls it once start-up is done, before
and after each task call (training, scoring), after a proposer has sealed
and after a voter has decided. In a 6-node wide-mlp-100mb cluster
a node held 60-77 MB of such pages when its next training began (534 -> 457
MB after one trim), which counted against that training's peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = ((M_MMAP_THRESHOLD, 16 << 20), (M_TRIM_THRESHOLD, 64 << 20), (M_ARENA_MAX, 2))


@functools.cache
def _glibc() -> Any:
    """glibc, or None for any other C library."""
    name = ctypes.util.find_library("c")
    if not name or "libc.so" not in name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None


def tune() -> bool:
    """Fix glibc's mmap and trim thresholds and its number of heaps; whether set."""
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    lib = _glibc()
    if lib is None:
        return False
    done = all([bool(lib.mallopt(param, value)) for param, value in SETTINGS])
    log.debug("malloc settings fixed: %s", done)
    return done


def trim() -> bool:
    """Give the free pages of glibc's heaps back to the system; whether any were."""
    lib = _glibc()
    return lib is not None and bool(lib.malloc_trim(0))
