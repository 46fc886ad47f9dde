"""State beyond float32: canonical bytes, aggregation and a BatchNorm model end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flocknode.aggregation import AggregationSettings, aggregate, apply_update
from flocknode.aggregation.core import NonFiniteUpdateError
from flocknode.crypto import CanonicalError, canonical_bytes, parse_canonical, update_hash
from flocknode.crypto.canonical import CanonicalReader
from flocknode.learning import Learner, TrainingSettings, model_hash, models, state_delta
from flocknode.learning.learner import delta_in_place
from flocknode.learning.models import build_model, load_task, model_state, seeded_model

FEDAVG = AggregationSettings(rule="fedavg")


def _mixed() -> dict[str, torch.Tensor]:
    return {
        "w16": torch.tensor([1.5, -2.25, 0.0], dtype=torch.float16),
        "wbf": torch.tensor([[3.0, -0.5]], dtype=torch.bfloat16),
        "w32": torch.tensor([0.1, 0.2], dtype=torch.float32),
        "count": torch.tensor(7, dtype=torch.int64),
        "idx": torch.tensor([1, -2], dtype=torch.int32),
    }


def test_mixed_state_round_trips_bit_for_bit_in_any_pieces() -> None:
    state = _mixed()
    raw = canonical_bytes(state)
    assert raw[4] == 2 and raw[5] == 0  # version 2, per-tensor dtypes
    back = parse_canonical(raw)
    assert list(back) == sorted(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)
    reader = CanonicalReader()
    for i in range(len(raw)):
        reader.feed(raw[i : i + 1])
    assert canonical_bytes(reader.finish()) == raw


def test_float32_states_keep_their_version_1_bytes() -> None:
    state = {"a": torch.ones(2)}
    raw = canonical_bytes(state)
    assert raw[4] == 1 and raw[5] == 1
    # the same tensors dressed as version 2 are refused: one encoding per state
    v2 = bytearray(raw[:16]) + raw[16:-8] + b"\x01" + raw[-8:]
    v2[4], v2[5], v2[12] = 2, 0, v2[12] + 1
    with pytest.raises(CanonicalError, match="must be version 1"):
        parse_canonical(bytes(v2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_non_finite_values_are_refused(dtype: torch.dtype) -> None:
    for bad in (float("nan"), float("inf")):
        raw = canonical_bytes({"a": torch.tensor([1.0, bad], dtype=dtype), "n": torch.tensor(1)})
        with pytest.raises(CanonicalError, match="non-finite"):
            parse_canonical(raw)
        assert parse_canonical(raw, require_finite=False)["a"].dtype == dtype


def test_aggregation_keeps_dtypes_and_moves_counters_by_the_median_delta() -> None:
    base = _mixed()
    ups = []
    for k in (1, 2, 100):  # the third update claims a huge counter step
        u = {n: torch.zeros_like(t) for n, t in base.items()}
        u["w16"] = torch.full((3,), 0.25 * min(k, 2), dtype=torch.float16)
        u["count"] = torch.tensor(10 * k if k < 100 else 10**6)
        u["idx"] = torch.tensor([k, -k], dtype=torch.int32)
        ups.append(u)
    res = aggregate(base, ups[:2], FEDAVG)
    assert {n: t.dtype for n, t in res.model.items()} == {n: t.dtype for n, t in base.items()}
    # fedavg of 0.25 and 0.5 is 0.375, added in float64 and rounded to float16 once
    assert torch.equal(res.model["w16"], (base["w16"].double() + 0.375).half())
    assert int(res.model["count"]) == 7 + 10  # lower median of (10, 20)
    three = aggregate(base, ups, AggregationSettings(rule="median"))
    assert int(three.model["count"]) == 7 + 20  # the outlier does not move it
    assert torch.equal(three.model["idx"], torch.tensor([3, -4], dtype=torch.int32))
    assert three.rejected == ()  # the counter did not count in the norm check
    # integers take no part in the norms
    assert res.norms[0] == pytest.approx((3 * 0.25**2) ** 0.5)
    alone = apply_update(base, ups[0])
    assert int(alone["count"]) == 17 and alone["wbf"].dtype == torch.bfloat16


def test_aggregation_rejects_dtype_mismatches_and_half_precision_overflow() -> None:
    base = _mixed()
    bad = {n: torch.zeros_like(t) for n, t in base.items()}
    bad["w16"] = bad["w16"].float()
    with pytest.raises(ValueError, match=r"expected torch\.float16"):
        aggregate(base, [bad], FEDAVG)
    big = {n: torch.zeros_like(t) for n, t in base.items()}
    big["w16"] = torch.full((3,), 60000.0, dtype=torch.float16)
    with pytest.raises(NonFiniteUpdateError, match=r"overflows torch\.float16"):
        aggregate({**base, "w16": torch.full((3,), 60000.0, dtype=torch.float16)}, [big], FEDAVG)


def test_counters_saturate_instead_of_wrapping() -> None:
    top = torch.iinfo(torch.int64).max
    base = {"w": torch.zeros(1), "n": torch.tensor(top - 1)}
    up = {"w": torch.ones(1), "n": torch.tensor(5)}
    assert int(apply_update(base, up)["n"]) == top


def test_state_delta_is_in_the_global_dtypes() -> None:
    g = _mixed()
    trained = {n: (t + 1).to(t.dtype) for n, t in g.items()}
    d = state_delta(trained, g)
    assert all(d[n].dtype == g[n].dtype for n in g)
    assert int(d["count"]) == 1 and torch.equal(d["w16"], torch.ones(3, dtype=torch.float16))


def test_an_update_taken_in_place_has_state_deltas_bits_and_memory_where_it_can() -> None:
    g = _mixed()
    trained = {n: (t * 3 + 1).to(t.dtype) for n, t in g.items()}
    want = state_delta(trained, g)
    ptrs = {n: t.data_ptr() for n, t in trained.items()}
    got = delta_in_place(trained, {n: t.clone() for n, t in g.items()})
    for n in g:
        assert got[n].dtype == want[n].dtype and torch.equal(got[n], want[n]), n
    # float32 and integers in place; half precision through float32 as state_delta does
    assert {n for n in g if got[n].data_ptr() == ptrs[n]} == {"w32", "count", "idx"}


def test_empty_entries_do_not_count_as_tied() -> None:
    # every empty tensor reports storage address 0: that is no tie
    trained = {"a": torch.zeros(0), "b": torch.zeros(0, 3), "w": torch.tensor([5.0, 7.0])}
    ptr = trained["w"].data_ptr()
    got = delta_in_place(trained, {"a": torch.zeros(0), "b": torch.zeros(0, 3), "w": torch.ones(2)})
    assert torch.equal(got["w"], torch.tensor([4.0, 6.0])) and got["w"].data_ptr() == ptr
    assert got["a"].shape == (0,) and got["b"].shape == (0, 3)


def test_tied_entries_are_not_subtracted_twice() -> None:
    w = torch.tensor([5.0, 7.0])
    trained = {"a": w, "b": w}  # one tensor under two names, as tied weights are
    base = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([1.0, 2.0])}
    got = delta_in_place(trained, dict(base))
    assert torch.equal(got["a"], torch.tensor([4.0, 5.0])) and torch.equal(got["b"], got["a"])


@pytest.mark.parametrize(("task", "optimizer"), [("digits-cnn", "adam"), ("digits-mlp", "sgd")])
def test_training_on_the_handed_over_state_gives_the_same_update(task: str, optimizer: str) -> None:
    """A proposer hands the global model's tensors over (``reread``): the model
    trains on them instead of a copy, and the update has the same bits."""
    settings = TrainingSettings(task=task, local_steps=5, optimizer=optimizer)
    learner = Learner.for_shard(settings, 0, 3)
    g = learner.initial_state()
    want = learner.train({n: t.clone() for n, t in g.items()}, seed=4).update
    handed = {n: t.clone() for n, t in g.items()}
    got = learner.train(handed, seed=4, reread=lambda: {n: t.clone() for n, t in g.items()}).update
    for n in want:
        assert got[n].dtype == want[n].dtype and torch.equal(got[n], want[n]), n
    # no copy was made: the handed-over tensors hold the update now
    assert all(handed[n].data_ptr() == got[n].data_ptr() for n in g)


def test_digits_cnn_trains_batchnorm_state_through_the_whole_path() -> None:
    settings = TrainingSettings(task="digits-cnn", local_steps=30)
    learner = Learner.for_shard(settings, 0, 3)
    g = learner.initial_state()
    assert g["1.num_batches_tracked"].dtype == torch.int64
    assert {"1.running_mean", "1.running_var", "4.running_mean"} <= set(g)
    res = learner.train(g, seed=1)
    assert int(res.update["1.num_batches_tracked"]) == 30
    assert float(res.update["1.running_var"].abs().sum()) > 0
    # the update survives sealing's canonical encoding bit for bit
    assert update_hash(parse_canonical(canonical_bytes(res.update))) == model_hash(res.update)
    new = aggregate(g, [res.update], FEDAVG).model
    assert int(new["1.num_batches_tracked"]) == 30
    before, after = learner.evaluate(g, "test"), learner.evaluate(new, "test")
    assert after.accuracy > before.accuracy + 0.3


def test_running_statistics_skip_the_norm_check_and_move_by_the_median_delta() -> None:
    base = {"0.weight": torch.zeros(2), "1.running_var": torch.ones(2)}
    ups = [
        {"0.weight": torch.full((2,), 0.5), "1.running_var": torch.full((2,), d)}
        for d in (0.1, 0.2, 500.0)  # a huge statistic alone is not a rejected update
    ]
    res = aggregate(base, ups, FEDAVG)
    assert res.rejected == () and res.norms == pytest.approx([0.5 * 2**0.5] * 3)
    assert torch.equal(res.model["1.running_var"], torch.full((2,), 1.2))
    assert torch.equal(res.model["0.weight"], torch.full((2,), 0.5))


@pytest.mark.parametrize(("shape", "largest"), [("wide", 0.85), ("deep", 0.14)])
def test_sized_mlp_tasks_have_the_model_size_their_name_gives(shape: str, largest: float) -> None:
    """bench/scale.py's models: about 1 MiB of float32 state for <shape>-mlp-1mb,
    the largest tensor the share the docs give, and a round trains on the
    digits CSV like digits-mlp."""
    task = f"{shape}-mlp-1mb"
    learner = Learner.from_settings(TrainingSettings(task=task, local_steps=2), 0, 5)
    state = learner.initial_state()
    size = sum(v.numel() * v.element_size() for v in state.values())
    assert abs(size - 2**20) < 2**20 * 0.005
    biggest = max(v.numel() * v.element_size() for v in state.values())
    assert biggest / size == pytest.approx(largest, abs=0.01)
    res = learner.train(state, seed=1)
    assert set(res.update) == set(state) and res.samples > 0


class _Extra(nn.Module):
    """A linear layer and one more tensor of the kind ``how`` names."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        if how == "non_persistent":
            self.register_buffer("scale", torch.rand(2), persistent=False)
        elif how == "attribute":
            self.scale = torch.rand(2)
        elif how == "needs_values":
            self.scale = nn.Parameter(torch.rand(2) * float(torch.rand(()).item()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * getattr(self, "scale", 1.0)


@pytest.mark.parametrize("task", ["digits-mlp", "digits-cnn", "wide-mlp-1mb"])
def test_a_model_given_every_entry_skips_the_seeded_init_and_is_the_same(task: str) -> None:
    factory = load_task(task).build_model
    state = model_state(seeded_model(factory, 7))
    assert models._unseeded(factory, state) is not None  # the fast way is taken
    fast = build_model(factory, state, seed=0)
    slow = seeded_model(factory, 0)
    slow.load_state_dict(state)
    for (n, a), (m, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        assert n == m and a.dtype == b.dtype and torch.equal(a, b), n
    assert [p.requires_grad for p in fast.parameters()] == [
        p.requires_grad for p in slow.parameters()
    ]


@pytest.mark.parametrize("how", ["partial", "non_persistent", "attribute", "needs_values"])
def test_a_model_the_state_does_not_fully_fix_is_built_seeded(how: str) -> None:
    # entries the state lacks, and tensors outside the state, keep their seeded values
    def factory() -> nn.Module:
        return _Extra(how)

    seeded = seeded_model(factory, 3)
    state = model_state(seeded)
    if how == "partial":
        del state["fc.bias"]
    assert models._unseeded(factory, state) is None
    state = {k: torch.zeros_like(v) for k, v in state.items()}
    built = build_model(factory, state, seed=3)
    x = torch.ones(1, 3)
    want = seeded_model(factory, 3)
    want.load_state_dict(state, strict=False)
    assert torch.equal(built(x), want(x))


def test_a_built_in_evaluation_runs_on_the_states_own_tensors_and_leaves_them() -> None:
    # a voter evaluates ~7 models a round: the built-in evaluation (eval mode, no_grad)
    # runs on the state's tensors, with BatchNorm's running statistics untouched
    learner = Learner.for_shard(TrainingSettings(task="digits-cnn"), 0, 3)
    state = learner.initial_state()
    kept = {k: v.clone() for k, v in state.items()}
    shared = build_model(learner.task.build_model, state, 0, share=True)
    assert all(t.data_ptr() == state[n].data_ptr() for n, t in shared.state_dict().items())
    got = learner.evaluate(state, "val")
    copied = build_model(learner.task.build_model, state, 0)
    assert all(t.data_ptr() != state[n].data_ptr() for n, t in copied.state_dict().items())
    assert got == learner.task.evaluate(copied, learner.split("val"), learner.device)
    assert all(torch.equal(kept[k], state[k]) for k in state)


def test_a_partial_state_runs_the_factory_once_a_build_and_never_first_on_meta() -> None:
    # lm-lora's factory fills a lazy cache (its base model) and exchanges a part of
    # the state: its first run must be a real one, and later builds run it once
    calls: list[bool] = []

    def factory() -> nn.Module:
        calls.append(torch.empty(0).is_meta)
        return _Extra("none")

    state = model_state(seeded_model(factory, 0))
    del state["fc.bias"]
    calls.clear()
    for _ in range(3):
        build_model(factory, state, seed=0)
    assert calls == [False, False, False]
