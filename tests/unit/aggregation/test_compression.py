"""Compressed updates: the packed form, decoding untrusted bytes, error feedback, the cap."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from flocknode.aggregation import AggregationSettings, aggregate, apply_update
from flocknode.aggregation.compression import (
    CHUNK,
    Codec,
    CompressionError,
    codec,
    decode,
    encode,
    layout,
    open_packed,
    packed_spec,
)
from flocknode.aggregation.core import STATS, WEIGHTS, ModelFlat, layout_of
from flocknode.aggregation.settings import SettingsError
from flocknode.crypto import canonical_bytes, canonical_size, parse_canonical, spec_size
from flocknode.rounds.byzantine import Behaviour, tamper_update

INT8 = Codec("int8")
TOPK8 = Codec("topk", 0.01, 8)
TOPK2 = Codec("topk", 0.01, 2)
CODECS = [INT8, TOPK8, TOPK2, Codec("topk", 0.3, 2), Codec("topk", 1.0, 8)]


def _update(seed: int = 0) -> dict[str, torch.Tensor]:
    """A BatchNorm model's update: weights over several chunks, statistics, a counter.

    conv.weight comes first of the weights in canonical order (offset 0 of "w").
    """
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(2 * CHUNK + 100, generator=g) * 0.01,
        "fc.bias": torch.randn(7, generator=g) * 0.01,
        "bn.running_mean": torch.randn(16, generator=g) * 0.5,
        "bn.running_var": torch.randn(16, generator=g) * 5.0,
        "bn.num_batches_tracked": torch.tensor(100),
        "half.weight": (torch.randn(3, 5, generator=g) * 0.01).to(torch.bfloat16),
    }


def _weights_norm(m: dict[str, torch.Tensor]) -> float:
    keep = ("conv.weight", "fc.bias", "half.weight")
    return math.sqrt(sum(float((m[k].double() ** 2).sum()) for k in keep))


@pytest.mark.parametrize("c", CODECS, ids=lambda c: f"{c.kind}-{c.fraction}-{c.bits}")
def test_packed_tensors_have_the_declared_form_and_decode_to_the_layout(c: Codec) -> None:
    up = _update()
    lay = layout(up)
    packed, _ = encode(up, None, c)
    spec = packed_spec(lay, c)
    assert {k: (tuple(v.shape), v.dtype) for k, v in packed.items()} == spec
    assert canonical_size(packed) == spec_size(spec)
    # through canonical bytes, as a voter receives them
    dense = decode(parse_canonical(canonical_bytes(packed)), lay, c)
    assert {k: (v.shape, v.dtype) for k, v in dense.items()} == {
        k: (v.shape, v.dtype) for k, v in up.items()
    }
    assert torch.equal(dense["bn.num_batches_tracked"], up["bn.num_batches_tracked"])


def test_int8_keeps_each_value_within_half_a_step_of_its_chunk() -> None:
    up = _update()
    dense = decode(encode(up, None, INT8)[0], layout(up), INT8)
    for name in ("conv.weight", "bn.running_mean", "bn.running_var"):
        x, y = up[name].reshape(-1), dense[name].reshape(-1)
        for start in range(0, x.numel(), CHUNK):
            chunk = x[start : start + CHUNK]
            step = float(chunk.abs().max()) / 127
            assert float((chunk - y[start : start + CHUNK]).abs().max()) <= step / 2 * 1.0001


def test_topk_sends_the_largest_values_of_every_chunk() -> None:
    up = _update()
    packed = encode(up, None, TOPK8)[0]
    dense = decode(packed, layout(up), TOPK8)
    x, y = up["conv.weight"], dense["conv.weight"]
    for start, length in ((0, CHUNK), (CHUNK, CHUNK)):
        sent = y[start : start + length] != 0
        k = math.ceil(0.01 * length)
        assert int(sent.sum()) == k
        smallest_sent = float(x[start : start + length][sent].abs().min())
        largest_left = float(x[start : start + length][~sent].abs().max())
        assert smallest_sent >= largest_left
    # a chunk of at most WHOLE values (the last 100, the biases) goes whole, without
    # positions: each value within half an int8 step of its chunk
    for want, got in ((x[2 * CHUNK :], y[2 * CHUNK :]), (up["fc.bias"], dense["fc.bias"])):
        step = float(want.abs().max()) / 127
        assert float((want - got).abs().max()) <= step / 2 * 1.0001
    assert packed["w/i"].numel() == 2 * math.ceil(0.01 * CHUNK)


def test_decoding_is_the_float32_product_of_codes_and_scales() -> None:
    """The definition every voter computes: one float32 multiplication per value."""
    up = _update(3)
    packed, _ = encode(up, None, INT8)
    q = packed["w/q"].numpy().astype(np.float32)
    s = packed["w/s"].numpy()
    want = q[: 2 * CHUNK + 100] * np.repeat(s[:3], [CHUNK, CHUNK, 100])
    got = decode(packed, layout(up), INT8)["conv.weight"].numpy()
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("c", [INT8, TOPK8, TOPK2], ids=["int8", "topk8", "topk2"])
def test_error_feedback_keeps_what_was_not_sent(c: Codec) -> None:
    up = _update()
    lay = layout(up)
    first, left = encode(up, None, c)
    sent = decode(first, lay, c)
    x = up["conv.weight"].numpy()
    carried = sent["conv.weight"].numpy() + left["w"].numpy()[: x.size]
    np.testing.assert_allclose(carried, x, rtol=0, atol=1e-7)
    # the next update carries the residual: two rounds send more than one round twice
    second, _ = encode(up, left, c)
    both = sent["conv.weight"].numpy() + decode(second, lay, c)["conv.weight"].numpy()
    twice = 2 * sent["conv.weight"].numpy()
    assert np.linalg.norm(both - 2 * x) < np.linalg.norm(twice - 2 * x)


def test_a_residual_of_another_layout_is_not_used() -> None:
    up = _update()
    packed, _ = encode(up, None, TOPK8)
    other, _ = encode(up, {"w": torch.ones(5), "s": torch.ones(2)}, TOPK8)
    assert all(torch.equal(packed[k], other[k]) for k in packed)


@pytest.mark.parametrize("c", [INT8, TOPK8, TOPK2], ids=["int8", "topk8", "topk2"])
def test_the_cap_bounds_the_decoded_norm_and_keeps_the_rest(c: Codec) -> None:
    up = _update()
    lay = layout(up)
    full = _weights_norm(decode(encode(up, None, c)[0], lay, c))
    packed, left = encode(up, None, c, max_norm=full / 3)
    capped = decode(packed, lay, c)
    assert _weights_norm(capped) <= full / 3  # as the voters' norm check computes it
    assert _weights_norm(capped) >= full / 3 * 0.99
    kept = capped["conv.weight"].numpy() + left["w"].numpy()[: 2 * CHUNK + 100]
    np.testing.assert_allclose(kept, up["conv.weight"].numpy(), rtol=0, atol=1e-7)
    # the bfloat16 entry's residual is measured after the cast the voters make
    half = capped["half.weight"].float().reshape(-1).numpy() + left["w"].numpy()[-15:]
    np.testing.assert_allclose(half, up["half.weight"].float().reshape(-1).numpy(), atol=1e-7)


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped"])
@pytest.mark.parametrize("c", CODECS, ids=lambda c: f"{c.kind}-{c.fraction}-{c.bits}")
def test_the_residual_is_the_sum_minus_what_the_voters_decode_bit_for_bit(
    c: Codec, capped: bool
) -> None:
    # encode adds the update to the residual in place and, for top-k, takes what the
    # voters decode at the sent places only: the bits are those of the dense sums
    parts = {
        "w": ["conv.weight", "fc.bias", "half.weight"],
        "s": ["bn.running_mean", "bn.running_var"],
    }

    def flat(m: dict[str, torch.Tensor], part: str) -> np.ndarray:
        return np.concatenate([m[n].float().reshape(-1).numpy() for n in parts[part]])

    up = _update(1)
    lay = layout(up)
    left0 = encode(_update(0), None, c)[1]
    want_sum = {p: flat(up, p) + left0[p].numpy() for p in parts}
    cap = _weights_norm(decode(encode(up, None, c)[0], lay, c)) / 3 if capped else None
    packed, left = encode(up, left0, c, max_norm=cap)
    sent = decode(packed, lay, c)
    for p in parts:
        want = want_sum[p] - flat(sent, p)
        assert left[p].numpy().tobytes() == want.tobytes()
    if cap is not None:
        assert cap * 0.99 <= _weights_norm(sent) <= cap


@pytest.mark.parametrize("c", [INT8, TOPK8, TOPK2], ids=["int8", "topk8", "topk2"])
def test_a_sign_flip_of_the_packed_form_flips_the_decoded_update_exactly(c: Codec) -> None:
    up = _update()
    lay = layout(up)
    packed, _ = encode(up, None, c)
    flipped = decode(tamper_update(Behaviour.SIGN_FLIP, packed, 0), lay, c)
    honest = decode(packed, lay, c)
    for name, t in honest.items():
        if t.is_floating_point():
            assert torch.equal(flipped[name], -4.0 * t), name
        else:
            assert torch.equal(flipped[name], t)
    zero = decode(tamper_update(Behaviour.ZERO_UPDATE, packed, 0), lay, c)
    assert _weights_norm(zero) == 0.0


def _bad(c: Codec, change: str) -> dict[str, torch.Tensor]:
    packed, _ = encode(_update(), None, c)
    packed = {k: v.clone() for k, v in packed.items()}
    if change == "order":
        packed["w/i"][[0, 1]] = packed["w/i"][[1, 0]]
    elif change == "position":
        packed["w/i"][40] = CHUNK
    elif change == "tail_position":
        packed["w/i"][-1] = CHUNK  # the second chunk's last position
    elif change == "minus128":
        packed["w/q"][0] = -128
    elif change == "padding":
        packed["w/q"][-1] |= 0xC0
    elif change == "nan":
        packed["w/s"][0] = float("nan")
    elif change == "dtype":
        packed["w/q"] = packed["w/q"].to(torch.int16)
    elif change == "missing":
        del packed["s/s"]
    elif change == "extra":
        packed["x/y"] = torch.zeros(1)
    return packed


@pytest.mark.parametrize(
    ("c", "change"),
    [
        (TOPK8, "order"),
        (TOPK8, "position"),
        (TOPK2, "tail_position"),
        (TOPK8, "minus128"),
        (INT8, "minus128"),
        (Codec("topk", 0.02, 2), "padding"),  # 286 codes: two unused in the last byte
        (INT8, "nan"),
        (TOPK2, "nan"),
        (INT8, "dtype"),
        (INT8, "missing"),
        (TOPK8, "extra"),
    ],
)
def test_malformed_packed_tensors_are_refused(c: Codec, change: str) -> None:
    with pytest.raises(CompressionError):
        decode(_bad(c, change), layout(_update()), c)
    if c.kind == "topk":  # a voter reading it packed refuses it as well
        with pytest.raises(CompressionError):
            open_packed(_bad(c, change), layout_of(_update()), c)


@pytest.mark.parametrize("c", [INT8, TOPK8, TOPK2], ids=["int8", "topk8", "topk2"])
def test_values_that_overflow_their_dtype_are_refused(c: Codec) -> None:
    """A scale that is finite can still decode to infinity: float16 at once, float32
    near its range. Such an update must not reach the aggregation."""
    small = {"h.weight": torch.full((8,), 0.01, dtype=torch.float16), "w": torch.ones(8)}
    packed, _ = encode(small, None, c)
    big = dict(packed)
    big["w/s"] = packed["w/s"].clone()
    big["w/s"][0] = 3e38  # the chunk of "h.weight" (first in canonical order)
    with pytest.raises(CompressionError):
        decode(big, layout(small), c)
    if c.kind == "topk":
        with pytest.raises(CompressionError):
            open_packed(big, layout_of(small), c)
        open_packed(packed, layout_of(small), c)
    decode(packed, layout(small), c)  # the honest one decodes


def test_a_part_whose_entries_are_all_empty_decodes() -> None:
    up = {"a": torch.ones(3), "bn.running_mean": torch.zeros(0)}
    for c in (INT8, TOPK2):
        dense = decode(encode(up, None, c)[0], layout(up), c)
        assert dense["bn.running_mean"].shape == (0,) and dense["a"].shape == (3,)


def test_the_top_k_part_is_far_smaller_than_the_dense_update() -> None:
    """digits-cnn's shapes: int8 about 4x, top 1% at 2 bits more than 50x (canonical bytes)."""
    from flocknode.learning.builtin import digits_cnn

    model = digits_cnn().state_dict()
    lay = layout(model)
    dense = canonical_size(model)
    assert dense / spec_size(packed_spec(lay, INT8)) > 3.9
    assert dense / spec_size(packed_spec(lay, TOPK2)) > 50


def test_aggregating_decoded_updates_is_reproducible() -> None:
    g = {k: torch.zeros_like(v) for k, v in _update().items()}
    ups = [decode(encode(_update(i), None, TOPK2)[0], layout(g), TOPK2) for i in range(5)]
    a = aggregate(g, ups, AggregationSettings(rule="median"))
    b = aggregate(g, ups, AggregationSettings(rule="median"))
    assert all(torch.equal(a.model[k], b.model[k]) for k in g)


def test_compression_settings_are_checked_and_left_out_when_neutral() -> None:
    assert codec(AggregationSettings()) is None
    assert "compression" not in AggregationSettings().to_dict()
    s = AggregationSettings(compression="topk", topk_fraction=0.02, topk_bits=2)
    assert codec(s) == Codec("topk", 0.02, 2)
    assert s.to_dict()["compression"] == "topk" and s.to_dict()["topk_bits"] == 2
    assert "topk_fraction" not in AggregationSettings(compression="topk").to_dict()
    for bad in (
        {"compression": "zip"},
        {"compression": "topk", "topk_fraction": 0.0},
        {"compression": "topk", "topk_fraction": 1.5},
        {"compression": "topk", "topk_bits": 4},
        {"compression": "int8", "topk_bits": 2},
        {"topk_fraction": 0.5},
    ):
        with pytest.raises(SettingsError):
            AggregationSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_proposer_with_a_value_that_is_not_finite_still_seals_what_voters_refuse(
    bad: float,
) -> None:
    # training that diverged: the cap's norm is not finite, the scales follow, and
    # the voters leave the update out as they do a dense one with such a value
    up = {"a.weight": torch.full((5000,), 1e-3)}
    up["a.weight"][7] = bad
    packed, _ = encode(up, None, INT8, max_norm=0.01)
    with pytest.raises(CompressionError, match="not finite"):
        decode(packed, layout(up), INT8)


TOPKS = [TOPK8, TOPK2, Codec("topk", 0.3, 2), Codec("topk", 1.0, 8)]


def _shuffled(m: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same entries in another insertion order (the aggregation's layout follows it)."""
    names = list(m)
    random.Random(seed).shuffle(names)
    return {n: m[n] for n in names}


@pytest.mark.parametrize("c", TOPKS, ids=lambda c: f"{c.kind}-{c.fraction}-{c.bits}")
def test_a_packed_top_k_update_reads_as_its_dense_decoding(c: Codec) -> None:
    # a voter reads a top-k update block by block from its sent values: every block,
    # in any entry order, is what the dense decoding gives
    up = _update(3)
    up["h16.weight"] = (torch.randn(CHUNK + 3) * 0.01).to(torch.float16)
    up["empty.weight"] = torch.zeros(0)
    packed, _ = encode(up, None, c)
    lay = layout_of(_shuffled(up, 1))
    dense = ModelFlat(_shuffled(decode(packed, layout(up), c), 2), lay, "dense")
    flat = open_packed(packed, lay, c)
    rng = random.Random(0)
    for kind in (WEIGHTS, STATS):
        n = lay.sizes[kind]
        cuts = sorted({0, n, *(rng.randrange(n + 1) for _ in range(20))})
        for a, b in itertools.pairwise(cuts):
            assert flat.read(kind, a, b).tobytes() == dense.read(kind, a, b).tobytes()
        assert flat.read(kind, 0, n).tobytes() == dense.read(kind, 0, n).tobytes()
    assert [x.tolist() for x in flat.integers()] == [x.tolist() for x in dense.integers()]


@pytest.mark.parametrize("rule", ["fedavg", "median", "multi_krum", "centered_clip"])
def test_aggregating_packed_top_k_updates_gives_the_dense_bits(rule: str) -> None:
    base = {k: torch.zeros_like(v) for k, v in _update().items()}
    lay = layout_of(base)
    packed = [encode(_update(i), None, TOPK2)[0] for i in range(5)]
    settings = AggregationSettings(rule=rule, krum_f=1)
    dense = aggregate(base, [decode(p, layout(base), TOPK2) for p in packed], settings)
    read = aggregate(base, [open_packed(p, lay, TOPK2) for p in packed], settings)
    assert read.norms == dense.norms and read.rejected == dense.rejected
    for name, t in dense.model.items():
        assert torch.equal(read.model[name], t), name


@pytest.mark.parametrize("c", TOPKS, ids=lambda c: f"{c.kind}-{c.fraction}-{c.bits}")
def test_a_packed_top_k_update_applied_alone_gives_the_dense_bits(c: Codec) -> None:
    # a voter's "this update alone" model from the sent places only: the same bits as
    # the dense sum, -0.0 weights of the global included (they come out as +0.0)
    up = _update(4)
    up["h16.weight"] = (torch.randn(CHUNK + 3) * 0.01).to(torch.float16)
    base = {k: (v * 50).to(v.dtype) for k, v in _update(5).items()}
    base["h16.weight"] = torch.randn(CHUNK + 3).to(torch.float16)
    base["conv.weight"][:300] = -0.0
    base["half.weight"][0, :2] = -0.0
    base = _shuffled(base, 3)
    packed, _ = encode(up, None, c)
    dense = apply_update(base, decode(packed, layout(up), c))
    read = apply_update(base, open_packed(packed, layout_of(base), c))
    assert list(read) == list(dense)
    for name, t in dense.items():
        assert t.dtype == read[name].dtype and t.shape == read[name].shape, name
        assert t.view(-1).view(torch.uint8).equal(read[name].view(-1).view(torch.uint8)), name


@pytest.mark.parametrize("c", [INT8, TOPK2], ids=["int8", "topk2"])
def test_a_decayed_residual_is_added_times_the_decay(c: Codec) -> None:
    _, left = encode(_update(), None, c)  # encode consumes a residual: copies below
    want, want_rest = encode(_update(1), {k: v * 0.5 for k, v in left.items()}, c)
    packed, rest = encode(_update(1), {k: v.clone() for k, v in left.items()}, c, decay=0.5)
    assert all(torch.equal(packed[k], want[k]) for k in want)
    assert all(torch.equal(rest[k], want_rest[k]) for k in want_rest)
    # decay 1 is plain error feedback, bit for bit
    same, _ = encode(_update(1), {k: v.clone() for k, v in left.items()}, c, decay=1.0)
    plain, _ = encode(_update(1), {k: v.clone() for k, v in left.items()}, c)
    assert all(torch.equal(same[k], plain[k]) for k in plain)
