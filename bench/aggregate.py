"""What one aggregation costs in time and memory, updates in memory or on disk.

    .venv/bin/python bench/aggregate.py [--mb 100] [--updates 3] [--rules fedavg,median]
        [--where memory,disk,packed]

For each rule, two fresh processes aggregate ``--updates`` random updates of a
``--mb`` MB float32 model: ``memory`` (the updates as tensors, what
``bench/accuracy.py`` and tests pass) and ``disk`` (each update written with
``flocknode.store.spill`` first, and centered_clip's centre on disk, as a
voter does; only the base model stays in memory) and ``packed`` (each update
encoded top-k 1% at 2 bits and kept packed, ``compression.open_packed``, as a
voter keeps a top-k update; ``--where`` picks them). Each case records
``seconds``, ``rss_before_mb`` (the process once its inputs are ready),
``peak_mb`` (VmHWM, reset just before aggregating) and
``above_inputs_x_model`` = (peak - before) / model size: what aggregation
itself adds, in models. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import peak_rss_mb

if TYPE_CHECKING:
    from flocknode.aggregation.core import Scratch


def _case(mb: int, updates: int, rule: str, where: str) -> dict[str, Any]:
    import torch  # the parent process only starts children

    from flocknode.aggregation import AggregationSettings, aggregate
    from flocknode.aggregation.core import Flat, MemoryScratch, Model, layout_of
    from flocknode.store.spill import SpillDir, SpilledUpdate

    n = mb * (1 << 20) // 4
    base = {"w": torch.randn(n // 1024, 1024)}
    inputs: list[Model | Flat] = [
        {"w": torch.randn(n // 1024, 1024) * 1e-3} for _ in range(updates)
    ]
    tmp = tempfile.TemporaryDirectory()
    scratch: Callable[[int], Scratch] = MemoryScratch
    if where == "packed":
        from flocknode.aggregation.compression import Codec, encode, open_packed

        topk = Codec("topk", 0.01, 2)
        layout = layout_of(base)
        inputs = [open_packed(encode(u, None, topk)[0], layout, topk) for u in inputs]  # type: ignore[arg-type]
    if where in ("disk", "packed"):  # centered_clip's centre on disk, as a voter keeps it
        scratch = SpillDir(Path(tmp.name) / "spill").scratch(1)
    if where == "disk":
        layout = layout_of(base)
        inputs = [
            SpilledUpdate.write(Path(tmp.name) / f"{i}.f32", u, layout, f"seat {i}")  # type: ignore[arg-type]
            for i, u in enumerate(inputs)
        ]
    gc.collect()
    pid = os.getpid()
    before = peak_rss_mb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    aggregate(base, inputs, AggregationSettings(rule=rule), scratch=scratch)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb(pid)
    tmp.cleanup()
    return {
        "rule": rule,
        "where": where,
        "model_mb": mb,
        "updates": updates,
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before, 1),
        "peak_mb": round(peak, 1),
        "above_inputs_x_model": round((peak - before) / mb, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--rules", default="fedavg,median")
    p.add_argument("--where", default="memory,disk", help="memory, disk, packed (top-k)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # "rule:where", in a child process
    args = p.parse_args()
    if args.case:
        rule, where = args.case.split(":")
        print(json.dumps(_case(args.mb, args.updates, rule, where)))
        return
    cases = []
    for rule in [r for r in args.rules.split(",") if r]:
        for where in [w for w in args.where.split(",") if w]:
            argv = ["--mb", str(args.mb), "--updates", str(args.updates)]
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--case", f"{rule}:{where}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            cases.append(json.loads(out))
    print(json.dumps({"cases": cases}))


if __name__ == "__main__":
    main()
