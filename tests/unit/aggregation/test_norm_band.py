"""The norm check's band (step scale): zero updates and majority cheaters.

docs/protocol.md, step 5, and "Zero updates and cheaters holding most proposer seats".
"""

from __future__ import annotations

import math

import torch

from flocknode.aggregation import AggregationSettings, SettingsError, aggregate
from flocknode.aggregation.core import no_work, norm_band, norm_check, step_scale
from flocknode.learning.settings import TaskSettings

DIM = 4810  # the digits MLP's parameter count


def _model(values: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"w": values.to(torch.float32).contiguous()}


def _honest(norm: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(DIM, generator=g, dtype=torch.float64)
    return _model(v * (norm / float(v.norm())))


def _scale() -> float:
    t = TaskSettings().training
    s = step_scale(t.optimizer, t.learning_rate, t.local_steps, DIM)
    assert s is not None
    return s


def test_step_scale_is_lr_times_root_of_parameters_times_steps() -> None:
    assert step_scale("adam", 0.02, 100, DIM) == 0.02 * math.sqrt(DIM * 100)
    assert step_scale("sgd", 0.02, 100, DIM) is None
    assert step_scale("adam", 0.02, 0, DIM) is None


def test_finding5_zero_update_does_not_get_honest_rejected() -> None:
    g = _model(torch.zeros(DIM))
    honest = _honest(0.7 * _scale(), 1)
    zero = _model(torch.zeros(DIM))
    for scale in (None, _scale()):  # with and without a step scale
        r = aggregate(g, [zero, honest], AggregationSettings(), seats=[0, 1], scale=scale)
        assert r.no_work == (0,) and r.rejected == (), (scale, r.norms)
        assert r.used == (1,)
        assert torch.equal(r.model["w"], honest["w"])
    # several zero updates against one honest update: still only the zeros go
    r = aggregate(g, [zero, zero, honest], AggregationSettings(), seats=[0, 1, 2])
    assert r.no_work == (0, 1) and r.rejected == () and r.used == (2,)


def test_norm_below_the_floor_is_no_work_set_aside_and_not_rejected() -> None:
    """A converged honest proposer's step can be tiny (0.003 of the scale on the
    digits demo past round 60): it is left out of the rule and the median, and
    not slashed."""
    g = _model(torch.zeros(DIM))
    s = _scale()
    tiny, honest = _honest(0.003 * s, 2), _honest(0.6 * s, 3)
    r = aggregate(g, [tiny, honest], AggregationSettings(), scale=s)
    assert r.no_work == (0,) and r.rejected == () and r.used == (1,)
    assert r.median_norm == r.norms[1]
    # an over-scaled update is still rejected next to a "no work" one
    big = _model(-4.0 * honest["w"])
    r = aggregate(g, [tiny, honest, big, _honest(0.5 * s, 4)], AggregationSettings(), scale=s)
    assert r.no_work == (0,) and r.rejected == (2,) and r.used == (1, 3)


def test_finding12_majority_sign_flippers_rejected() -> None:
    g = _model(torch.zeros(DIM))
    s = _scale()
    settings = AggregationSettings(rule="median")
    # the smallest honest norm measured on the digits task (0.41 of the scale), flipped x4
    for frac in (0.42, 0.7, 1.07):
        honest = [_honest(frac * s, 10 + i) for i in range(3)]
        flip = [_model(-4.0 * honest[i]["w"]) for i in (1, 2)]
        r = aggregate(g, [honest[0], *flip], settings, seats=[0, 1, 2], scale=s)
        assert r.rejected == (1, 2), (frac, r.norms)
        assert r.used == (0,)
        # majority of 3 in 5 seats
        r = aggregate(
            g,
            [honest[0], flip[0], honest[1], flip[1], _model(-4.0 * honest[2]["w"])],
            settings,
            seats=[0, 1, 2, 3, 4],
            scale=s,
        )
        assert r.rejected == (1, 3, 4) and r.used == (0, 2)


def test_honest_spread_stays_inside_the_band() -> None:
    g = _model(torch.zeros(DIM))
    s = _scale()
    ups = [_honest(f * s, 20 + i) for i, f in enumerate((0.41, 0.6, 0.8, 1.07, 1.2))]
    r = aggregate(g, ups, AggregationSettings(), scale=s)
    assert r.rejected == () and r.median_norm is not None


def test_band_edges_and_settings() -> None:
    assert norm_band(AggregationSettings(), None) is None
    assert norm_band(AggregationSettings(norm_floor=0.5, norm_ceiling=2.0), 10.0) == (5.0, 20.0)
    assert norm_check([0.0, 5.0, 20.0, 20.000001, 4.999], 10.0, (5.0, 20.0)) == [3]
    assert no_work([0.0, 5.0, 20.0, 20.000001, 4.999], (5.0, 20.0)) == [0, 4]
    for bad in (
        {"norm_floor": -0.1},
        {"norm_floor": 2.0, "norm_ceiling": 2.0},
        {"norm_ceiling": 0},
    ):
        try:
            AggregationSettings(**bad)  # type: ignore[arg-type]
        except SettingsError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_an_update_just_above_the_floor_cannot_get_honest_updates_rejected() -> None:
    """With a step scale no proposer sets the reference: a cheater's update at
    0.11 of the scale would have made a median limit of 0.33, below honest
    late-training norms (0.4 to 0.6 of the scale)."""
    g = _model(torch.zeros(DIM))
    s = _scale()
    small = _honest(0.11 * s, 30)
    honest = [_honest(f * s, 31 + i) for i, f in enumerate((0.5, 0.6, 1.19))]
    for rule in ("fedavg", "median", "multi_krum"):
        r = aggregate(g, [small, *honest], AggregationSettings(rule=rule), scale=s)
        assert r.rejected == () and r.no_work == (), (rule, r.norms)
        r = aggregate(g, [small, honest[0]], AggregationSettings(rule=rule), scale=s)
        assert r.rejected == () and r.used == (0, 1), (rule, r.norms)
    # without a scale the median step stays (exact zeros aside)
    r = aggregate(g, [small, honest[0]], AggregationSettings(), scale=None)
    assert r.rejected == (1,)
