"""Cost of running task code in the isolated worker, against the same work in-process.

Not part of the test suite. One "role" is what a node's learner does in a
round of a built-in task (``--task``: ``digits-mlp`` or ``digits-cnn``): one
``train`` (the default training settings: 100 Adam steps of 16) and one
``evaluate`` on the private validation split, over the node's shard written
to files in the task's format (CSV, PNG folders) as ``cluster up`` does. The same
role runs in the daemon (``Learner``, through ``trio.to_thread`` as the round
engine calls it) and in a warmed-up task worker (``IsolatedLearner``) for
each isolation (``namespace``: the jail; ``process``: no namespaces),
interleaved ``--reps`` times so that other load on the shared machine falls
on all of them alike. Each worker uses the daemon's torch thread count, so the
work is the same and the updates are bit-identical (checked every repetition).

Printed: median seconds per role for each, ``overhead_ratio`` = median over
repetitions of (worker time / in-process time in the same repetition) - 1
(target <= 0.10), the worker's one-time start (process, jail, torch import,
data load; paid at node start, not per role), and ``load_avg_1m``.

    .venv/bin/python bench/worker.py --task digits-cnn --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import trio

from flocknode.learning import Learner, TrainingSettings, load_task, write_shards
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.sandbox import WorkerSpec


async def _role(learner: Any, init: dict[str, torch.Tensor], seed: int) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = await learner.train_async(init, seed=seed)
    await learner.evaluate_async(init, "val")
    return time.perf_counter() - t0, res.update


async def run(
    task: str, reps: int, node_index: int, num_nodes: int, threads: int
) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    settings = TrainingSettings(task=task)
    out: dict[str, Any] = {"task": task, "reps": reps, "threads": threads}
    out["local_steps"] = settings.local_steps
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        data = write_shards(load_task(task), Path(tmp) / "data", num_nodes).nodes[node_index]
        local = Learner.from_settings(settings, data)
        local.warm_up()
        init = local.initial_state()
        out["train_samples"] = local.sizes.train
        workers: dict[str, IsolatedLearner] = {}
        for iso in ("namespace", "process"):
            spec = WorkerSpec(
                iso,  # type: ignore[arg-type]
                os.path.join(tmp, iso),
                read_only=(str(data),),
                threads=threads,
            )
            w = IsolatedLearner.from_settings(settings, str(data), None, spec, timeout=600)
            t0 = time.perf_counter()
            await w.warm_up_async()
            out[f"{iso}_start_s"] = round(time.perf_counter() - t0, 3)
            workers[iso] = w
        times: dict[str, list[float]] = {"in_process": [], **{k: [] for k in workers}}
        ratios: dict[str, list[float]] = {k: [] for k in workers}
        for rep in range(reps):
            base, want = await _role(local, init, seed=rep)
            times["in_process"].append(base)
            for iso, w in workers.items():
                t, got = await _role(w, init, seed=rep)
                if not all(torch.equal(got[k], want[k]) for k in want):
                    raise SystemExit(f"{iso}: update differs from in-process at rep {rep}")
                times[iso].append(t)
                ratios[iso].append(t / base - 1)
        for w in workers.values():
            w.close()
    for k, v in times.items():
        out[f"{k}_role_s"] = round(statistics.median(v), 4)
    for k, v in ratios.items():
        out[f"{k}_overhead_ratio"] = round(statistics.median(v), 4)
    out["bit_identical"] = True
    out["load_avg_1m"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="digits-mlp", help="digits-mlp or digits-cnn")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--node-index", type=int, default=0)
    ap.add_argument("--num-nodes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (0: default)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    res = trio.run(run, a.task, a.reps, a.node_index, a.num_nodes, a.threads)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}", file=sys.stdout)


if __name__ == "__main__":
    main()
