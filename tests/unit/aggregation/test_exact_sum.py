"""``numeric.exact_sum_of``: the correctly rounded exact sum (``math.fsum``'s bits),
however the values are cut into blocks, fast enough for a 100 MB model's norms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flocknode.aggregation.numeric import exact_sum_of, square_sum


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    wide = rng.standard_normal(500) * 10.0 ** rng.integers(-300, 300, 500)
    big = rng.standard_normal(200) * 1e16
    cancelling = np.concatenate([big, -big, [3.0, 2.0**-60]])
    rng.shuffle(cancelling)
    subnormal = rng.integers(-3, 4, 300) * 2.0 ** rng.integers(-1074, -1000, 300)
    return [
        np.zeros(0),
        np.array([-0.0, 0.0]),
        rng.standard_normal(1000),
        wide,
        cancelling,
        subnormal,
        np.array([1.0, 2.0**-53, 2.0**-53]),  # the half-way case rounds to even once, not twice
        np.full(4096, np.nextafter(1.0, 0.0)),  # the largest mantissa, many at one exponent
        rng.standard_normal(300).astype(np.float32).astype(np.float64) ** 2,
    ]


@pytest.mark.parametrize("values", _cases())
def test_the_exact_sum_is_fsums_value_whatever_the_blocks(values: np.ndarray) -> None:
    want = math.fsum(values.tolist())
    assert exact_sum_of([values]) == want
    cuts = [values[i : i + 7] for i in range(0, values.shape[0], 7)]
    assert exact_sum_of(cuts) == want
    assert exact_sum_of(reversed([values[: len(values) // 3], values[len(values) // 3 :]])) == want


def test_square_sum_is_the_exact_sum_of_the_squares() -> None:
    x = np.random.default_rng(3).standard_normal(10_000)
    assert square_sum([x[:123], x[123:]]) == math.fsum((x * x).tolist())


def test_zero_is_positive() -> None:
    assert math.copysign(1.0, exact_sum_of([np.array([-0.0, -0.0])])) == 1.0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_value_that_is_not_finite_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        exact_sum_of([np.array([1.0, bad])])
