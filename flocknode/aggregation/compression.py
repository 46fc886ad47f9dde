"""Compressed updates: the packed tensors a proposer seals, the dense update voters decode.

docs/protocol.md, "Compressed updates". Pure data in and out, no I/O. An
update's entries split as in ``core``: the *weights* (floating entries that
are not running statistics), the *statistics* (``running_mean``,
``running_var``) and the *counters* (integer entries). Weights and statistics
are each flattened, in the canonical name order (sorted UTF-8 bytes), into one
float32 vector; each entry is cut on its own into chunks of ``CHUNK`` values
(its last chunk shorter), so one scale never spans two entries.

Packed tensors (their names never collide with a model's: each has a prefix):

- ``int8``: ``w/q`` int8 ``[P]`` and ``w/s`` float32 ``[chunks]``: value =
  ``q x s`` of its chunk, with ``s = max|x| / 127`` and ``q`` in -127..127;
- ``topk``: per chunk of length ``L`` the ``k = min(L, ceil(topk_fraction x L))``
  values of largest magnitude, all ``k = L`` of a chunk of at most ``WHOLE``
  (256): ``w/i`` int16 (the positions in the chunk, strictly increasing, of
  each chunk with ``k < L`` in turn; a chunk sent whole sends none), and for
  ``K`` values in all, for ``topk_bits`` 8 ``w/q`` int8 ``[K]`` and
  ``w/s`` float32 ``[chunks]`` as above; for 2 bits ``w/q`` uint8
  ``[ceil(K / 4)]`` (four 2-bit codes a byte, the first in the low bits, unused
  bits zero) and ``w/s`` float32 ``[chunks, 2]``, a low and a high magnitude:
  code bit 0 is the sign (1 negative), bit 1 picks the high magnitude;
- the statistics always as ``int8`` (``s/q``, ``s/s``), the counters whole as
  ``i/<name>``.

Decoding is one float32 multiplication per value (or a copy, for 2 bits), so
every voter gets the same bits; each value is then cast to its entry's dtype.
A scale may be negative (it flips its chunk): ``x k`` on the scales is then
exactly ``x k`` on the decoded update for a power of two ``k`` (barring
overflow). A decoded value that is not finite in its entry's dtype is refused,
as the canonical reader refuses one in a dense update.
``decode`` takes untrusted input and raises only :class:`CompressionError`.

Error feedback: ``encode`` sends ``update + decay x residual`` and returns the
new residual, what that sum holds beyond what the voters will decode. The
proposer keeps it (``flocknode.rounds.residual``) and adds it, decayed
(``flocknode.rounds.update_form.EF_DECAY``), the next time it proposes: what
waited longest, trained on an older global model, fades instead of arriving
late at full size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from flocknode.aggregation import core
from flocknode.aggregation.core import FLOAT_DTYPES, INT_DTYPES, STAT_NAMES
from flocknode.aggregation.numeric import square_sum
from flocknode.aggregation.settings import AggregationSettings

CHUNK = 4096
F32 = npt.NDArray[np.float32]
Model = Mapping[str, torch.Tensor]
Layout = Sequence[tuple[str, tuple[int, ...], torch.dtype]]
Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]
# 2-bit codes: bit 0 the sign, bit 1 the magnitude (low/high)
_SIGNS = np.array([1.0, -1.0, 1.0, -1.0], dtype=np.float32)
_HIGH = np.array([0, 0, 1, 1], dtype=np.intp)


class CompressionError(ValueError):
    """Packed tensors that do not decode: names the tensor and what is wrong."""


@dataclass(frozen=True)
class Codec:
    """The compression a task's settings ask for (``codec``)."""

    kind: str  # "int8" or "topk"
    fraction: float = 1.0
    bits: int = 8


def codec(settings: AggregationSettings) -> Codec | None:
    """The task's codec, or ``None`` for dense updates."""
    if settings.compression == "none":
        return None
    return Codec(settings.compression, settings.topk_fraction, settings.topk_bits)


def layout(model: Model) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of ``model`` in canonical order."""
    return _canonical([(n, tuple(int(d) for d in t.shape), t.dtype) for n, t in model.items()])


def _canonical(entries: Layout) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """``entries`` in canonical order: their names' UTF-8 bytes, sorted."""
    return sorted(entries, key=lambda e: e[0].encode("utf-8"))


def _part(name: str, dtype: torch.dtype) -> str:
    """The part of an entry, split as ``core`` splits a model: weights, statistics, counters."""
    if dtype in INT_DTYPES:
        return "i"
    if dtype not in FLOAT_DTYPES:
        raise CompressionError(f"tensor {name!r} is {dtype}: not compressible")
    return "s" if name.rsplit(".", 1)[-1] in STAT_NAMES else "w"


def _chunks(lay: Layout, part: str) -> list[int]:
    """Chunk lengths of a part's vector: each entry cut on its own into ``CHUNK``s."""
    out: list[int] = []
    for name, shape, dtype in lay:
        if _part(name, dtype) == part:
            n = math.prod(shape)
            out += [CHUNK] * (n // CHUNK) + ([n % CHUNK] if n % CHUNK else [])
    return out


# A chunk of at most WHOLE values is sent whole, without positions: digits-cnn's
# biases, BatchNorm weights and first convolution (298 values in 8 entries of
# 10-144) got 1 or 2 values a round at 1%, and training's first rounds waited on
# them. bench/accuracy.py --task digits-cnn --only fedavg_half --seeds 1,...,10
# --rounds 20 --compression topk --topk-bits 2: round 20 at 0.9864 mean (0.9805
# lowest) against 0.9786 (0.9694), round 5 at 0.849 against 0.716; dense 0.9911.
WHOLE = 256


def _k(length: int, fraction: float) -> int:
    """Values a chunk of ``length`` sends: all of a small one, else the ``fraction``."""
    return length if length <= WHOLE else min(length, math.ceil(fraction * length))


def _positions(length: int, fraction: float) -> int:
    """Positions a chunk sends: none when it sends every value."""
    k = _k(length, fraction)
    return 0 if k == length else k


def _blocks(lengths: list[int]) -> list[tuple[int, int, int, int]]:
    """``(offset, first chunk, rows, length)`` of each run of equal chunk lengths."""
    runs: list[tuple[int, int, int, int]] = []
    offset = 0
    for i, length in enumerate(lengths):
        if runs and runs[-1][3] == length:
            o, first, rows, _ = runs[-1]
            runs[-1] = (o, first, rows + 1, length)
        else:
            runs.append((offset, i, 1, length))
        offset += length
    return runs


def packed_spec(lay: Layout, c: Codec) -> Spec:
    """Names, shapes and dtypes of the packed tensors of an update of ``lay``."""
    spec: Spec = {}
    for part in ("w", "s"):
        lengths = _chunks(lay, part)
        if not lengths:
            continue
        n = sum(lengths)
        if part == "s" or c.kind == "int8":
            spec[f"{part}/q"] = ((n,), torch.int8)
            spec[f"{part}/s"] = ((len(lengths),), torch.float32)
            continue
        k = sum(_k(length, c.fraction) for length in lengths)
        spec["w/i"] = ((sum(_positions(n, c.fraction) for n in lengths),), torch.int16)
        if c.bits == 8:
            spec["w/q"] = ((k,), torch.int8)
            spec["w/s"] = ((len(lengths),), torch.float32)
        else:
            spec["w/q"] = ((-(-k // 4),), torch.uint8)
            spec["w/s"] = ((len(lengths), 2), torch.float32)
    for name, shape, dtype in lay:
        if _part(name, dtype) == "i":
            spec[f"i/{name}"] = (shape, dtype)
    return spec


def _flat(model: Model, lay: Layout, part: str) -> F32:
    parts = [
        model[name].detach().cpu().to(torch.float32).reshape(-1).numpy()
        for name, _ in _spans(lay, part)
    ]
    if not parts:
        return np.zeros(0, np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


Residual = dict[str, torch.Tensor]


def encode(
    update: Model,
    residual: Residual | None,
    c: Codec,
    max_norm: float | None = None,
    decay: float = 1.0,
) -> tuple[dict[str, torch.Tensor], Residual]:
    """The packed tensors of ``update + decay x residual`` and the residual they leave.

    ``residual`` is ``None`` or what an earlier ``encode`` returned for the
    same layout (one of another size, e.g. after a task's model changed, is
    not used). With ``max_norm`` the weights' scales are lowered so the decoded
    weights' L2 norm (float64, as the norm check computes it) is at most that;
    the rest stays in the residual, which is measured against the values the
    voters decode (in each entry's own dtype). Error
    feedback can pile up more than a round's step (a value waits until it is
    among the largest of its chunk), and the cap keeps an honest proposer's
    update inside the voters' norm band.
    """
    lay = layout(update)
    packed: dict[str, torch.Tensor] = {}
    wanted: dict[str, F32] = {}
    for part in ("w", "s"):
        lengths = _chunks(lay, part)
        if not lengths:
            continue
        x = _with_residual(update, lay, part, residual, decay)  # the sums below work in it
        wanted[part] = x
        if part == "s" or c.kind == "int8":
            q, s = _int8(x, lengths)
            packed[f"{part}/q"], packed[f"{part}/s"] = torch.from_numpy(q), torch.from_numpy(s)
        else:
            packed.update(_topk(x, lengths, c))
    for name, _, dtype in lay:
        if _part(name, dtype) == "i":
            packed[f"i/{name}"] = update[name].detach().cpu().clone()
    if max_norm is not None and "w/s" in packed:
        for _ in range(4):  # float32 rounding may leave it a few ulps above: shrink again
            norm = _sent_norm(_sent(packed, lay, c, "w"))
            if norm <= max_norm:
                break
            factor = np.float32(max_norm / norm * (1 - 2.0**-20))
            packed["w/s"] = packed["w/s"] * torch.tensor(factor)
    for part, x in wanted.items():  # what is left: the sum minus what the voters decode
        for _, where, values in _sent(packed, lay, c, part):
            x[where] -= values
    return packed, {part: torch.from_numpy(x) for part, x in wanted.items()}


def _with_residual(
    update: Model, lay: Layout, part: str, residual: Residual | None, decay: float = 1.0
) -> F32:
    """A part of ``update`` plus ``decay`` x the residual's, as a float32 vector the
    caller may change.

    A usable residual (same size, writable) is added to in place: ``encode``
    consumes it, and the proposer holds no third copy of the part.
    """
    r = None if residual is None else residual.get(part)
    spans = _spans(lay, part)
    n = spans[-1][1].stop if spans else 0
    if r is None or r.numel() != n or r.dtype != torch.float32 or not r.is_contiguous():
        x = _flat(update, lay, part)
        if r is not None and r.numel() == n:
            x += r.reshape(-1).to(torch.float32).numpy() * np.float32(decay)
        return x
    x = r.reshape(-1).numpy()
    if not x.flags.writeable:
        x = x.copy()
    if decay != 1.0:
        x *= np.float32(decay)  # rounded once, as in the other branch
    for name, span in spans:  # the sum is commutative: the same bits as update + residual
        x[span] += update[name].detach().cpu().reshape(-1).to(torch.float32).numpy()
    return x


Where = slice | npt.NDArray[np.int64]


def _sent(
    packed: Mapping[str, torch.Tensor], lay: Layout, c: Codec, part: str
) -> list[tuple[str, Where, F32]]:
    """What the voters decode of a part, entry by entry: its name, the places in
    the part's vector and the values there, cast to the entry's dtype and back
    to float32.

    Top-k weights come as the sent positions only (the rest decode to zero), so
    no dense copy of the part is made; the others as the entry's whole span.
    """
    spans = _spans(lay, part)
    dtypes = {name: dtype for name, _, dtype in lay}
    lengths = _chunks(lay, part)
    out: list[tuple[str, Where, F32]] = []
    with np.errstate(over="ignore"):
        if not lengths:  # a part without chunks holds only empty entries
            none = np.zeros(0, np.int64)
            out = [(name, none, np.zeros(0, np.float32)) for name, _ in spans]
        elif part == "w" and c.kind == "topk":
            pos, vals = _topk_sparse(packed, lengths, c)
            for name, span in spans:
                lo, hi = np.searchsorted(pos, [span.start, span.stop])
                out.append((name, pos[lo:hi], _as_dtype(vals[lo:hi], dtypes[name])))
        else:
            dense = _decode_part(packed, lengths, c, part)
            for name, span in spans:
                out.append((name, span, _as_dtype(dense[span], dtypes[name])))
    return out


def _as_dtype(values: F32, dtype: torch.dtype) -> F32:
    if dtype == torch.float32:
        return values
    out: F32 = torch.from_numpy(values).to(dtype).to(torch.float32).numpy()
    return out


def _sent_norm(sent: list[tuple[str, Where, F32]]) -> float:
    """L2 norm of what the voters decode, as their norm check computes it: each value
    widened to float64, one exact sum of the squares. Values decoded to zero add
    exactly nothing to an exact sum, so the sent values alone give the same bits."""

    def blocks() -> Iterator[npt.NDArray[np.float64]]:
        for _, _, values in sent:
            for i in range(0, values.size, ROWS_PIECE):
                yield values[i : i + ROWS_PIECE].astype(np.float64)

    try:
        return math.sqrt(square_sum(blocks()))
    except ValueError:  # a value that is not finite: so is the norm (inf or nan)
        return math.sqrt(sum(float(np.dot(b, b)) for b in blocks()))


def _spans(lay: Layout, part: str) -> list[tuple[str, slice]]:
    """Each entry of a part and its place in the part's vector."""
    out, offset = [], 0
    for name, shape, dtype in lay:
        if _part(name, dtype) == part:
            n = math.prod(shape)
            out.append((name, slice(offset, offset + n)))
            offset += n
    return out


# Values a chunk-wise step (selection, quantisation) works on at a time: the rows
# are independent, so pieces change no result, and the temporaries (magnitudes,
# argpartition's int64 positions) stay at a few MB instead of several copies of
# the largest entry.
ROWS_PIECE = 1 << 20


def _row_pieces(offset: int, rows: int, length: int) -> Iterator[tuple[int, int]]:
    """``(start, rows)`` of consecutive whole-row pieces of a run of ``rows`` chunks."""
    step = max(1, ROWS_PIECE // length)
    for r in range(0, rows, step):
        yield offset + r * length, min(step, rows - r)


def _int8(x: F32, lengths: list[int]) -> tuple[npt.NDArray[np.int8], F32]:
    """Codes and one scale per chunk of ``x``."""
    parts = [
        _int8_rows(x[o : o + n * length].reshape(n, length))
        for offset, _, rows, length in _blocks(lengths)
        for o, n in _row_pieces(offset, rows, length)
    ]
    return np.concatenate([q for q, _ in parts]), np.concatenate([s for _, s in parts])


def _int8_rows(vals: F32) -> tuple[npt.NDArray[np.int8], F32]:
    """Codes (flat) and one scale per row: ``max|v| / 127``, codes ``rint(v / scale)``."""
    s = (np.abs(vals).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(vals / safe)
    q = np.where(s[:, None] > 0, np.clip(q, -127, 127), 0)
    return q.astype(np.int8).reshape(-1), s


def _int8_values(q: npt.NDArray[np.int8], s: F32, lengths: list[int]) -> F32:
    out: F32 = q.astype(np.float32) * np.repeat(s, lengths)
    return out


def _topk(x: F32, lengths: list[int], c: Codec) -> dict[str, torch.Tensor]:
    idx_parts: list[npt.NDArray[Any]] = []
    q_parts: list[npt.NDArray[Any]] = []
    s_parts: list[F32] = []
    for offset, _, all_rows, length in _blocks(lengths):
        k = _k(length, c.fraction)
        for o, rows in _row_pieces(offset, all_rows, length):
            block = x[o : o + rows * length].reshape(rows, length)
            if k < length:
                pick = np.argpartition(-np.abs(block), k - 1, axis=1)[:, :k]
            else:
                pick = np.broadcast_to(np.arange(length), (rows, length))
            pick = np.sort(pick, axis=1)
            vals = np.take_along_axis(block, pick, axis=1)
            if c.bits == 8:
                q, s = _int8_rows(vals)
                q_parts.append(q)
            else:
                codes, s = _two_bit(vals)
                q_parts.append(codes.reshape(-1))
            s_parts.append(s)
            if k < length:  # a chunk sent whole sends no positions
                idx_parts.append(pick.astype(np.int16).reshape(-1))
    codes_all = np.concatenate(q_parts)
    return {
        "w/i": torch.from_numpy(np.concatenate([np.zeros(0, np.int16), *idx_parts])),
        "w/q": torch.from_numpy(codes_all.astype(np.int8) if c.bits == 8 else _pack2(codes_all)),
        "w/s": torch.from_numpy(np.concatenate(s_parts).astype(np.float32)),
    }


def _two_bit(vals: F32) -> tuple[npt.NDArray[np.uint8], F32]:
    """Codes and ``[low, high]`` magnitudes per row: the means of the lower and upper halves."""
    mags = np.abs(vals)
    srt = np.sort(mags, axis=1)
    k = vals.shape[1]
    low_n = k - k // 2
    low = srt[:, :low_n].mean(axis=1, dtype=np.float64)
    high = srt[:, low_n:].mean(axis=1, dtype=np.float64) if k // 2 else low
    scales = np.stack([low, high], axis=1).astype(np.float32)
    cut = (scales[:, :1] + scales[:, 1:]) / 2
    codes = (vals < 0).astype(np.uint8) | ((mags > cut).astype(np.uint8) << 1)
    return codes.astype(np.uint8), scales


def _pack2(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    padded = np.zeros(-(-codes.size // 4) * 4, dtype=np.uint8)
    padded[: codes.size] = codes
    four = padded.reshape(-1, 4)
    packed = four[:, 0] | four[:, 1] << 2 | four[:, 2] << 4 | four[:, 3] << 6
    return np.asarray(packed, dtype=np.uint8)


def _unpack2(packed: npt.NDArray[np.uint8], k: int) -> npt.NDArray[np.uint8]:
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    codes = np.asarray((packed[:, None] >> shifts) & 3, dtype=np.uint8).reshape(-1)
    if codes[k:].any():
        raise CompressionError("w/q: unused 2-bit codes are not zero")
    return codes[:k]


def decode(packed: Mapping[str, torch.Tensor], lay: Layout, c: Codec) -> dict[str, torch.Tensor]:
    """The dense update of ``lay`` that ``packed`` holds (untrusted: CompressionError)."""
    _check_form(packed, lay, c)
    out = _dense(packed, lay, c)
    for name, t in out.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CompressionError(f"{name}: a value overflows {t.dtype}")
    return out


def _check_form(packed: Mapping[str, torch.Tensor], lay: Layout, c: Codec) -> None:
    spec = packed_spec(lay, c)
    if set(packed) != set(spec):
        raise CompressionError("packed tensor names differ from the task's")
    for name, (shape, dtype) in spec.items():
        t = packed[name]
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != shape:
            raise CompressionError(f"{name}: expected {dtype} of shape {shape}")
    for part in ("w", "s"):
        if f"{part}/s" in packed and not bool(torch.isfinite(packed[f"{part}/s"]).all()):
            raise CompressionError(f"{part}/s: a scale is not finite")


class PackedFlat:
    """A top-k update kept packed, read as ``core.Flat`` reads: a block of
    coordinates at a time, the values not sent as zeros.

    The same float64 values as the dense update ``decode`` gives (each sent
    value cast to its entry's dtype, then widened), without a dense copy: a
    voter holds the sent values and their places (16 bytes each) and the
    decoded statistics. ``open_packed`` builds one from untrusted tensors.
    """

    def __init__(
        self,
        layout: core.Layout,
        weights: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]],
        stats: dict[str, npt.NDArray[np.float64]],
        ints: core.Ints,
    ) -> None:
        self._layout, self._weights, self._stats, self._ints = layout, weights, stats, ints

    def read(self, kind: str, start: int, stop: int) -> npt.NDArray[np.float64]:
        out = np.zeros(stop - start, dtype=np.float64)
        for span, a, b in self._layout.pieces(kind, start, stop):
            at = span.offset + a - start  # where the entry's ``a`` lands in ``out``
            if kind == core.STATS:
                out[at : at + b - a] = self._stats[span.name][a:b]
                continue
            places, values = self._weights[span.name]
            i, j = np.searchsorted(places, [a, b])
            out[places[i:j] - a + at] = values[i:j]
        return out

    def integers(self) -> core.Ints:
        return self._ints

    def sparse_weights(self, name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """A weight entry's sent places (flat, increasing) and values (the rest are zero)."""
        return self._weights[name]


def open_packed(packed: Mapping[str, torch.Tensor], layout: core.Layout, c: Codec) -> PackedFlat:
    """The ``PackedFlat`` of a top-k update of ``layout`` (untrusted: CompressionError,
    on the same grounds as ``decode``)."""
    if c.kind != "topk":
        raise ValueError("only top-k updates are read packed")
    lay = _canonical(layout.entries)
    _check_form(packed, lay, c)
    dtypes = {name: dtype for name, _, dtype in lay}
    weights: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
    stats: dict[str, npt.NDArray[np.float64]] = {}
    for part in ("w", "s"):
        starts = {name: span.start for name, span in _spans(lay, part)}
        for name, where, values in _sent(packed, lay, c, part):
            if not np.isfinite(values).all():
                raise CompressionError(f"{name}: a value overflows {dtypes[name]}")
            if part == "s":
                stats[name] = values.astype(np.float64)
            else:  # top-k: the sent places, from the entry's start
                local = np.asarray(where, dtype=np.int64) - starts[name]
                weights[name] = (local, values.astype(np.float64))
    ints = [
        packed[f"i/{name}"].reshape(-1).numpy().astype(np.int64)
        for name, _, dtype in layout.entries
        if _part(name, dtype) == "i"
    ]
    return PackedFlat(layout, weights, stats, ints)


def _dense(packed: Mapping[str, torch.Tensor], lay: Layout, c: Codec) -> dict[str, torch.Tensor]:
    """The dense update ``packed`` holds (its form already checked; values unchecked)."""
    flat: dict[str, F32] = {}
    for part in ("w", "s"):
        lengths = _chunks(lay, part)
        if lengths:
            with np.errstate(over="ignore"):  # an overflow is refused by ``decode``
                flat[part] = _decode_part(packed, lengths, c, part)
    # a part without chunks holds only empty entries
    where = {name: (part, span) for part in ("w", "s") for name, span in _spans(lay, part)}
    out: dict[str, torch.Tensor] = {}
    for name, shape, dtype in lay:
        if name not in where:  # a counter
            out[name] = packed[f"i/{name}"].clone()
            continue
        part, span = where[name]
        values = flat.get(part, np.zeros(0, np.float32))[span]
        with np.errstate(over="ignore"):  # float32 entries: views of the part's vector
            out[name] = torch.from_numpy(values.reshape(shape)).to(dtype)
    return out


def _decode_part(
    packed: Mapping[str, torch.Tensor], lengths: list[int], c: Codec, part: str = "w"
) -> F32:
    """One part's float32 vector (shapes and dtypes checked by the caller)."""
    scales = packed[f"{part}/s"].numpy()
    q = packed[f"{part}/q"].numpy()
    if part == "s" or c.kind == "int8":
        if (q == -128).any():
            raise CompressionError(f"{part}/q: -128 is not a value")
        return _int8_values(q, scales, lengths)
    return _topk_values(packed["w/i"].numpy(), q, scales, lengths, c)


def _topk_values(
    idx: npt.NDArray[np.int16], q: npt.NDArray[Any], scales: F32, lengths: list[int], c: Codec
) -> F32:
    out = np.zeros(sum(lengths), dtype=np.float32)
    pos, vals = _topk_positions(idx, q, scales, lengths, c)
    out[pos] = vals
    return out


def _topk_sparse(
    packed: Mapping[str, torch.Tensor], lengths: list[int], c: Codec
) -> tuple[npt.NDArray[np.int64], F32]:
    return _topk_positions(
        packed["w/i"].numpy(), packed["w/q"].numpy(), packed["w/s"].numpy(), lengths, c
    )


def _topk_positions(
    idx: npt.NDArray[np.int16], q: npt.NDArray[Any], scales: F32, lengths: list[int], c: Codec
) -> tuple[npt.NDArray[np.int64], F32]:
    """The sent values' places in the part's vector (increasing) and their float32 values."""
    if c.bits == 8:
        if (q == -128).any():
            raise CompressionError("w/q: -128 is not a value")
    else:
        q = _unpack2(q.astype(np.uint8), sum(_k(n, c.fraction) for n in lengths))
    places: list[npt.NDArray[np.int64]] = []
    values: list[F32] = []
    pos = at = 0  # in the values, in the positions
    for offset, first, rows, length in _blocks(lengths):
        k = _k(length, c.fraction)
        if k == length:
            pick = np.broadcast_to(np.arange(length, dtype=np.int64), (rows, k))
        else:
            pick = idx[at : at + rows * k].astype(np.int64).reshape(rows, k)
            at += rows * k
        if (pick[:, 0] < 0).any() or (pick[:, -1] >= length).any():
            raise CompressionError("w/i: a position outside its chunk")
        if k > 1 and (np.diff(pick, axis=1) <= 0).any():
            raise CompressionError("w/i: positions not strictly increasing in a chunk")
        s = scales[first : first + rows]
        if c.bits == 8:
            decoded = q[pos : pos + rows * k].astype(np.float32).reshape(rows, k) * s[:, None]
        else:
            codes = q[pos : pos + rows * k].astype(np.intp).reshape(rows, k)
            decoded = _SIGNS[codes] * np.take_along_axis(s, _HIGH[codes], axis=1)
        places.append((offset + (np.arange(rows) * length)[:, None] + pick).reshape(-1))
        values.append(decoded.reshape(-1).astype(np.float32, copy=False))
        pos += rows * k
    if not places:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(places), np.concatenate(values)
