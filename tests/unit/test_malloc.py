"""``flocknode.malloc``: model-sized blocks go back to the system when freed,
even after a larger block raised glibc's dynamic mmap threshold (``tune``), and
freed heap blocks below a live one go back on ``trim``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flocknode import malloc

glibc_only = pytest.mark.skipif(malloc._glibc() is None, reason="glibc only")


def _run(script: str, *args: str) -> str:
    """``script``'s output in a fresh interpreter, without the caller's ``MALLOC_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    cmd = [sys.executable, "-c", script, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout


# a freed 30 MB block raises glibc's threshold to 30 MB; then 10 blocks of 20 MB
# are made, all but the last freed: left in a heap, they cannot be given back
# (the last one sits on top); each its own mapping, they all are
_RETAINED = """
import sys
import numpy as np
from flocknode import malloc
if sys.argv[1] == "tuned":
    assert malloc.tune()
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
big = np.ones(30 << 17)
del big
start = rss_mb()
blocks = [np.ones(20 << 17) for _ in range(10)]
last = blocks.pop()
del blocks
print(rss_mb() - start)
"""


def _retained_mb(mode: str) -> float:
    return float(_run(_RETAINED, mode))


@glibc_only
def test_freed_temporaries_go_back_to_the_system() -> None:
    assert _retained_mb("default") > 150  # the heap kept the freed blocks
    assert _retained_mb("tuned") < 30  # only the last block is still held


# 100 blocks of 2 MB, under the tuned mmap threshold: in the heap; all but the
# last (on the heap's top) freed, which the heap cannot give back by shrinking
_TRIMMED = """
import numpy as np
from flocknode import malloc
assert malloc.tune()
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
start = rss_mb()
blocks = [np.ones(2 << 17) for _ in range(100)]
last = blocks.pop()
del blocks
kept = rss_mb() - start
assert malloc.trim()
print(kept, rss_mb() - start)
"""


@glibc_only
def test_trim_gives_freed_heap_pages_back() -> None:
    kept, trimmed = map(float, _run(_TRIMMED).split())
    assert kept > 150  # freed but below a live block: still resident
    assert trimmed < 30


def test_an_operators_own_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert malloc.tune() is False
