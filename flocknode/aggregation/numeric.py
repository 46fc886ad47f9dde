"""Deterministic numeric building blocks for the aggregation rules.

Every result here is the same bit for bit on any machine, thread count, SIMD
width or numpy/torch build, because:

- elementwise arithmetic (``+ - * /``, ``sqrt``) on float64 arrays is IEEE-754
  correctly rounded per element, so vectorisation cannot change it, and the
  rules add updates one at a time in seat order (never ``np.sum``/``np.mean``
  across updates, whose blocking is an implementation detail);
- reductions across coordinates (norms, distances) return the correctly
  rounded value of the exact sum (``exact_sum_of``), so neither order nor
  blocking matters (numpy's pairwise ``np.sum`` and BLAS ``dot`` would);
- sorting compares values only; ``-0.0`` is turned into ``+0.0`` first
  (``x + 0.0``) because the two compare equal and an unstable SIMD sort could
  otherwise return either one.

The exact sum is taken once per norm or pairwise distance, never inside a
loop over coordinates: ``bench/exact_sum.py`` measures it against the
``math.fsum`` it gives the same bits as.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# Coordinates handled per block by the sorting rules: bounds the temporary
# (n_updates x block) float64 array; results do not depend on it.
SORT_BLOCK = 1 << 16


def exact_sum_of(blocks: Iterable[F64]) -> float:
    """The correctly rounded sum of all values of all finite ``blocks``: one exact
    sum, so the same bits however a vector is cut into blocks (``math.fsum``'s
    value, zero as ``+0.0``). ValueError if a value is not finite.

    ``np.frexp`` writes each value as ``m * 2**e`` (``0.5 <= |m| < 1``, exact,
    subnormals included). ``m * 2**27`` is cut into an integer part ``hi``
    (``|hi| <= 2**27``) and the rest ``lo`` (``0 <= lo < 1``, a multiple of
    ``2**-26``); both are summed per exponent with ``np.bincount`` in float64,
    which is exact because every partial sum of at most ``SUM_BLOCK`` such
    values fits in 53 bits, so the order of the additions does not matter. The
    per-exponent sums are combined as one Python integer ``T`` (the sum times
    ``2**1153``) and ``T / 2**1153`` is rounded once (int / int true division
    rounds correctly).
    """
    total = 0
    for b in blocks:
        for i in range(0, b.shape[0], SUM_BLOCK):
            total += _scaled_integer_sum(b[i : i + SUM_BLOCK])
    return total / (1 << (_EXP_OFFSET + 53))


# values per bincount: partial sums stay below 2**(27 + 16) = 2**43 (his) and
# 2**16 with 26 bits after the point (los), exact in float64; small enough
# that the temporaries stay in cache
SUM_BLOCK = 1 << 16
_EXP_OFFSET = 1100  # frexp's exponents of finite float64 are -1073..1024


def _scaled_integer_sum(values: F64) -> int:
    """The exact sum of ``values`` times ``2**1153`` (an integer)."""
    m, e = np.frexp(np.asarray(values, dtype=np.float64))
    with np.errstate(invalid="ignore"):  # inf - inf: a nan that the check below finds
        m *= 2.0**27
        hi = np.floor(m)
        m -= hi  # the low 26 bits of the mantissa, exactly
        e += _EXP_OFFSET
        his = np.bincount(e, weights=hi, minlength=_EXP_OFFSET + 1025)
        los = np.bincount(e, weights=m, minlength=_EXP_OFFSET + 1025)
    if not (np.isfinite(his).all() and np.isfinite(los).all()):
        raise ValueError("exact sum of a value that is not finite")
    total = 0
    for k in np.flatnonzero((his != 0) | (los != 0)).tolist():
        total += ((int(his[k]) << 26) + int(los[k] * 2.0**26)) << k
    return total


def square_sum(blocks: Iterable[F64]) -> float:
    """The exact sum of the squares of all values of all ``blocks`` (each square
    correctly rounded): a squared L2 norm or distance, fed a block at a time."""
    return exact_sum_of(b * b for b in blocks)


def lower_median(values: Sequence[float]) -> float:
    """``sorted(values)[(n - 1) // 2]``: the middle value, the lower one of two for even n."""
    if not values:
        raise ValueError("median of no values")
    return sorted(values)[(len(values) - 1) // 2]


def seat_order_mean(vectors: Sequence[F64]) -> F64:
    """Sum in the given (seat) order, one update at a time, then divide by the count."""
    if not vectors:
        raise ValueError("mean of no vectors")
    acc = vectors[0].copy()
    for v in vectors[1:]:
        acc += v
    acc /= float(len(vectors))
    return acc


def sorted_block(vectors: Sequence[F64], start: int, stop: int) -> F64:
    """Coordinates ``start:stop`` of all vectors, shape (stop - start, n), each row sorted."""
    block = np.stack([v[start:stop] for v in vectors], axis=1)
    block += 0.0  # -0.0 -> +0.0 so the sorted values are unique bit patterns
    block.sort(axis=1)
    return block
