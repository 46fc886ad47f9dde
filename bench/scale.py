"""What the protocol costs as models grow, and what compression saves: real clusters.

    .venv/bin/python bench/scale.py [--sizes 1,25] [--compressions none,int8,topk]
        [--nodes 6] [--rounds 3] [--digits-rounds 20] [--skip-digits] [--keep] [--json]
        [--optimizer adam|sgd] [--topk-fraction 0.01] [--shape wide|deep]

For each model size (the built-in ``wide-mlp-<mb>mb`` tasks: the digits data
through one wide hidden layer, two local steps a round, so the protocol
dominates; with ``--shape deep`` the ``deep-mlp-<mb>mb`` tasks, eight hidden
layers of one width, whose largest tensor is 14% of the model, not 85%) and
each compression, one local cluster (``cluster up`` with the nodes' task
code in-process), then ``digits-cnn`` with 10 nodes over
``--digits-rounds`` rounds for each compression (the accuracy side). Top-k is
``--topk-fraction`` (default 1%) at 2 bits. Each case records:

- ``update_bytes`` (one sealed update), ``bytes_sent_per_node`` (median over
  rounds of what the nodes served, blobs and models, divided by the nodes);
- from the nodes' journals, medians over proposers or voters and rounds:
  ``train_s_median``, ``seal_s_median`` (packing, error feedback, encrypting,
  storing), ``transfer_s_median`` (a voter's longest fetch of a blob of the
  round, first attempt to arrival; the fetches run side by side),
  ``open_s_median`` (a voter's decrypting, parsing and decoding, summed over
  its seats), ``aggregate_s_median`` (the norm check and the rule),
  ``eval_s_median`` (scoring), ``chain_s_median`` (a node's own transactions
  of the round until mined: submitUpdate, or commitVote plus revealVote);
  ``round_s_median`` (from the monitor seeing the round open to its
  finalization; the rest of a round is waiting for a phase to end);
- ``idle_rss_mb`` (the largest node RSS once every node is up, before round
  1) and ``peak_rss_mb_max`` (the largest node peak RSS, VmHWM, at the end),
  also over the nodes that proposed in some round (``peak_rss_mb_proposers``:
  training, the optimizer's state included: Adam's two moments, SGD's momentum) and
  those that only voted
  (``peak_rss_mb_voters_only``; ``null`` when every node proposed);
  ``above_idle_models_max`` (each node's peak minus its own idle RSS, in
  model sizes, the largest over the nodes: docs/tasks.md sets 3 as the
  bound), and the same over proposers and over nodes that only voted
  (``above_idle_models_proposers``, ``above_idle_models_voters_only``);
- ``accuracy`` (the last round's test accuracy), ``rounds_finalized``,
  ``rounds_accepted``, ``slashed``.

The nodes get no test split (``ClusterSpec.node_test_split``): the
monitor's evaluation of each global model is the accuracy, and ten nodes
evaluating it too would add ten test passes to each round's load, which a
participant, who has no test split, never runs.

The phase lengths grow with the model (``--seconds-per-mb``), so a large
model's transfers fit in them. Prints one JSON object with ``--json``: its
``"cases"`` list holds one object per case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import journal, peak_rss_mb
from flocknode.cluster.launcher import ClusterSpec, create_cluster, down, node_status, start_node
from flocknode.cluster.monitor import Monitor

COMPRESSION = {
    "none": (),
    "int8": (("aggregation", "compression", "int8"),),
    "topk": (
        ("aggregation", "compression", "topk"),
        ("aggregation", "topk_fraction", 0.01),
        ("aggregation", "topk_bits", 2),
    ),
}


# journal notes: the proposer's training and sealing, the voter's fetching, opening
# (decrypt, parse, decode; summed over seats), aggregation and scoring
WORK = (
    "train_seconds",
    "seal_seconds",
    "transfer_seconds",
    "open_seconds",
    "aggregate_seconds",
    "eval_seconds",
)
# and the role's transactions of the round, summed into "chain"
CHAIN = ("submit_seconds", "commit_seconds", "reveal_seconds")


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def _peak(xs: list[float]) -> float | None:
    return round(max(xs), 1) if xs else None


def _above_idle(
    peaks: dict[str, float], idle_of: dict[str, float], proposed: set[str], model_mb: float
) -> dict[str, float | None]:
    """Each node's peak minus its own idle RSS, in model sizes: the largest over
    all nodes, over those that proposed and over those that only voted (``None``
    for a model under 1 MB, whose size is no measure of a node's memory)."""
    above = {k: (peaks[k] - idle_of[k]) / model_mb for k in peaks}

    def worst(names: list[str]) -> float | None:
        return round(max(above[k] for k in names), 2) if names and model_mb >= 1 else None

    return {
        "above_idle_models_max": worst(list(above)),
        "above_idle_models_proposers": worst([k for k in above if k in proposed]),
        "above_idle_models_voters_only": worst([k for k in above if k not in proposed]),
    }


def run_case(
    task: str,
    model_mb: float,
    compression: str,
    nodes: int,
    rounds: int,
    seconds: int,
    log: Any,
    keep: bool = False,
    optimizer: str = "",
    topk_fraction: float = 0.01,
) -> dict[str, Any]:
    overrides = [o for o in COMPRESSION[compression] if o[1] != "topk_fraction"]
    if compression == "topk":
        overrides.append(("aggregation", "topk_fraction", topk_fraction))
    if optimizer:
        overrides.append(("training", "optimizer", optimizer))
    spec = ClusterSpec(
        nodes=nodes,
        rounds=rounds,
        task=task,
        isolation="none",
        train_seconds=20 + seconds,
        commit_seconds=15 + seconds,
        reveal_seconds=10,
        node_test_split=False,  # the monitor's evaluation is the accuracy; none on the nodes
        settings_overrides=tuple(overrides),
    )
    workdir = Path(tempfile.mkdtemp(prefix="flocknode-scale-"))
    t0 = time.monotonic()
    log(f"case {task} {compression}: {nodes} nodes, {rounds} rounds")
    state = create_cluster(workdir / "cluster", spec, progress=lambda line: None)
    try:
        for n in state.nodes:
            start_node(state, n.name)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
            node_status(n).status is not None for n in state.nodes
        ):
            time.sleep(0.5)
        idle_of = {n.name: peak_rss_mb(n.pid, "VmRSS") for n in state.nodes}
        monitor = Monitor(state, progress=log)
        finished = monitor.run(timeout=120 + (60 + 3 * seconds) * rounds)
        peaks = {n.name: peak_rss_mb(n.pid) for n in state.nodes}
        proposed = {
            n.name
            for n in state.nodes
            for s in monitor.rounds
            if journal(Path(n.data_dir), s.round).get("role") == "proposer"
        }
        work: dict[str, list[float]] = {k: [] for k in (*WORK, "chain_seconds")}
        for s in monitor.rounds:
            notes = [journal(Path(n.data_dir), s.round).get("notes", {}) for n in state.nodes]
            for k in WORK:
                work[k] += [float(x[k]) for x in notes if k in x]
            work["chain_seconds"] += [
                sum(float(x[k]) for k in CHAIN if k in x)
                for x in notes
                if any(k in x for k in CHAIN)
            ]
        last = monitor.rounds[-1] if monitor.rounds else None
        return {
            "task": task,
            "model_mb": model_mb,
            "compression": compression,
            "topk_fraction": topk_fraction if compression == "topk" else None,
            "optimizer": optimizer or "task's",
            "nodes": nodes,
            "rounds": rounds,
            "finished": finished,
            "rounds_finalized": len(monitor.rounds),
            "rounds_accepted": sum(1 for s in monitor.rounds if s.accepted),
            "accuracy": last.accuracy if last else None,
            "update_bytes": monitor.update_bytes,
            "bytes_sent_per_node": _median([s.bytes_sent / nodes for s in monitor.rounds]),
            **{f"{k.removesuffix('_seconds')}_s_median": _median(v) for k, v in work.items()},
            "round_s_median": _median([s.seconds for s in monitor.rounds]),
            "idle_rss_mb": round(max(idle_of.values()), 1),
            "peak_rss_mb_max": round(max(peaks.values()), 1),
            "peak_rss_mb_proposers": _peak([v for k, v in peaks.items() if k in proposed]),
            "peak_rss_mb_voters_only": _peak([v for k, v in peaks.items() if k not in proposed]),
            **_above_idle(peaks, idle_of, proposed, model_mb),
            "slashed": sum(len(s.slashed) for s in monitor.rounds),
            "seconds": round(time.monotonic() - t0, 1),
        }
    finally:
        down(state)
        if keep:
            log(f"case {task} {compression}: nodes' data dirs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,25", help="model sizes in MB: 1, 25, 100")
    p.add_argument(
        "--shape",
        choices=["wide", "deep"],
        default="wide",
        help="wide-mlp (one hidden layer, 85%% of the model in one tensor) or deep-mlp "
        "(8 hidden layers, the largest tensor 14%%)",
    )
    p.add_argument("--compressions", default="none,int8,topk")
    p.add_argument("--nodes", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds-per-mb", type=float, default=0.4, help="added to train/commit")
    p.add_argument("--digits-rounds", type=int, default=20)
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep each case's cluster directory")
    p.add_argument("--topk-fraction", type=float, default=0.01, help="top-k's share (2 bits)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="the sized tasks' (default: Adam)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    compressions = [c for c in args.compressions.split(",") if c]
    cases = []
    for mb in [int(x) for x in args.sizes.split(",") if x]:
        for c in compressions:
            extra = int(args.seconds_per_mb * mb)
            task = f"{args.shape}-mlp-{mb}mb"
            cases.append(
                run_case(
                    task,
                    mb,
                    c,
                    args.nodes,
                    args.rounds,
                    extra,
                    log,
                    args.keep,
                    args.optimizer,
                    args.topk_fraction,
                )
            )
    if not args.skip_digits:
        for c in compressions:
            cases.append(
                run_case(
                    "digits-cnn",
                    0.04,
                    c,
                    10,
                    args.digits_rounds,
                    0,
                    log,
                    args.keep,
                    topk_fraction=args.topk_fraction,
                )
            )
    if args.json:
        print(json.dumps({"cases": cases}))
    else:
        for case in cases:
            print(json.dumps(case))


if __name__ == "__main__":
    main()
