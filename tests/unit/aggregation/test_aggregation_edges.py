"""Edge cases, input refusal, the norm check, thread independence and robustness."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flocknode.aggregation import (
    RULES,
    AggregationInputError,
    AggregationSettings,
    NonFiniteUpdateError,
    SettingsError,
    aggregate,
    apply_update,
    no_work,
    norm_check,
)

SHAPES = {"w": (8, 16), "b": (16,)}


def _vec(values: list[float]) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(values, dtype=torch.float32)}


@pytest.mark.parametrize("rule", RULES)
def test_one_update_is_applied_as_it_is(make_model, digest, rule: str) -> None:
    g = make_model(1, SHAPES)
    u = make_model(2, SHAPES, scale=0.1)
    r = aggregate(g, [u], AggregationSettings(rule=rule), seats=[4])
    assert r.included == (4,) and r.used == (4,) and r.rejected == ()
    assert r.selected == ((4,) if rule == "multi_krum" else None)
    assert digest(r.model) == digest(apply_update(g, u))


@pytest.mark.parametrize("rule", RULES)
def test_no_updates_leave_the_model_unchanged(make_model, digest, rule: str) -> None:
    g = make_model(1, SHAPES)
    r = aggregate(g, [], AggregationSettings(rule=rule))
    assert digest(r.model) == digest(g)
    assert r.model["w"] is not g["w"]  # a copy: the caller may keep mutating its own
    assert r.rejected == () and r.used == () and r.median_norm is None
    assert r.selected == (() if rule == "multi_krum" else None)


def test_norm_check_uses_the_lower_median_for_even_counts() -> None:
    # norms 1, 2, 4, 7: lower median 2, limit 6 -> 7 is out (the upper median 4 would keep it)
    assert norm_check([1.0, 2.0, 4.0, 7.0], 3.0) == [3]
    assert norm_check([7.0, 1.0, 4.0, 2.0], 3.0) == [0]
    # odd: median 2 -> limit 6; exactly 6 is not "exceeds"
    assert norm_check([1.0, 2.0, 6.0], 3.0) == []
    assert norm_check([1.0, 2.0, 6.000001], 3.0) == [2]
    assert norm_check([5.0], 3.0) == []
    assert norm_check([], 3.0) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e30, allow_nan=False), min_size=1, max_size=12),
    st.floats(min_value=1.0, max_value=100.0),
)
def test_norm_check_never_rejects_half_or_more(norms: list[float], factor: float) -> None:
    """Of the non-zero norms at least half survive; zero norms are "no work", never rejected."""
    rejected = norm_check(norms, factor)
    work = [n for n in norms if n != 0.0]
    assert len(work) - len(rejected) >= math.ceil(len(work) / 2)
    limit = factor * sorted(work)[(len(work) - 1) // 2] if work else 0.0
    assert rejected == [i for i, n in enumerate(norms) if n != 0.0 and n > limit]
    assert no_work(norms) == [i for i, n in enumerate(norms) if n == 0.0]


def test_rejected_updates_are_reported_by_seat_and_left_out(digest) -> None:
    g = _vec([0.0, 0.0])
    ups = [_vec([1.0, 0.0]), _vec([0.0, 1.0]), _vec([100.0, 0.0]), _vec([1.0, 1.0])]
    r = aggregate(g, ups, AggregationSettings(rule="fedavg"), seats=[2, 3, 5, 9])
    assert r.rejected == (5,) and r.used == (2, 3, 9)
    assert r.norms == (1.0, 1.0, 100.0, math.sqrt(2.0)) and r.median_norm == 1.0
    expected = aggregate(g, [ups[0], ups[1], ups[3]], AggregationSettings(rule="fedavg"))
    assert digest(r.model) == digest(expected.model)


def test_median_odd_and_even_counts() -> None:
    g = _vec([0.0])
    odd = [_vec([v]) for v in (3.0, 1.0, 2.0)]
    even = [_vec([v]) for v in (4.0, 1.0, 2.0, 5.0)]
    assert aggregate(g, odd, AggregationSettings(rule="median")).model["x"].item() == 2.0
    # even: mean of the two middle values (2 and 4)
    assert aggregate(g, even, AggregationSettings(rule="median")).model["x"].item() == 3.0


def test_trimmed_mean_trims_per_coordinate_and_keeps_one() -> None:
    g = _vec([0.0, 0.0])
    ups = [_vec([v, -v]) for v in (1.0, 2.0, 3.0, 4.0, 8.0)]
    r = aggregate(g, ups, AggregationSettings(rule="trimmed_mean", trim_ratio=0.2))
    assert r.rejected == ()
    assert r.model["x"].tolist() == [3.0, -3.0]  # drops 1 and 8, mean of 2, 3, 4
    two = aggregate(g, ups[:2], AggregationSettings(rule="trimmed_mean", trim_ratio=0.49))
    assert two.model["x"].tolist() == [1.5, -1.5]  # k capped at (n - 1) // 2 = 0


def test_multi_krum_leaves_out_without_rejecting() -> None:
    """An opposite update of ordinary norm is not selected, and not rejected."""
    g = _vec([0.0, 0.0, 0.0])
    honest = [_vec([1.0, 1.0, 0.0]), _vec([1.1, 0.9, 0.1]), _vec([0.9, 1.1, -0.1])]
    ups = [*honest, _vec([-1.0, -1.0, 0.0])]
    r = aggregate(g, ups, AggregationSettings(rule="multi_krum", krum_f=1), seats=[0, 1, 2, 3])
    assert r.rejected == () and r.used == (0, 1, 2, 3)
    assert r.selected == (0, 1, 2)
    assert r.model["x"].tolist() == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)


def _flip4(u: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: -4 * v for k, v in u.items()}


@pytest.mark.parametrize("krum_f", [1, 2])
def test_updates_the_norm_check_rejects_count_against_krum_f(make_model, digest, krum_f) -> None:
    """2 of 5 sign-flipped x4 are rejected: multi_krum then averages all 3 survivors.

    Counting f among the survivors instead would leave out ``krum_f`` honest ones.
    """
    g = make_model(1, SHAPES)
    direction = make_model(2, SHAPES, 0.1)
    honest = [
        {k: direction[k] + v for k, v in make_model(10 + i, SHAPES, 0.03).items()} for i in range(3)
    ]
    ups = [honest[0], _flip4(honest[1]), honest[1], _flip4(honest[2]), honest[2]]
    r = aggregate(
        g, ups, AggregationSettings(rule="multi_krum", krum_f=krum_f), seats=[0, 1, 2, 3, 4]
    )
    assert r.rejected == (1, 3) and r.used == (0, 2, 4)
    assert r.selected == (0, 2, 4)
    assert digest(r.model) == digest(aggregate(g, honest, AggregationSettings()).model)


def test_multi_krum_still_leaves_out_the_byzantine_updates_the_norm_check_missed() -> None:
    """krum_f = 2, one update rejected by norm: the other, of ordinary norm, is left out alone."""
    g = _vec([0.0, 0.0, 0.0])
    honest = [
        _vec([1.0, 1.0, 0.0]),
        _vec([1.1, 0.9, 0.1]),
        _vec([0.9, 1.1, -0.1]),
        _vec([1.0, 0.9, 0.05]),
    ]
    ups = [honest[0], _vec([-1.0, -1.0, 0.0]), honest[1], _vec([-40.0, -40.0, 0.0]), *honest[2:]]
    r = aggregate(g, ups, AggregationSettings(rule="multi_krum", krum_f=2))
    assert r.rejected == (3,) and r.used == (0, 1, 2, 4, 5)
    assert r.selected == (0, 2, 4, 5)  # all four honest; with f = 2 on the survivors: three


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([0.5, 1.0, 1.3, 4.0, 9.0]), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=4),
    st.one_of(st.none(), st.integers(min_value=1, max_value=8)),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_multi_krum_equals_multi_krum_on_the_survivors_with_f_less_the_rejected(
    scales: list[float], krum_f: int, krum_m: int | None, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    g = {"x": torch.randn(6, generator=gen)}
    ups = [{"x": torch.randn(6, generator=gen) * s} for s in scales]
    r = aggregate(g, ups, AggregationSettings(rule="multi_krum", krum_f=krum_f, krum_m=krum_m))
    survivors = [ups[i] for i in r.used]
    alone = aggregate(
        g,
        survivors,
        AggregationSettings(
            rule="multi_krum",
            krum_f=max(0, krum_f - len(r.rejected)),
            krum_m=krum_m,
            norm_factor=1e9,
        ),
        seats=list(r.used),
    )
    assert alone.rejected == ()
    assert r.selected == alone.selected
    assert torch.equal(r.model["x"], alone.model["x"])


def test_centered_clip_limits_each_updates_pull() -> None:
    g = _vec([0.0])
    ups = [_vec([1.0]), _vec([1.0]), _vec([1.0]), _vec([1.0]), _vec([2.9])]
    r = aggregate(
        g, ups, AggregationSettings(rule="centered_clip", clip_tau=0.1, clip_iterations=1)
    )
    # start at the median 1.0; the outlier pulls by tau / n = 0.02 only
    assert r.model["x"].item() == pytest.approx(1.02, abs=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_updates_are_refused_naming_the_seat(make_model, bad: float) -> None:
    g = make_model(1, SHAPES)
    ups = [make_model(2 + i, SHAPES, 0.1) for i in range(3)]
    ups[1]["b"][3] = bad
    for rule in RULES:
        with pytest.raises(NonFiniteUpdateError, match=r"seat 7: tensor 'b'"):
            aggregate(g, ups, AggregationSettings(rule=rule), seats=[5, 7, 8])
    g["w"][0, 0] = bad
    with pytest.raises(NonFiniteUpdateError, match="global model"):
        aggregate(g, [], AggregationSettings())


def test_overflow_of_the_result_is_refused() -> None:
    g = _vec([3.0e38])
    with pytest.raises(NonFiniteUpdateError, match="overflows"):
        aggregate(g, [_vec([3.0e38])], AggregationSettings())


def test_malformed_updates_are_refused(make_model) -> None:
    g = make_model(1, SHAPES)
    good = make_model(2, SHAPES, 0.1)
    s = AggregationSettings()
    cases = {
        "missing tensor 'b'": {"w": good["w"]},
        "unexpected tensor 'z'": {**good, "z": torch.zeros(1)},
        "shape": {**good, "b": torch.zeros(15)},
        "float32": {**good, "b": good["b"].double()},
    }
    for message, update in cases.items():
        with pytest.raises(AggregationInputError, match=message):
            aggregate(g, [good, update], s)
    with pytest.raises(AggregationInputError, match="expected a mapping"):
        aggregate(g, [[good["w"]]], s)  # type: ignore[list-item]
    with pytest.raises(AggregationInputError, match="seats must be increasing"):
        aggregate(g, [good, good], s, seats=[1, 1])
    with pytest.raises(AggregationInputError, match="2 updates but 1 seats"):
        aggregate(g, [good, good], s, seats=[1])
    with pytest.raises(AggregationInputError, match="no tensors"):
        aggregate({}, [], s)


@pytest.mark.parametrize("rule", RULES)
def test_same_hash_with_one_and_two_torch_threads(
    make_model, digest, restore_threads, rule: str
) -> None:
    g = make_model(1, {"w": (256, 256), "b": (256,)})
    ups = [make_model(10 + i, {"w": (256, 256), "b": (256,)}, 0.01 * (1 + i)) for i in range(7)]
    out = set()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out.add(digest(aggregate(g, ups, AggregationSettings(rule=rule)).model))
    assert len(out) == 1


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a))


def test_robust_rules_resist_three_of_ten_sign_flips(make_model) -> None:
    """3 of 10 updates negated (same norm, so the norm check keeps them)."""
    g = {k: torch.zeros(v) for k, v in SHAPES.items()}
    direction = make_model(1, SHAPES)
    honest = [
        {k: direction[k] + 0.3 * v for k, v in make_model(100 + i, SHAPES).items()}
        for i in range(7)
    ]
    flipped = [{k: -v for k, v in make_model(200 + i, SHAPES).items()} for i in range(3)]
    flipped = [{k: -direction[k] - 0.3 * v for k, v in f.items()} for f in flipped]
    ups = flipped[:2] + honest[:4] + flipped[2:] + honest[4:]
    honest_mean = aggregate(g, honest, AggregationSettings(rule="fedavg")).model
    scale = _distance(honest_mean, g)
    err = {
        rule: _distance(aggregate(g, ups, s).model, honest_mean) / scale
        for rule, s in {
            "fedavg": AggregationSettings(rule="fedavg"),
            "median": AggregationSettings(rule="median"),
            "multi_krum": AggregationSettings(rule="multi_krum", krum_f=3),
        }.items()
    }
    assert aggregate(g, ups, AggregationSettings()).rejected == ()
    assert err["fedavg"] > 0.5  # pulled to 40% of the honest mean
    assert err["median"] < 0.35
    assert err["multi_krum"] < 0.1
    r = aggregate(g, ups, AggregationSettings(rule="multi_krum", krum_f=3))
    assert set(r.selected or ()) == {2, 3, 4, 5, 7, 8, 9}


def test_norm_check_rejects_sign_flips_scaled_by_four(make_model) -> None:
    g = {k: torch.zeros(v) for k, v in SHAPES.items()}
    honest = [make_model(300 + i, SHAPES, 0.1) for i in range(7)]
    ups = [
        *honest,
        *({k: -4 * v for k, v in make_model(400 + i, SHAPES, 0.1).items()} for i in range(3)),
    ]
    r = aggregate(g, ups, AggregationSettings(rule="median"), seats=list(range(10)))
    assert r.rejected == (7, 8, 9)


def test_settings_are_validated_naming_the_setting() -> None:
    for kwargs, name in [
        ({"rule": "mean"}, "rule"),
        ({"norm_factor": 0.5}, "norm_factor"),
        ({"norm_factor": float("inf")}, "norm_factor"),
        ({"trim_ratio": 0.5}, "trim_ratio"),
        ({"krum_f": -1}, "krum_f"),
        ({"krum_m": 0}, "krum_m"),
        ({"clip_tau": 0.0}, "clip_tau"),
        ({"clip_iterations": 0}, "clip_iterations"),
        ({"clip_iterations": True}, "clip_iterations"),
        ({"outer_lr": 0.0}, "outer_lr"),
        ({"outer_lr": 1.5}, "outer_lr"),
    ]:
        with pytest.raises(SettingsError) as e:
            AggregationSettings(**kwargs)
        assert e.value.name == name
    with pytest.raises(SettingsError, match=r"aggregation\.bogus"):
        AggregationSettings.from_dict({"bogus": 1})
    with pytest.raises(SettingsError, match=r"aggregation\.krum_f"):
        AggregationSettings.from_dict({"krum_f": "2"})
    s = AggregationSettings.from_dict({"rule": "median", "norm_factor": 3})
    assert s.norm_factor == 3.0 and isinstance(s.norm_factor, float)
    assert AggregationSettings.from_dict(s.to_dict()) == s
    # outer_lr is written only when it is not 1 (settings without it keep their hash)
    assert "outer_lr" not in s.to_dict()
    half = AggregationSettings(outer_lr=0.5)
    assert (
        half.to_dict()["outer_lr"] == 0.5 and AggregationSettings.from_dict(half.to_dict()) == half
    )


def test_the_outer_learning_rate_scales_the_weights_step_not_the_statistics() -> None:
    g = {
        "w": torch.tensor([1.0, -2.0, 0.5]),
        "bn.running_mean": torch.tensor([0.0, 1.0]),
        "bn.num_batches_tracked": torch.tensor(10, dtype=torch.int64),
    }
    ups = [
        {
            "w": torch.tensor([0.2, 0.4, -0.1]) * k,
            "bn.running_mean": torch.tensor([0.5, -0.5]) * k,
            "bn.num_batches_tracked": torch.tensor(4, dtype=torch.int64),
        }
        for k in (1.0, 2.0, 3.0)
    ]
    full = aggregate(g, ups, AggregationSettings()).model
    half = aggregate(g, ups, AggregationSettings(outer_lr=0.5)).model
    step = full["w"].double() - g["w"].double()
    assert torch.allclose(step, torch.tensor([0.4, 0.8, -0.2], dtype=torch.float64))
    assert torch.allclose(half["w"].double() - g["w"].double(), 0.5 * step, atol=1e-7)
    for name in ("bn.running_mean", "bn.num_batches_tracked"):
        assert torch.equal(half[name], full[name]) and not torch.equal(full[name], g[name])
