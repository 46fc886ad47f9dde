"""The aggregation rules' arithmetic on float64 coordinates, one array per update, in seat order.

The coordinate-wise rules take the same coordinates (a block) of each update
that survived the norm check and return the aggregate update's coordinates
(float64; the caller adds them to the old global and rounds to float32).
multi_krum and centered_clip also need sums over whole vectors (distances,
norms): ``core`` computes those exactly, block by block, and hands them to
``krum_select`` and ``clip_step``. Definitions, fixed here so that every voter
computes the same bits:

- ``fedavg``: the mean with equal weights, summed in seat order.
- ``median``: coordinate-wise; for an even count the mean of the two middle
  values, ``(lo + hi) / 2`` in float64.
- ``trimmed_mean``: coordinate-wise; drop ``k = floor(trim_ratio * n)`` values
  at each end (``k`` capped at ``(n - 1) // 2`` so one value is left), then the
  mean of the rest summed in ascending order.
- ``multi_krum``: score(i) = exact sum of the ``k`` smallest squared distances
  from update i to the others, ``k = n - f - 2`` clamped to ``1 .. n - 1``;
  the ``m`` lowest scores are selected (ties: lower seat first), ``m`` = the
  task's ``krum_m`` or ``n - f``, clamped to ``1 .. n``; the aggregate is the
  seat-order mean of the selected. Unselected updates are left out by design,
  not rejected. ``n`` counts the updates that survived the norm check and
  ``f`` is the task's ``krum_f`` less the number the norm check rejected
  (at least 0; ``core.krum_budget`` says why).
- ``centered_clip``: start at the coordinate-wise median (a deterministic,
  stateless start point), then ``clip_iterations`` times
  ``v <- v + (1/n) * sum_i (x_i - v) * min(1, tau / ||x_i - v||)`` with the sum
  in seat order and exact norms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from flocknode.aggregation.numeric import (
    F64,
    SORT_BLOCK,
    seat_order_mean,
    sorted_block,
)


def fedavg(vectors: Sequence[F64]) -> F64:
    return seat_order_mean(vectors)


def median(vectors: Sequence[F64]) -> F64:
    n = len(vectors)
    if n == 0:
        raise ValueError("median of no updates")
    size = vectors[0].shape[0]
    out = np.empty(size, dtype=np.float64)
    for start in range(0, size, SORT_BLOCK):
        stop = min(start + SORT_BLOCK, size)
        block = sorted_block(vectors, start, stop)
        if n % 2:
            out[start:stop] = block[:, n // 2]
        else:
            out[start:stop] = (block[:, n // 2 - 1] + block[:, n // 2]) / 2.0
    return out


def trim_count(n: int, trim_ratio: float) -> int:
    """Values dropped at each end of a coordinate for ``n`` updates."""
    return min(math.floor(trim_ratio * n), (n - 1) // 2)


def trimmed_mean(vectors: Sequence[F64], trim_ratio: float) -> F64:
    n = len(vectors)
    if n == 0:
        raise ValueError("trimmed mean of no updates")
    k = trim_count(n, trim_ratio)
    kept = n - 2 * k
    size = vectors[0].shape[0]
    out = np.empty(size, dtype=np.float64)
    for start in range(0, size, SORT_BLOCK):
        stop = min(start + SORT_BLOCK, size)
        block = sorted_block(vectors, start, stop)
        acc = block[:, k].copy()
        for j in range(k + 1, n - k):
            acc += block[:, j]
        out[start:stop] = acc / float(kept)
    return out


def krum_scores(dist: Sequence[Sequence[float]], f: int) -> list[float]:
    """Krum scores from the squared distances between the updates (``dist[i][j]``)."""
    n = len(dist)
    if n < 2:
        return [0.0] * n
    k = min(max(n - f - 2, 1), n - 1)
    return [math.fsum(sorted(dist[i][j] for j in range(n) if j != i)[:k]) for i in range(n)]


def krum_select(dist: Sequence[Sequence[float]], f: int, m: int | None) -> list[int]:
    """Positions (ascending) of the updates multi-Krum averages, from the squared
    distances between the updates."""
    n = len(dist)
    if n == 0:
        return []
    scores = krum_scores(dist, f)
    count = min(max(m if m is not None else n - f, 1), n)
    best = sorted(range(n), key=lambda i: (scores[i], i))[:count]
    return sorted(best)


def clip_step(vectors: Sequence[F64], v: F64, norms: Sequence[float], tau: float) -> F64:
    """One centered_clip iteration on coordinates of ``v``, given each
    ``||x_i - v||`` over the whole vectors (coordinate-wise, so it runs on blocks)."""
    acc = np.zeros_like(v)
    for x, norm in zip(vectors, norms, strict=True):
        d = x - v
        if norm > tau:
            d *= tau / norm
        acc += d
    return v + acc / float(len(vectors))


__all__ = [
    "clip_step",
    "fedavg",
    "krum_scores",
    "krum_select",
    "median",
    "trim_count",
    "trimmed_mean",
]
