"""A voter's opened updates on disk, so that aggregation holds blocks, not models.

Each dense or int8 update a voter opens for a round (a top-k one stays packed
in memory: ``compression.open_packed``) is written once, as float32 in the
aggregation layout's order (the weights, then the running statistics; float16
and bfloat16 widen to float32 exactly), to ``spill/<round>/<seat>.f32`` (mode
600), and read back a block of coordinates at a time (``core.Flat``). Its
integer entries (counters) stay in memory. centered_clip's centre is a
float64 file next to them (``core.Scratch``). A round's files are removed once
its vote is decided, and every file at start-up (a crash mid-round leaves
them; the voter opens the updates again).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flocknode.aggregation.core import (
    STATS,
    WEIGHTS,
    Ints,
    Layout,
    Model,
    ModelFlat,
)
from flocknode.aggregation.numeric import F64

F32 = np.dtype(np.float32)
F64_BYTES = np.dtype(np.float64).itemsize


def _create(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class SpilledUpdate:
    """An update on disk, read block by block (``core.Flat``)."""

    def __init__(self, path: Path, layout: Layout, ints: Ints) -> None:
        self.path = path
        self._offsets = {WEIGHTS: 0, STATS: layout.sizes[WEIGHTS]}
        self._ints = ints

    @classmethod
    def write(cls, path: Path, update: Model, layout: Layout, who: str) -> SpilledUpdate:
        """Check ``update`` against ``layout`` (``AggregationInputError``) and write it."""
        flat = ModelFlat(update, layout, who)
        with os.fdopen(_create(path), "wb") as f:
            for kind in (WEIGHTS, STATS):
                for span in layout.spans[kind]:
                    t = update[span.name].detach().cpu().reshape(-1).float()
                    t.numpy().tofile(f)
        return cls(path, layout, flat.integers())

    def read(self, kind: str, start: int, stop: int) -> F64:
        first = self._offsets[kind] + start
        values = np.fromfile(self.path, dtype=F32, count=stop - start, offset=first * F32.itemsize)
        if values.shape[0] != stop - start:
            raise OSError(f"{self.path}: shorter than its layout")
        return values.astype(np.float64)

    def integers(self) -> Ints:
        return self._ints


class FileScratch:
    """A float64 vector in a file (``core.Scratch``)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        fd = _create(path)
        try:
            os.ftruncate(fd, size * F64_BYTES)
        finally:
            os.close(fd)

    def read(self, start: int, stop: int) -> F64:
        return np.fromfile(
            self.path, dtype=np.float64, count=stop - start, offset=start * F64_BYTES
        )

    def write(self, start: int, values: F64) -> None:
        with open(self.path, "r+b") as f:
            f.seek(start * F64_BYTES)
            np.ascontiguousarray(values, dtype=np.float64).tofile(f)


class SpillDir:
    """``spill/``: one directory per round being voted on."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        shutil.rmtree(self.root, ignore_errors=True)  # a crash's leftovers

    def seat(self, round_no: int, seat: int) -> Path:
        return self.root / str(round_no) / f"{seat}.f32"

    def scratch(self, round_no: int) -> Callable[[int], FileScratch]:
        """centered_clip's centre for ``core.aggregate``: a float64 file of the round."""
        return functools.partial(FileScratch, self.root / str(round_no) / "centre.f64")

    def clear(self, round_no: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.root / str(round_no))
