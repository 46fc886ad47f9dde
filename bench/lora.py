"""Benchmark lm-lora on a real local cluster: held-out loss per round, update vs model size.

    .venv/bin/python bench/lora.py --nodes 5 --rounds 5 [--json]

The issue 11 target: with 4-6 nodes and 5 rounds, the held-out loss after the
last accepted round is lower than the initial model's, and one sealed update
(the LoRA adapters) is at most 2% of the full model's canonical bytes. The
cluster is ``flocknode cluster up --task lm-lora``'s: a tiny random GPT-2
written to disk, pinned by its directory hash, and the synthetic instruction
corpus sharded Dirichlet(0.5) into each node's JSONL files. Needs the llm extra.
Prints one JSON object with --json.

    .venv/bin/python bench/lora.py --probe 4,5,6 --rounds 10 --seeds 0,1 --json

``--probe NODES`` runs no cluster: it measures, in process, what a voter's
flag sees (inputs for lm-lora's ``flag_threshold_ppm``; about 4 minutes on one
thread). On ``cluster up``'s files (the tiny model, the corpus sharded as the
launcher shards it, with partition seed ``s`` for each of ``--seeds``) and the
task's tester settings, for each node count of ``NODES``, every node trains
from the global model each round, and each update is applied alone to the
global model and scored on every other node's validation split, as
``flocknode.rounds.voter`` does: ``gain`` = ppm after minus ppm before (score =
minus the validation loss). The same is done for the updates a test
cluster's cheater sends in place of the honest one
(``flocknode.rounds.byzantine.tamper_update``); ``label_flip`` is for
classifiers only. The next global model is the task's aggregation of the
round's honest updates. It reports the gains' quantiles per kind (overall,
from round 2 on, per round) and, for each candidate threshold, the share of
each kind it would flag (``gain < threshold``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.accuracy import _norm, _quantiles
from flocknode.aggregation import aggregate, apply_update
from flocknode.aggregation.core import step_scale
from flocknode.cluster.launcher import ClusterSpec, create_cluster, down, start_node
from flocknode.cluster.monitor import Monitor
from flocknode.learning import Learner, TaskSettings
from flocknode.learning.base_model import dir_hash
from flocknode.learning.data import min_shard_for, write_shards
from flocknode.learning.lm_lora import LMLoRA
from flocknode.rounds.byzantine import Behaviour, tamper_update

# the cheats that replace the update (label_flip trains on permuted labels: classifiers only)
PROBED_CHEATS = (Behaviour.SIGN_FLIP, Behaviour.ZERO_UPDATE, Behaviour.GAUSSIAN_NOISE)


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = ClusterSpec(nodes=args.nodes, rounds=args.rounds, task="lm-lora")
    work = Path(tempfile.mkdtemp(prefix="flocknode-bench-lora-"))
    t0 = time.monotonic()
    state = create_cluster(work / "cluster", spec, progress=lambda _: None)
    try:
        for n in state.nodes:
            start_node(state, n.name)
        monitor = Monitor(state, progress=lambda line: print(line, file=sys.stderr))
        per_round = 60 + 3 * (spec.train_seconds + spec.commit_seconds + spec.reveal_seconds)
        finished = monitor.run(timeout=90 + per_round * spec.rounds)
    finally:
        down(state)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rounds = [r for r in monitor.rounds if not r.voided]
    accepted = [r for r in rounds if r.accepted]
    final = accepted[-1].metric if accepted else monitor.initial_metric
    ratio = monitor.update_bytes / monitor.model_bytes
    initial = monitor.initial_metric
    lower = initial is not None and final is not None and final < initial
    return {
        "task": "lm-lora",
        "nodes": args.nodes,
        "rounds": args.rounds,
        "finished": finished,
        "accepted_rounds": [r.round for r in accepted],
        "initial_test_loss": initial,
        "test_loss_after_last_accepted": final,
        "test_loss_per_round": [r.metric for r in rounds],
        "update_bytes": monitor.update_bytes,
        "model_bytes": monitor.model_bytes,
        "update_to_model": round(ratio, 5),
        "target_met": bool(finished and accepted and lower and ratio <= 0.02),
        "seconds": round(time.monotonic() - t0, 1),
    }


def probe(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    counts = [int(x) for x in args.probe.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    spec = ClusterSpec(task="lm-lora")
    t0 = time.monotonic()
    gains: list[tuple[str, int, int]] = []  # (kind, round, gain ppm)
    norms: list[float] = []
    loss: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="flocknode-bench-lora-probe-") as tmp:
        base_dir = Path(tmp) / "base-model"
        task = LMLoRA()
        task.write_base_model(base_dir)
        training = {"task": "lm-lora", **LMLoRA.tester_training}
        training["base_model_hash"] = dir_hash(base_dir)
        settings = TaskSettings.from_dict({"training": training})  # as the launcher builds it
        t = settings.training
        min_shard = min_shard_for(t.val_fraction, t.min_val_samples)
        for n in counts:
            for seed in seeds:
                d = Path(tmp) / f"data-{n}-{seed}"
                shards = write_shards(task, d, n, spec.split, spec.alpha, seed, min_shard=min_shard)
                learners = [
                    Learner.from_settings(t, node, shards.test, base_model=base_dir)
                    for node in shards.nodes
                ]
                losses = _probe_rounds(learners, settings, args.rounds, seed, gains, norms)
                loss[f"{n}-{seed}"] = [round(x, 3) for x in losses]
    kinds = ["honest", *(b.value for b in PROBED_CHEATS)]
    by_kind = {k: [g for kind, _, g in gains if kind == k] for k in kinds}
    later = {k: [g for kind, r, g in gains if kind == k and r > 1] for k in kinds}
    honest_min = min(by_kind["honest"])
    candidates = sorted(
        {honest_min, settings.flag_threshold_ppm, *(-k * 100_000 for k in range(1, 11))}
    )

    def shares(samples: dict[str, list[int]]) -> dict[str, dict[str, float]]:
        return {
            str(c): {k: round(sum(g < c for g in v) / len(v), 4) for k, v in samples.items()}
            for c in candidates
        }

    return {
        "task": "lm-lora",
        "probe_nodes": counts,
        "rounds": args.rounds,
        "seeds": seeds,
        "training": {k: getattr(t, k) for k in ("local_steps", "batch_size", "learning_rate")},
        "val_fraction": t.val_fraction,
        "samples_per_kind": len(by_kind["honest"]),
        "gain_ppm_quantiles": {k: _quantiles(v) for k, v in by_kind.items()},
        "gain_ppm_quantiles_from_round_2": {k: _quantiles(v) for k, v in later.items() if v},
        "gain_ppm_quantiles_per_round": {
            str(r): {
                k: _quantiles([g for kind, q, g in gains if kind == k and q == r]) for k in kinds
            }
            for r in range(1, args.rounds + 1)
        },
        "honest_norm_over_scale": {k: round(v, 3) for k, v in _quantiles(norms).items()},
        "test_loss_per_round": loss,
        "task_threshold_ppm": settings.flag_threshold_ppm,
        "flagged_share": shares(by_kind),
        "flagged_share_from_round_2": shares(later) if args.rounds > 1 else {},
        "highest_threshold_flagging_no_honest": honest_min,
        "seconds": round(time.monotonic() - t0, 1),
    }


def _probe_rounds(
    learners: list[Learner],
    settings: TaskSettings,
    rounds: int,
    seed: int,
    gains: list[tuple[str, int, int]],
    norms: list[float],
) -> list[float]:
    """FedAvg-like rounds of every node; appends each update's gain on every other
    node's validation split to ``gains``; returns node 0's test loss per round."""
    t = settings.training
    state = learners[0].initial_state()
    params = sum(v.numel() for v in state.values())
    scale = step_scale(t.optimizer, t.learning_rate, t.local_steps, params)
    losses = [learners[0].evaluate(state, "test").metrics["loss"]]
    for r in range(1, rounds + 1):
        before = [lr.evaluate(state, "val").ppm for lr in learners]
        honest = []
        for i, lr in enumerate(learners):
            train_seed = seed * 100_003 + r * 1_000 + i
            up = lr.train(state, seed=train_seed).update
            honest.append(up)
            norms.append(_norm(up) / scale if scale else _norm(up))
            sent = {
                "honest": up,
                **{b.value: tamper_update(b, up, train_seed) for b in PROBED_CHEATS},
            }
            for kind, u in sent.items():
                alone = apply_update(state, u)  # what the voter judges (flocknode.rounds.voter)
                for j, voter in enumerate(learners):
                    if j != i:
                        gains.append((kind, r, voter.evaluate(alone, "val").ppm - before[j]))
        state = aggregate(state, honest, settings.aggregation, scale=scale).model
        losses.append(learners[0].evaluate(state, "test").metrics["loss"])
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the cluster directory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", metavar="NODES", help="node counts, e.g. 4,5,6: no cluster")
    p.add_argument("--seeds", default="0,1,2", help="--probe: partition seeds")
    p.add_argument("--threads", type=int, default=1, help="--probe: torch threads")
    args = p.parse_args()
    result = probe(args) if args.probe else run(args)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
