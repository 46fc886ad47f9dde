"""What a sealed update of a round looks like: dense or packed (docs/protocol.md,
"Compressed updates"), its exact blob size, and the dense update a voter works on.

Everything here follows from the base model's names, shapes and dtypes and the
task's settings, so every voter expects the same bytes from every proposer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from flocknode.aggregation import compression as comp
from flocknode.aggregation.core import Layout, step_scale
from flocknode.aggregation.settings import AggregationSettings
from flocknode.crypto import EnvelopeError, spec_size
from flocknode.crypto.envelope import ABYTES, DEFAULT_CHUNK_SIZE, HEAD_LEN
from flocknode.learning.settings import TaskSettings

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class UpdateForm:
    layout: list[tuple[str, tuple[int, ...], torch.dtype]]
    codec: comp.Codec | None
    spec: dict[str, tuple[tuple[int, ...], torch.dtype]]  # what the canonical bytes hold

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for name, (shape, _) in self.spec.items()}

    @property
    def blob_size(self) -> int:
        """The exact size of the sealed blob (docs/protocol.md, "Oversized or
        stalled update blobs"): the canonical bytes, fixed by the spec, plus the
        envelope's head and ``ABYTES`` per chunk of ``DEFAULT_CHUNK_SIZE`` (the
        chunk size every proposer seals with)."""
        plain = spec_size(self.spec)
        chunks = -(-plain // DEFAULT_CHUNK_SIZE)
        return HEAD_LEN + plain + ABYTES * chunks

    def dense(self, opened: Mapping[str, torch.Tensor]) -> State:
        """The update an opened blob carries, in the base model's layout.

        Untrusted: packed tensors that do not decode raise ``EnvelopeError``
        (the seat is left out, as for any update that does not open).
        """
        if self.codec is None:
            return dict(opened)
        try:
            return comp.decode(opened, self.layout, self.codec)
        except comp.CompressionError as e:
            raise EnvelopeError(f"packed update: {e}") from None

    def packed(self, opened: Mapping[str, torch.Tensor], layout: Layout) -> comp.PackedFlat | None:
        """A top-k update as the aggregation reads it, kept packed (a voter writes no
        dense copy); ``None`` for the other forms. Untrusted, as ``dense``."""
        if self.codec is None or self.codec.kind != "topk":
            return None
        try:
            return comp.open_packed(opened, layout, self.codec)
        except comp.CompressionError as e:
            raise EnvelopeError(f"packed update: {e}") from None


def update_form(base: Mapping[str, torch.Tensor], settings: AggregationSettings) -> UpdateForm:
    lay = comp.layout(base)
    c = comp.codec(settings)
    if c is None:
        spec = {name: (shape, dtype) for name, shape, dtype in lay}
    else:
        spec = comp.packed_spec(lay, c)
    return UpdateForm(lay, c, spec)


def update_blob_size(
    model: Mapping[str, torch.Tensor], settings: AggregationSettings | None = None
) -> int:
    """The sealed size of an update of ``model``'s layout under ``settings`` (default: dense)."""
    return update_form(model, settings or AggregationSettings()).blob_size


# An honest proposer of a compressed update sends at most this share of the
# band's ceiling (the rest stays in its residual): bench/accuracy.py, digits-cnn,
# topk 1% 2-bit, 20 rounds, seeds 1-5: round-20 mean accuracy 0.9738 at 0.5,
# 0.9761 at 0.7, 0.9783 at 0.9, 0.9755 at 0.99; without a cap 218 of 500
# honest updates went above the ceiling (norms up to 2.9 of the step scale).
SEND_CAP = 0.9

# An honest proposer adds its residual times this (``compression.encode``'s
# ``decay``): bench/accuracy.py, digits-cnn, topk 1% 2-bit, 20 rounds, fedavg_half, seeds
# 1-10: round-20 mean accuracy 0.9752 at 1.0 (plain error feedback), 0.9785 at 0.9;
# seeds 1-5: 0.9777 at 1.0, 0.9800 at 0.9, 0.9760 at 0.7.
EF_DECAY = 0.9


def round_scale(
    settings: TaskSettings, round_no: int, base: Mapping[str, torch.Tensor]
) -> float | None:
    """The round's step scale (``core.step_scale`` at the round's learning rate)."""
    t = settings.training.for_round(round_no)
    return step_scale(
        t.optimizer, t.learning_rate, t.local_steps, sum(v.numel() for v in base.values())
    )


def send_cap(
    settings: TaskSettings, round_no: int, base: Mapping[str, torch.Tensor]
) -> float | None:
    """The largest norm an honest proposer sends in a compressed update (None: no band)."""
    scale = round_scale(settings, round_no, base)
    return None if scale is None else SEND_CAP * settings.aggregation.norm_ceiling * scale
