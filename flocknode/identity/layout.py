"""Where a node keeps its state inside its data dir: see ``flocknode.datadir``."""

from __future__ import annotations

from flocknode.datadir import DataDir

__all__ = ["DataDir"]
