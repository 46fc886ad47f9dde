"""What a deterministic norm costs: ``numeric.exact_sum_of`` against ``math.fsum``.

    .venv/bin/python bench/exact_sum.py [--values 1000000] [--repeat 5]

Every norm and pairwise distance the voters compute is one exact sum of
squares (docs/protocol.md, step 5); a 100 MB update's norm
is 25M values. This times, on the same random float64 values, the best of
``--repeat`` runs of: ``exact_sum_of`` (per-exponent integer sums), the
``math.fsum`` it gives the same bits as (including the conversion to Python
floats it needs), and ``np.sum`` (fast, but its result depends on blocking,
so no voter can use it). Prints one JSON object with the ratios to fsum.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flocknode.aggregation.numeric import exact_sum_of


def _best(fn: Callable[[], float], repeat: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--values", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    x = np.random.default_rng(0).standard_normal(args.values) ** 2
    exact_s, exact = _best(lambda: exact_sum_of([x]), args.repeat)
    fsum_s, fsummed = _best(lambda: math.fsum(x.tolist()), args.repeat)
    np_s, _ = _best(lambda: float(np.sum(x)), args.repeat)
    print(
        json.dumps(
            {
                "values": args.values,
                "same_bits_as_fsum": exact == fsummed,
                "exact_sum_ms": round(exact_s * 1e3, 2),
                "fsum_ms": round(fsum_s * 1e3, 2),
                "np_sum_ms": round(np_s * 1e3, 2),
                "fsum_over_exact_sum": round(fsum_s / exact_s, 2),
                "exact_sum_over_np_sum": round(exact_s / np_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
