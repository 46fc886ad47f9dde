"""``aggregate``: the norm check, then the task's rule, then new = old + outer_lr x aggregate.

Plain data in, plain data out, no I/O: a model or an update is an ordered
mapping ``name -> tensor``; the updates come as a list in proposer-seat order
with their seat numbers. An update holds the global model's names, shapes and
dtypes. Every floating tensor (float32, float16, bfloat16) is read in the
global model's name order as one float64 vector (each of them -> float64 is
exact), the norm check and the rule run on those vectors (see ``rules``), and
each entry of the new global is rounded once to its own dtype (float32 and
float16 straight from float64, round to nearest even; bfloat16 through float32,
two such roundings, the same on every machine).

Memory: the vectors are never whole. An input is anything with ``read(kind,
start, stop)`` (``Flat``: a model in memory, or ``flocknode.store.spill``'s
update on disk), and every pass works on ``BLOCK`` coordinates of every
update at a time. Each rule but multi_krum and centered_clip is
coordinate-wise; their whole-vector sums (norms, distances) are exact
(``numeric``), so a sum fed block by block has the same bits as one over the
whole vector. Beyond its inputs, ``aggregate`` holds the new model (its own
dtypes), a few blocks of every update in float64, and centered_clip's centre
(``Scratch``: in memory, or on disk from the caller).

Two kinds of entries are state rather than trained weights, and take no part
in the norm check or the rule (neither is a step of the optimizer: BatchNorm's
running statistics move with each proposer's data, up to 1.8x the step scale
on the non-IID digits shards, and would get honest updates rejected):

- running statistics, the floating entries whose last dotted name part is
  ``running_mean`` or ``running_var`` (torch's BatchNorm and InstanceNorm
  buffers): the global value plus the coordinate-wise median
  (``rules.median``) of the deltas of the updates that entered the rule;
- integer entries (int64/int32, e.g. BatchNorm's ``num_batches_tracked``): the
  global value plus the elementwise lower median of those deltas (saturating
  at the dtype's range).

So a minority of updates cannot move either outside the honest deltas.

The norm check (docs/protocol.md, step 5) first sets aside "no work": an
update whose L2 norm is 0, or below ``norm_floor`` x the task's step scale.
Such an update takes no part in the rule or the median and is not paid (voters
flag it), but it is not misconduct: an honest proposer whose shard the global
model already fits trains to a near-zero step (its softmax saturates, the
gradients vanish and Adam's steps with them: 0.003 of the step scale on the
digits demo past round 60, bench/accuracy.py). It then rejects, slashably:

1. with a step scale, "out of band": a norm above ``norm_ceiling`` x the step
   scale. That is the whole check: no reference that a proposer can move;
2. without one, a norm above ``norm_factor`` x the *lower* median of the
   norms left, ``sorted(norms)[(n - 1) // 2]`` (the convention of the median
   of voter scores in step 8). With ``norm_factor >= 1`` this step never
   rejects every survivor.

A median step next to the band would be a lever for cheaters: an update just
above the floor makes the lower median of two survivors small, and honest
updates more than ``norm_factor`` times larger are rejected and slashed (two
honest updates did it on their own: 0.134 and 0.599 of the scale, with a
third proposer's "no work" set aside, bench/accuracy.py round 75).

The step scale (``step_scale``) is ``learning_rate x sqrt(parameters x
local_steps)``: with Adam each coordinate moves by about ``learning_rate`` a
step, so an honest update of ``local_steps`` steps has a norm of that order
whatever the data (the digits demo: 0.41 to 1.07 of it over 15 rounds,
bench/accuracy.py). It comes from the task settings and the model's shapes
only, so no proposer can move it: a zero update cannot drag the median to 0
and rejected honest work (a median of [0, h] is 0), and proposers holding most
of a round's seats cannot make a scaled update the median and pass (a median
of [h, -4h, -4h] is a cheater's). Without a step scale (SGD, or training by
epochs) only exact zeros are "no work" and step 2 rejects, a reference the
proposers set: the task's creator picks a setup with a scale or accepts that.

multi_krum's ``krum_f`` counts Byzantine updates among the *included* ones,
and the updates the norm check rejects count against it: the rule runs on
the survivors with ``f' = max(0, krum_f - rejected)`` (see ``krum_budget``);
"no work" updates do not count (they may be honest).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from flocknode.aggregation import rules
from flocknode.aggregation.numeric import F64, SORT_BLOCK, lower_median, square_sum
from flocknode.aggregation.settings import AggregationSettings

Model = Mapping[str, torch.Tensor]
Ints = list[npt.NDArray[np.int64]]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INT_DTYPES = (torch.int64, torch.int32)
STAT_NAMES = ("running_mean", "running_var")
WEIGHTS, STATS = "weights", "stats"
# Coordinates of every update a pass holds at once (float64): 512 KB an update.
# Results do not depend on it (see the module doc). bench/aggregate.py, 100 MB,
# 5 updates: at 1M coordinates a pass added 1.4-1.9 models and was slower (fedavg
# from disk 2.4 s against 1.2 s; the blocks no longer fit in cache).
BLOCK = SORT_BLOCK


class AggregationInputError(ValueError):
    """Updates that cannot be aggregated: names the seat and tensor at fault."""


class NonFiniteUpdateError(AggregationInputError):
    """An update (or the global model) holds NaN or infinity."""


@dataclass(frozen=True)
class AggregationResult:
    """What a voter needs from step 5.

    ``model`` is the new global model (float32, the global's name order).
    ``included`` are the input seats, ``rejected`` those the norm check threw
    out (slashable), ``used`` those that entered the rule, ``selected`` the
    seats multi-Krum averaged (``None`` for other rules; the used seats that
    are not selected are *not* rejected), ``no_work`` those set aside below
    the floor (not slashable, not paid). ``norms`` holds each included
    update's L2 norm in ``included`` order and ``median_norm`` the lower
    median the limit was measured against: of the norms inside the band
    (``None`` with none).
    """

    model: dict[str, torch.Tensor]
    rule: str
    included: tuple[int, ...]
    rejected: tuple[int, ...]
    used: tuple[int, ...]
    selected: tuple[int, ...] | None
    no_work: tuple[int, ...]
    norms: tuple[float, ...]
    median_norm: float | None


@dataclass(frozen=True)
class Span:
    """One floating entry's place in its kind's vector."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    size: int


class Layout:
    """The global model's entries: names, shapes, dtypes, and where each floating
    entry sits in the weights or the running-statistics vector."""

    def __init__(self, entries: Sequence[tuple[str, tuple[int, ...], torch.dtype]]) -> None:
        self.entries = list(entries)
        self.spans: dict[str, list[Span]] = {WEIGHTS: [], STATS: []}
        sizes = {WEIGHTS: 0, STATS: 0}
        for name, shape, dtype in self.entries:
            kind = entry_kind(name, dtype)
            if kind == "int":
                continue
            n = math.prod(shape)
            self.spans[kind].append(Span(name, shape, dtype, sizes[kind], n))
            sizes[kind] += n
        self.sizes = sizes

    def pieces(self, kind: str, start: int, stop: int) -> Iterator[tuple[Span, int, int]]:
        """The entries coordinates ``start:stop`` of ``kind`` cover, with the covered
        range inside each entry (flattened), in order."""
        for span in self.spans[kind]:
            a, b = max(start, span.offset), min(stop, span.offset + span.size)
            if a < b:
                yield span, a - span.offset, b - span.offset

    def name_at(self, kind: str, index: int) -> str:
        for span in self.spans[kind]:
            if span.offset <= index < span.offset + span.size:
                return span.name
        raise IndexError(index)


class Flat(Protocol):
    """A model or an update as the aggregation reads it, checked against the layout.

    An input whose weights are mostly zero (a packed top-k update) may also have
    ``sparse_weights(name) -> (places, values)``: a weight entry's flat places
    that may be other than zero, increasing, and their finite float64 values.
    The norm and ``apply_update`` then work on those alone (``_sparse_of``).
    """

    def read(self, kind: str, start: int, stop: int) -> F64:
        """Coordinates ``start:stop`` of the weights or running statistics, as float64."""
        ...

    def integers(self) -> Ints:
        """The integer entries, in layout order, as int64 arrays."""
        ...


class Scratch(Protocol):
    """A float64 vector the caller keeps where it likes (centered_clip's centre)."""

    def read(self, start: int, stop: int) -> F64: ...
    def write(self, start: int, values: F64) -> None: ...


class MemoryScratch:
    def __init__(self, size: int) -> None:
        self._v = np.zeros(size, dtype=np.float64)

    def read(self, start: int, stop: int) -> F64:
        return self._v[start:stop].copy()

    def write(self, start: int, values: F64) -> None:
        self._v[start : start + values.shape[0]] = values


class ModelFlat:
    """A ``Flat`` over tensors in memory (checked: names, shapes, dtypes)."""

    def __init__(self, model: Model, layout: Layout, who: str) -> None:
        check_model(model, layout, who)
        self._layout = layout
        self._flat = {name: model[name].detach().cpu().reshape(-1) for name, _, _ in layout.entries}

    def read(self, kind: str, start: int, stop: int) -> F64:
        parts: list[F64] = []
        for span, a, b in self._layout.pieces(kind, start, stop):
            parts.append(_widened(self._flat[span.name][a:b]))
        if len(parts) == 1:  # a block inside one entry: no second copy
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0)

    def integers(self) -> Ints:
        return [
            self._flat[name].numpy().astype(np.int64)
            for name, _, dtype in self._layout.entries
            if dtype in INT_DTYPES
        ]


def step_scale(
    optimizer: str, learning_rate: float, local_steps: int, parameters: int
) -> float | None:
    """The norm an honest update is measured against: ``lr x sqrt(parameters x steps)``.

    ``None`` unless the task trains with Adam for a fixed number of steps
    (SGD's step follows the gradient's size and epochs follow the shard's).
    """
    if optimizer != "adam" or local_steps <= 0 or parameters <= 0:
        return None
    return float(learning_rate) * math.sqrt(float(parameters) * float(local_steps))


def norm_check(
    norms: Sequence[float], norm_factor: float, band: tuple[float, float] | None = None
) -> list[int]:
    """Positions the norm check rejects, slashably (see the module doc), in increasing order.

    ``band`` is ``(low, high)`` in norm units (``norm_band``). "No work"
    positions (``no_work``) are neither rejected nor counted in the median.
    """
    idle = set(no_work(norms, band))
    rest = [i for i in range(len(norms)) if i not in idle]
    if band is not None:
        return [i for i in rest if norms[i] > band[1]]
    if not rest:
        return []
    limit = norm_factor * lower_median([norms[i] for i in rest])
    return [i for i in rest if norms[i] > limit]


def no_work(norms: Sequence[float], band: tuple[float, float] | None = None) -> list[int]:
    """Positions whose norm is 0 or below the band's floor, in increasing order."""
    low = band[0] if band is not None else 0.0
    return [i for i, n in enumerate(norms) if n == 0.0 or n < low]


def _in_band(norms: Sequence[float], band: tuple[float, float] | None) -> list[int]:
    low, high = band if band is not None else (0.0, math.inf)
    return [i for i, n in enumerate(norms) if n != 0.0 and low <= n <= high]


def norm_band(settings: AggregationSettings, scale: float | None) -> tuple[float, float] | None:
    """``(norm_floor x scale, norm_ceiling x scale)``, or ``None`` without a scale."""
    if scale is None:
        return None
    return settings.norm_floor * scale, settings.norm_ceiling * scale


def aggregate(
    global_model: Model,
    updates: Sequence[Model | Flat],
    settings: AggregationSettings,
    seats: Sequence[int] | None = None,
    scale: float | None = None,
    scratch: Callable[[int], Scratch] = MemoryScratch,
) -> AggregationResult:
    """Apply the norm check and ``settings.rule`` to ``updates`` (in seat order).

    ``seats`` are the proposer seat numbers of ``updates`` (strictly
    increasing; default ``0 .. len - 1``); ``scale`` is the task's
    ``step_scale`` (``None``: no band, see the module doc); ``scratch(size)``
    gives centered_clip a float64 vector of ``size``. An update is a mapping
    name -> tensor or a ``Flat`` already checked against the global model's
    layout. Raises ``AggregationInputError`` for mismatched names, shapes or
    dtypes and ``NonFiniteUpdateError`` for NaN or infinite values, before any
    arithmetic. No updates, or none left after the norm check: the model stays
    (returned as a copy).
    """
    seat_list = list(range(len(updates))) if seats is None else [int(s) for s in seats]
    if len(seat_list) != len(updates):
        raise AggregationInputError(f"{len(updates)} updates but {len(seat_list)} seats")
    if any(s < 0 for s in seat_list) or any(b <= a for a, b in itertools.pairwise(seat_list)):
        raise AggregationInputError(f"seats must be increasing and >= 0: {seat_list}")

    layout = layout_of(global_model)
    base = ModelFlat(global_model, layout, "global model")
    flats = [_as_flat(u, layout, f"seat {s}") for s, u in zip(seat_list, updates, strict=True)]
    _check_finite(base, layout, "global model", WEIGHTS)
    _check_finite(base, layout, "global model", STATS)
    norms = [_norm(f, layout, f"seat {s}") for s, f in zip(seat_list, flats, strict=True)]
    for s, f in zip(seat_list, flats, strict=True):
        _check_finite(f, layout, f"seat {s}", STATS)

    band = norm_band(settings, scale)
    bad = set(norm_check(norms, settings.norm_factor, band))
    idle = set(no_work(norms, band))
    inside = [norms[i] for i in _in_band(norms, band)]
    rejected = tuple(seat_list[i] for i in sorted(bad))
    keep = [i for i in range(len(flats)) if i not in bad and i not in idle]
    used = tuple(seat_list[i] for i in keep)
    kept = [flats[i] for i in keep]

    selected: tuple[int, ...] | None = None
    if settings.rule == "multi_krum":
        selected = ()
    delta = _rule(kept, layout, settings, len(rejected), scratch) if kept else None
    if delta is not None and delta[1] is not None:
        selected = tuple(used[i] for i in delta[1])

    def new_weights(start: int, stop: int) -> F64:
        old = base.read(WEIGHTS, start, stop)
        if delta is None:
            return old
        return old + settings.outer_lr * delta[0](start, stop)  # x 1.0 changes no bit

    def new_stats(start: int, stop: int) -> F64:
        old = base.read(STATS, start, stop)
        if not kept:
            return old
        return old + rules.median([f.read(STATS, start, stop) for f in kept])

    ints = _integer_step(base.integers(), [f.integers() for f in kept])
    return AggregationResult(
        model=_build(layout, new_weights, new_stats, ints),
        rule=settings.rule,
        included=tuple(seat_list),
        rejected=rejected,
        used=used,
        selected=selected,
        no_work=tuple(seat_list[i] for i in sorted(idle)),
        norms=tuple(norms),
        median_norm=lower_median(inside) if inside else None,
    )


def apply_update(global_model: Model, update: Model | Flat) -> dict[str, torch.Tensor]:
    """``global + update`` with the same float64-then-float32 arithmetic as ``aggregate``.

    For a voter's "this update alone" evaluation (docs/protocol.md, step 6).
    """
    layout = layout_of(global_model)
    base = ModelFlat(global_model, layout, "global model")
    u = _as_flat(update, layout, "update")
    sparse = _sparse_of(u)
    for kind in (WEIGHTS, STATS):
        _check_finite(base, layout, "global model", kind)
        if sparse is None or kind == STATS:
            _check_finite(u, layout, "update", kind)

    def plus(kind: str) -> Callable[[int, int], F64]:
        return lambda start, stop: base.read(kind, start, stop) + u.read(kind, start, stop)

    ints = _integer_step(base.integers(), [u.integers()])
    if sparse is None:
        return _build(layout, plus(WEIGHTS), plus(STATS), ints)
    # a packed top-k update: ``b + 0.0`` rounds back to ``b`` (``-0.0`` to ``+0.0``),
    # so only the places it sent need the arithmetic
    out = _build(layout, _zeros, plus(STATS), ints, kinds=(STATS,))
    for span in layout.spans[WEIGHTS]:
        t = global_model[span.name].detach().cpu().clone().contiguous()
        flat = t.view(-1)
        flat[flat == 0] = 0
        places, values = sparse(span.name)
        if not np.isfinite(values).all():
            raise NonFiniteUpdateError(f"update: tensor {span.name!r} holds NaN or infinity")
        at = torch.from_numpy(places)
        flat[at] = _rounded(_widened(flat[at]) + values, span)
        out[span.name] = t
    return {name: out[name] for name, _, _ in layout.entries}


def krum_budget(krum_f: int, rejected: int) -> int:
    """multi_krum's ``f`` on the norm check's survivors: ``max(0, krum_f - rejected)``.

    ``krum_f`` is the assumed number of Byzantine updates among the *included*
    ones. The norm check runs first and every update it rejects is treated as
    misconduct (slashed, docs/protocol.md, step 5), so it is counted as one of the
    ``krum_f``: at most ``krum_f - rejected`` Byzantine updates can be left
    among the survivors ("no work" updates are not counted: they may be
    honest). The count is sound whenever the norm check rejects only
    Byzantine updates, which holds while honest norms stay below the band's
    ceiling (with a step scale) or, without one, while the Byzantine updates
    are fewer than half of the non-zero ones and the honest norms lie within
    ``norm_factor`` of each other (then the lower median norm is at least the
    smallest honest norm, so no honest update exceeds the limit).

    Without it, multi_krum would leave out ``krum_f`` more *honest* updates
    every round in which the norm check had already removed the attackers:
    with 5 proposers of which 2 sign-flip (x4, rejected) and ``krum_f = 1`` it
    would average 2 of the 3 honest updates instead of all 3, a third of the
    round's honest data dropped; on the non-IID digits demo that costs about
    0.017 of final accuracy (bench/accuracy.py, 3 of 10 nodes sign-flipping,
    20 seeds: mean round-10 accuracy 0.927 against 0.944 for fedavg).

    What this gives up: an attacker with more than ``krum_f`` updates can
    spend some on rejection (and slashing) to lower ``f'`` for the rest. That
    attacker already exceeds the ``krum_f`` the rule is configured for, which
    multi-Krum's guarantee does not cover in any case.
    """
    return max(0, krum_f - rejected)


Blocks = Callable[[int, int], F64]


def _rule(
    kept: list[Flat],
    layout: Layout,
    s: AggregationSettings,
    rejected: int,
    scratch: Callable[[int], Scratch],
) -> tuple[Blocks, list[int] | None]:
    """The aggregate update as a block reader, and multi_krum's chosen positions."""

    def each(start: int, stop: int) -> list[F64]:
        return [f.read(WEIGHTS, start, stop) for f in kept]

    if s.rule == "fedavg":
        return (lambda a, b: rules.fedavg(each(a, b))), None
    if s.rule == "median":
        return (lambda a, b: rules.median(each(a, b))), None
    if s.rule == "trimmed_mean":
        return (lambda a, b: rules.trimmed_mean(each(a, b), s.trim_ratio)), None
    size = layout.sizes[WEIGHTS]
    if s.rule == "multi_krum":
        n = len(kept)
        dist = [[0.0] * n for _ in range(n)]
        for i, j in itertools.combinations(range(n), 2):
            diffs = (
                kept[i].read(WEIGHTS, a, b) - kept[j].read(WEIGHTS, a, b) for a, b in _blocks(size)
            )
            dist[i][j] = dist[j][i] = square_sum(diffs)
        chosen = rules.krum_select(dist, krum_budget(s.krum_f, rejected), s.krum_m)
        picked = [kept[i] for i in chosen]
        return (lambda a, b: rules.fedavg([f.read(WEIGHTS, a, b) for f in picked])), chosen
    if s.rule == "centered_clip":
        centre = scratch(size)
        for a, b in _blocks(size):
            centre.write(a, rules.median(each(a, b)))
        for _ in range(s.clip_iterations):
            norms = [
                math.sqrt(
                    square_sum(f.read(WEIGHTS, a, b) - centre.read(a, b) for a, b in _blocks(size))
                )
                for f in kept
            ]
            for a, b in _blocks(size):
                centre.write(a, rules.clip_step(each(a, b), centre.read(a, b), norms, s.clip_tau))
        return centre.read, None
    raise AssertionError(f"unhandled rule {s.rule!r}")  # settings validated the name


def _blocks(size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, size, BLOCK):
        yield start, min(start + BLOCK, size)


def entry_kind(name: str, dtype: torch.dtype) -> str:
    """``"int"``, ``STATS`` (running statistics) or ``WEIGHTS`` (see the module doc)."""
    if dtype in INT_DTYPES:
        return "int"
    return STATS if name.rsplit(".", 1)[-1] in STAT_NAMES else WEIGHTS


def layout_of(model: Model) -> Layout:
    """The global model's layout; AggregationInputError for an empty model or another dtype."""
    if not model:
        raise AggregationInputError("global model has no tensors")
    entries = []
    for name, t in model.items():
        if not isinstance(t, torch.Tensor) or t.dtype not in FLOAT_DTYPES + INT_DTYPES:
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise AggregationInputError(f"global model: tensor {name!r} is {kind}")
        entries.append((name, tuple(t.shape), t.dtype))
    return Layout(entries)


def check_model(model: Model, layout: Layout, who: str) -> None:
    """AggregationInputError unless ``model`` has exactly the layout's names, shapes, dtypes."""
    if not isinstance(model, Mapping):
        raise AggregationInputError(f"{who}: expected a mapping name -> tensor")
    names = {name for name, _, _ in layout.entries}
    extra = sorted(set(model) - names)
    if extra:
        raise AggregationInputError(f"{who}: unexpected tensor {extra[0]!r}")
    for name, shape, dtype in layout.entries:
        t = model.get(name)
        if t is None:
            raise AggregationInputError(f"{who}: missing tensor {name!r}")
        if not isinstance(t, torch.Tensor) or t.dtype != dtype:
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise AggregationInputError(f"{who}: tensor {name!r} is {kind}, expected {dtype}")
        if tuple(t.shape) != shape:
            raise AggregationInputError(
                f"{who}: tensor {name!r} has shape {tuple(t.shape)}, expected {shape}"
            )


def _as_flat(u: Model | Flat, layout: Layout, who: str) -> Flat:
    if isinstance(u, Mapping):
        return ModelFlat(u, layout, who)
    if not hasattr(u, "read"):
        raise AggregationInputError(f"{who}: expected a mapping name -> tensor")
    return u


def _finite(v: F64, layout: Layout, kind: str, start: int, who: str) -> None:
    if not np.isfinite(v).all():
        name = layout.name_at(kind, start + int(np.argmin(np.isfinite(v))))
        raise NonFiniteUpdateError(f"{who}: tensor {name!r} holds NaN or infinity")


def _sparse_of(f: Flat) -> Callable[[str], tuple[npt.NDArray[np.int64], F64]] | None:
    """The input's ``sparse_weights`` (``Flat``), or None for a dense input."""
    sparse: Callable[[str], tuple[npt.NDArray[np.int64], F64]] | None = getattr(
        f, "sparse_weights", None
    )
    return sparse


def _check_finite(f: Flat, layout: Layout, who: str, kind: str) -> None:
    for a, b in _blocks(layout.sizes[kind]):
        _finite(f.read(kind, a, b), layout, kind, a, who)


def _norm(f: Flat, layout: Layout, who: str) -> float:
    """The weights' L2 norm, checking every value is finite.

    A sparse input (``Flat``) gives its values that may be other than zero:
    the zeros add exactly nothing to the exact sum, so the norm has the same
    bits from those alone."""
    sparse = _sparse_of(f)
    if sparse is not None:
        spans = layout.spans[WEIGHTS]
        v = np.concatenate([np.zeros(0), *(sparse(span.name)[1] for span in spans)])
        if not np.isfinite(v).all():
            raise NonFiniteUpdateError(f"{who}: a weight is NaN or infinite")
        return math.sqrt(square_sum([v]))

    def values() -> Iterator[F64]:
        for a, b in _blocks(layout.sizes[WEIGHTS]):
            v = f.read(WEIGHTS, a, b)
            _finite(v, layout, WEIGHTS, a, who)
            yield v

    return math.sqrt(square_sum(values()))


def _integer_step(base: Ints, deltas: list[Ints]) -> Ints:
    """Each integer entry plus the lower median of the deltas (unchanged without any)."""
    if not deltas:
        return base
    out = []
    for i, b in enumerate(base):
        stacked = np.sort(np.stack([d[i] for d in deltas]), axis=0)
        med = stacked[(len(deltas) - 1) // 2]
        with np.errstate(over="ignore"):
            total = b + med
        # two's-complement overflow: both operands' signs differ from the result's
        overflow = ((b ^ total) & (med ^ total)) < 0
        limit = np.where(med > 0, np.iinfo(np.int64).max, np.iinfo(np.int64).min)
        out.append(np.where(overflow, limit, total))
    return out


def _rounded(values: F64, span: Span) -> torch.Tensor:
    """``values`` in the entry's dtype: one round-to-nearest-even per value (bfloat16
    through float32); NonFiniteUpdateError if one overflows."""
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float16 if span.dtype == torch.float16 else np.float32)
    t = torch.from_numpy(rounded)
    if span.dtype == torch.bfloat16:
        t = t.to(torch.bfloat16)
    if not bool(torch.isfinite(t).all()):
        # Only reachable when at least half the updates are near the dtype's range.
        raise NonFiniteUpdateError(f"the aggregated model overflows {span.dtype} in {span.name!r}")
    return t


def _widened(t: torch.Tensor) -> F64:
    """A float entry's values as float64 (exact; bfloat16 through float32)."""
    if t.dtype == torch.bfloat16:
        t = t.to(torch.float32)
    out: F64 = t.numpy().astype(np.float64)
    return out


def _zeros(start: int, stop: int) -> F64:
    return np.zeros(stop - start)


def _build(
    layout: Layout,
    weights: Blocks,
    stats: Blocks,
    ints: Ints,
    kinds: tuple[str, ...] = (WEIGHTS, STATS),
) -> dict[str, torch.Tensor]:
    """The new model: every entry in its own dtype, filled block by block (the
    entries of ``kinds``; the others are left empty)."""
    out = {name: torch.empty(shape, dtype=dtype) for name, shape, dtype in layout.entries}
    for kind, values in ((WEIGHTS, weights), (STATS, stats)):
        if kind not in kinds:
            continue
        for start, stop in _blocks(layout.sizes[kind]):
            block = values(start, stop)
            for span, a, b in layout.pieces(kind, start, stop):
                part = block[span.offset + a - start : span.offset + b - start]
                out[span.name].view(-1)[a:b] = _rounded(part, span)
    counters = iter(ints)
    for name, shape, dtype in layout.entries:
        if dtype in INT_DTYPES:
            info = torch.iinfo(dtype)
            clipped = np.clip(next(counters), info.min, info.max)
            out[name] = torch.from_numpy(clipped.reshape(shape).copy()).to(dtype)
    return {name: out[name] for name, _, _ in layout.entries}
