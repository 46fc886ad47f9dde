"""Memory of a proposer's training and a voter's scoring, in-process, for a large model.

Not part of the test suite. Each measurement runs in a fresh process that
does what a node does (``flocknode.malloc.tune()``, the global model cached,
freed pages given back), then:

- ``train``: reads the model anew and drops the cached copy (``ModelBook.take``),
  builds the task's model on those tensors and runs ``train_classifier``
  (``--steps`` steps of the task's batch size, ``--optimizer``) as a node
  does (``file_state``): the large linear weights stepped a block of rows at
  a time and the optimizer state of large parameters in a file of the
  system's temporary directory; or with that state in memory (``SPILL_MIN``
  out of reach: ``streamed``); or that and each weight's gradient whole
  (``STREAM_MIN`` out of reach too: ``whole``; docs/protocol.md, step 3);
- ``eval``: scores the cached model on 359 samples with ``eval_batch``'s
  passes (``batched``) or 64 samples a pass (``at_64``; step 6).

The kernel's peak RSS (VmHWM) is reset to the RSS just before the work (as
``bench/aggregate.py`` does); a case reports the peak above it, in model
sizes (``models``: min, median and max over ``--reps`` processes), and the
seconds the work took (median).

    .venv/bin/python bench/train_memory.py --json [--tasks wide-mlp-100mb,deep-mlp-100mb]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import peak_rss_mb


def child(task_name: str, kind: str, variant: str, optimizer: str, steps: int) -> dict[str, Any]:
    """One measurement in this process (fresh): peak above idle, in MB and model sizes."""
    from flocknode import malloc

    malloc.tune()
    import torch

    from flocknode.learning import train
    from flocknode.learning.builtin import BUILTIN_TASKS
    from flocknode.learning.models import build_model
    from flocknode.learning.task import Samples

    task = BUILTIN_TASKS[task_name]()
    seeded = task.build_model()
    cached = {k: v.detach().clone() for k, v in seeded.state_dict().items()}
    del seeded
    build_model(task.build_model, cached, 0, share=True)  # the node's first build is behind it
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(359, 64, generator=gen), torch.randint(0, 10, (359,), generator=gen)
    model_mb = sum(t.numel() * t.element_size() for t in cached.values()) / 2**20
    malloc.trim()
    idle = peak_rss_mb(os.getpid(), "VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    if kind == "train":
        if variant in ("streamed", "whole"):
            train.SPILL_MIN = 1 << 62
        if variant == "whole":
            train.STREAM_MIN = 1 << 62
        fresh = {k: v.clone() for k, v in cached.items()}  # ModelBook.take: read, cache dropped
        del cached
        model = build_model(task.build_model, fresh, 0, share=True)
        del fresh
        train.train_classifier(
            model, Samples(x, y), steps=steps, epochs=1, batch_size=16, optimizer=optimizer,
            learning_rate=0.001, momentum=0.9, seed=1,
        )  # fmt: skip
    else:
        if variant == "at_64":
            train.EVAL_VALUES = 1 << 62
        model = build_model(task.build_model, cached, 0, share=True)
        train.evaluate_classifier(model, Samples(x, y))
    seconds = time.perf_counter() - t0
    above = peak_rss_mb(os.getpid()) - idle
    return {"above_mb": round(above, 1), "models": above / model_mb, "seconds": seconds}


def measure(task: str, kind: str, variant: str, optimizer: str, steps: int, reps: int) -> dict:
    runs = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, __file__, "--child", task, kind, variant, optimizer, str(steps)],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout))
    models = sorted(r["models"] for r in runs)
    return {
        "task": task,
        "kind": kind,
        "variant": variant,
        "optimizer": optimizer if kind == "train" else None,
        "models_min": round(models[0], 2),
        "models_median": round(statistics.median(models), 2),
        "models_max": round(models[-1], 2),
        "above_mb_median": statistics.median(r["above_mb"] for r in runs),
        "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        task, kind, variant, optimizer, steps = sys.argv[2:7]
        print(json.dumps(child(task, kind, variant, optimizer, int(steps))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="wide-mlp-100mb,deep-mlp-100mb")
    p.add_argument("--optimizers", default="adam,sgd")
    p.add_argument("--steps", type=int, default=2, help="the sized tasks' local steps")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cases = []
    for task in [t for t in args.tasks.split(",") if t]:
        for opt in [o for o in args.optimizers.split(",") if o]:
            for variant in ("file_state", "streamed", "whole"):
                cases.append(measure(task, "train", variant, opt, args.steps, args.reps))
        for variant in ("batched", "at_64"):
            cases.append(measure(task, "eval", variant, "", args.steps, args.reps))
    if args.json:
        print(json.dumps({"reps": args.reps, "cases": cases}))
        return
    for c in cases:
        print(
            f"{c['task']:16s} {c['kind']:5s} {c['variant']:10s} {c['optimizer'] or '':4s} "
            f"models {c['models_min']}-{c['models_max']} (median {c['models_median']}) "
            f"{c['seconds_median']} s"
        )


if __name__ == "__main__":
    main()
