"""Benchmark lm-lora on a real local cluster: held-out loss per round, update vs model size.

    .venv/bin/python bench/lora.py --nodes 5 --rounds 5 [--json]

The issue 11 target: with 4-6 nodes and 5 rounds, the held-out loss after the
last accepted round is lower than the initial model's, and one sealed update
(the LoRA adapters) is at most 2% of the full model's canonical bytes. The
cluster is ``flocknode cluster up --task lm-lora``'s: a tiny random GPT-2
written to disk, pinned by its directory hash, and the synthetic instruction
corpus sharded Dirichlet(0.5) into each node's JSONL files. Needs the llm extra.
Prints one JSON object with --json.
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

from flocknode.cluster.launcher import ClusterSpec, create_cluster, down, start_node
from flocknode.cluster.monitor import Monitor


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the cluster directory")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
