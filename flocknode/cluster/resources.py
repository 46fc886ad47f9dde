"""What each node of a local cluster uses, sampled once per finalized round, and
the check that nothing grows without bound (docs/protocol.md, "Faults and the
promises kept under them").

A node's memory is the resident set of its process tree (the daemon and its
task worker), its descriptors are the daemon's open files and sockets, its disk
the bytes under its store and journal. Memory and descriptors settle once a
node has warmed up and met every role, so the last third of the run may not
exceed the first two thirds by more than a margin; the disk grows by design
for the store's retention window (``[store] keep_rounds``) and must stop
growing after it, so it is judged only in a run that outlasts the window.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1 << 20
RSS_FACTOR, RSS_SLACK_MB = 1.25, 64.0
FDS_SLACK = 16
DISK_FACTOR, DISK_SLACK_MB = 1.25, 1.0
MIN_ROUNDS = 3  # fewer samples than this say nothing about growth


@dataclass(frozen=True)
class Usage:
    rss_mb: float
    fds: int
    disk_mb: float

    def to_json(self) -> dict[str, Any]:
        return {"rss_mb": round(self.rss_mb, 1), "fds": self.fds, "disk_mb": round(self.disk_mb, 2)}


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:  # removed by the node's pruner meanwhile
                continue
    return total


def sample(pid: int, store: Path, journal: Path) -> Usage | None:
    """The usage of the node running as ``pid``; None if it is not running."""
    try:
        node = psutil.Process(pid)
        procs = [node, *node.children(recursive=True)]
        fds = node.num_fds()
    except psutil.Error:
        return None
    rss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.Error:  # a worker that just exited
            continue
    return Usage(rss / MB, fds, (_dir_bytes(store) + _dir_bytes(journal)) / MB)


def growth(
    usage: Mapping[int, Mapping[str, Usage]], keep_rounds: int, nodes: list[str] | None = None
) -> dict[str, Any]:
    """``bounded_growth``: per node, the last third of the rounds against the
    first two thirds (memory, descriptors) and, in a run longer than the
    retention window, the rounds after the window against the window (disk)."""
    rounds = sorted(usage)
    grew: list[str] = []
    if len(rounds) < MIN_ROUNDS:
        return {"ok": True, "assessed": False, "rounds_sampled": len(rounds), "grew": grew}
    split = len(rounds) * 2 // 3
    early, late = rounds[:split], rounds[split:]
    window = keep_rounds + 3  # the window, the round it ends in, and a prune's delay
    disk_assessed = keep_rounds > 0 and len(rounds) > window + 1
    names = nodes if nodes is not None else sorted({n for r in rounds for n in usage[r]})
    peak = {"rss_mb": 0.0, "fds": 0.0, "disk_mb": 0.0}
    for name in names:

        def top(rs: list[int], key: str, name: str = name) -> float | None:
            vals = [getattr(usage[r][name], key) for r in rs if name in usage[r]]
            return max(vals) if vals else None

        for key in peak:
            peak[key] = max(peak[key], top(rounds, key) or 0.0)
        rss0, rss1 = top(early, "rss_mb"), top(late, "rss_mb")
        if rss0 is not None and rss1 is not None and rss1 > rss0 * RSS_FACTOR + RSS_SLACK_MB:
            grew.append(f"{name}: memory {rss0:.0f} -> {rss1:.0f} MB")
        fd0, fd1 = top(early, "fds"), top(late, "fds")
        if fd0 is not None and fd1 is not None and fd1 > fd0 + FDS_SLACK:
            grew.append(f"{name}: descriptors {fd0:.0f} -> {fd1:.0f}")
        if disk_assessed:
            d0, d1 = top(rounds[:window], "disk_mb"), top(rounds[window:], "disk_mb")
            if d0 is not None and d1 is not None and d1 > d0 * DISK_FACTOR + DISK_SLACK_MB:
                grew.append(f"{name}: disk {d0:.1f} -> {d1:.1f} MB")
    return {
        "ok": not grew,
        "assessed": True,
        "disk_assessed": disk_assessed,
        "rounds_sampled": len(rounds),
        "grew": grew,
        "peak_rss_mb": round(peak["rss_mb"], 1),
        "peak_fds": int(peak["fds"]),
        "peak_disk_mb": round(peak["disk_mb"], 2),
    }
