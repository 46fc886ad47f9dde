"""Each rule against an independent pure-Python reference, bit for bit.

The references follow the definitions in ``flocknode.aggregation.rules`` one
coordinate at a time with Python floats (IEEE float64), so they share no code
with the vectorised numpy implementation.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from flocknode.aggregation import AggregationSettings, aggregate

SHAPES = {"w": (3, 4), "b": (4,)}


def _flat(model: dict[str, torch.Tensor]) -> list[float]:
    return [float(x) for name in model for x in model[name].reshape(-1).tolist()]


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _mean(rows: list[list[float]]) -> list[float]:
    out = []
    for c in range(len(rows[0])):
        acc = rows[0][c]
        for r in rows[1:]:
            acc += r[c]
        out.append(acc / len(rows))
    return out


def _coordinates(rows: list[list[float]]) -> list[list[float]]:
    return [sorted(r[c] + 0.0 for r in rows) for c in range(len(rows[0]))]


def ref_median(rows: list[list[float]]) -> list[float]:
    n = len(rows)
    return [
        col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2.0
        for col in _coordinates(rows)
    ]


def ref_trimmed(rows: list[list[float]], ratio: float) -> list[float]:
    n = len(rows)
    k = min(math.floor(ratio * n), (n - 1) // 2)
    out = []
    for col in _coordinates(rows):
        kept = col[k : n - k]
        acc = kept[0]
        for x in kept[1:]:
            acc += x
        out.append(acc / len(kept))
    return out


def _sqdist(a: list[float], b: list[float]) -> float:
    return math.fsum((x - y) * (x - y) for x, y in zip(a, b, strict=True))


def ref_krum(rows: list[list[float]], f: int, m: int | None) -> tuple[list[float], list[int]]:
    n = len(rows)
    k = min(max(n - f - 2, 1), n - 1)
    scores = [
        math.fsum(sorted(_sqdist(rows[i], rows[j]) for j in range(n) if j != i)[:k])
        for i in range(n)
    ]
    count = min(max(m if m is not None else n - f, 1), n)
    chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:count])
    return _mean([rows[i] for i in chosen]), chosen


def ref_clip(rows: list[list[float]], tau: float, iterations: int) -> list[float]:
    v = ref_median(rows)
    for _ in range(iterations):
        acc = [0.0] * len(v)
        for x in rows:
            d = [a - b for a, b in zip(x, v, strict=True)]
            norm = math.sqrt(math.fsum(t * t for t in d))
            if norm > tau:
                d = [t * (tau / norm) for t in d]
            acc = [a + t for a, t in zip(acc, d, strict=True)]
        v = [a + t / len(rows) for a, t in zip(v, acc, strict=True)]
    return v


def _models(make_model, n: int, seed: int):
    g = make_model(seed, SHAPES)
    ups = [make_model(seed + 1 + i, SHAPES, scale=0.1 * (1 + i % 3)) for i in range(n)]
    return g, ups


def _check(result_model, g, delta: list[float]) -> None:
    expected = [_f32(a + b) for a, b in zip(_flat(g), delta, strict=True)]
    got = _flat(result_model)
    assert [struct.pack("<f", x) for x in got] == [struct.pack("<f", x) for x in expected]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 10])
def test_rules_match_the_reference(make_model, n: int) -> None:
    g, ups = _models(make_model, n, seed=100 + n)
    rows = [_flat(u) for u in ups]
    cases = {
        "fedavg": (AggregationSettings(rule="fedavg"), _mean(rows)),
        "median": (AggregationSettings(rule="median"), ref_median(rows)),
        "trimmed_mean": (
            AggregationSettings(rule="trimmed_mean", trim_ratio=0.25),
            ref_trimmed(rows, 0.25),
        ),
        "centered_clip": (
            AggregationSettings(rule="centered_clip", clip_tau=0.2, clip_iterations=4),
            ref_clip(rows, 0.2, 4),
        ),
    }
    for name, (settings, delta) in cases.items():
        r = aggregate(g, ups, settings)
        assert r.rejected == (), name
        _check(r.model, g, delta)
    for f, m in [(0, None), (1, None), (2, 2), (1, 1), (3, 20)]:
        r = aggregate(g, ups, AggregationSettings(rule="multi_krum", krum_f=f, krum_m=m))
        delta, chosen = ref_krum(rows, f, m)
        assert r.rejected == (), (f, m)  # f would otherwise shrink by the rejected count
        assert r.selected == tuple(chosen), (f, m)
        _check(r.model, g, delta)


def test_rules_ignore_the_tensor_order_of_the_updates(make_model, digest) -> None:
    """Updates may list their tensors in another order; only the names matter."""
    g, ups = _models(make_model, 5, seed=7)
    shuffled = [dict(reversed(list(u.items()))) for u in ups]
    for rule in ("fedavg", "median", "trimmed_mean", "multi_krum", "centered_clip"):
        s = AggregationSettings(rule=rule)
        assert digest(aggregate(g, ups, s).model) == digest(aggregate(g, shuffled, s).model)


def test_result_keeps_the_global_models_names_shapes_and_dtype(make_model) -> None:
    g, ups = _models(make_model, 3, seed=9)
    r = aggregate(g, ups, AggregationSettings(rule="median"))
    assert list(r.model) == list(g)
    for name, t in r.model.items():
        assert t.dtype == torch.float32 and t.shape == g[name].shape


def test_inputs_are_not_modified(make_model) -> None:
    g, ups = _models(make_model, 4, seed=11)
    before = [{k: v.clone() for k, v in m.items()} for m in [g, *ups]]
    for rule in ("fedavg", "median", "trimmed_mean", "multi_krum", "centered_clip"):
        aggregate(g, ups, AggregationSettings(rule=rule))
    for old, new in zip(before, [g, *ups], strict=True):
        assert all(torch.equal(old[k], new[k]) for k in old)


def test_signed_zero_does_not_depend_on_sort_order() -> None:
    """-0.0 and +0.0 compare equal; the median must not return either at random."""
    g = {"x": torch.tensor([-0.0, 1.0])}
    results = set()
    for pattern in ([-0.0, 0.0, -0.0], [0.0, -0.0, -0.0], [-0.0, -0.0, 0.0], [-0.0] * 3):
        ups = [{"x": torch.tensor([z, 0.5])} for z in pattern]
        r = aggregate(g, ups, AggregationSettings(rule="median"))
        results.add(np.float32(r.model["x"][0].item()).tobytes())
    assert results == {np.float32(0.0).tobytes()}
