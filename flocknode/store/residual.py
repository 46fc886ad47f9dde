"""The proposer's error-feedback residual (docs/protocol.md, "Compressed updates").

What a compressed update did not carry is kept here and added to the
proposer's next update. One file per round it was made in,
``residual/<round>.flct`` (canonical tensor bytes, written atomically); a
proposer of round ``r`` reads the newest file of a round before ``r``, so a
proposer that crashes after saving round ``r``'s residual and trains ``r``
again starts from the same residual, not from one that already lacks what it
is about to send. Files older than the one read are removed when a newer one is
saved: at most two are kept.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from flocknode.crypto import CanonicalError, CanonicalReader, iter_canonical
from flocknode.fsutil import atomic_write_pieces

log = logging.getLogger(__name__)

SUFFIX = ".flct"
READ_PIECE = 1 << 20


class ResidualStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _rounds(self) -> list[int]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.suffix == SUFFIX and p.stem.isdigit():
                out.append(int(p.stem))
        return sorted(out)

    def _path(self, round_no: int) -> Path:
        return self.root / f"{round_no}{SUFFIX}"

    def load(self, before_round: int) -> dict[str, torch.Tensor] | None:
        """The residual saved in the newest round before ``before_round`` (None: none kept).

        Only that file: an older one holds values that were sent since. One that
        does not parse (a disk fault, or non-finite values after training
        diverged) is logged, and the proposer sends without a residual, which
        costs accuracy, not correctness.
        """
        older = [r for r in self._rounds() if r < before_round]
        if not older:
            return None
        try:
            reader = CanonicalReader()  # piece by piece: no second copy of the file in memory
            with self._path(older[-1]).open("rb") as f:
                while piece := f.read(READ_PIECE):
                    reader.feed(piece)
            return reader.finish()
        except (OSError, CanonicalError) as e:
            log.warning("residual unreadable, not used round=%d error=%s", older[-1], e)
            return None

    def save(self, round_no: int, residual: dict[str, torch.Tensor]) -> None:
        """Keep ``residual`` as round ``round_no``'s; drop files older than the one it replaces."""
        atomic_write_pieces(self._path(round_no), iter_canonical(residual), mode=0o600)
        older = [r for r in self._rounds() if r < round_no]
        for r in older[:-1]:
            with contextlib.suppress(FileNotFoundError):
                self._path(r).unlink()
