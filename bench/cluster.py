"""Benchmark a real local cluster: accuracy per round, round overhead, memory.

    .venv/bin/python bench/cluster.py --nodes 10 --rounds 10 [--rule median]
        [--byzantine 3:sign_flip] [--json]

Round overhead (issue 4) = a round's wall time minus the slowest proposer's
training and the slowest voter's evaluation (and aggregation). Wall time of
round r = finalization of r minus finalization of r-1 (round 1: from its
opening), from the block timestamps of the chain's events (1 s resolution, so
medians over many rounds). Training and evaluation seconds come from the
nodes' journals. Memory is the sum of the node processes' peak RSS (VmHWM).
Prints one JSON object with --json.
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

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.events import RoundFinalized, RoundOpened, Slashed
from flocknode.cluster.launcher import (
    ClusterSpec,
    create_cluster,
    down,
    parse_byzantine,
    start_node,
)
from flocknode.cluster.monitor import Monitor


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's peak RSS in MB (``field="VmRSS"``: its current RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def journal(node_dir: Path, r: int) -> dict[str, Any]:
    p = node_dir / "journal" / f"round-{r}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = ClusterSpec(
        nodes=args.nodes,
        rounds=args.rounds,
        rule=args.rule,
        byzantine=tuple(parse_byzantine(args.byzantine)),
    )
    workdir = Path(tempfile.mkdtemp(prefix="flocknode-bench-"))
    t0 = time.monotonic()
    state = create_cluster(workdir / "cluster", spec, progress=lambda line: None)
    try:
        for n in state.nodes:
            start_node(state, n.name)
        monitor = Monitor(state, progress=(lambda line: None) if args.json else print)
        finished = monitor.run(timeout=120 + 150 * args.rounds)
        rss = {n.name: peak_rss_mb(n.pid) for n in state.nodes}
        conn = ChainConnection(state.rpc_url, None, expected_chain_id=state.chain_id)
        client = TaskClient(conn, state.task)
        events = client.events(0)
        ts = {}

        def block_time(block: int) -> int:
            if block not in ts:
                ts[block] = int(conn.rpc.get_block(block)["timestamp"])
            return ts[block]

        finalized = {
            e.round: block_time(e.block_number) for e in events if isinstance(e, RoundFinalized)
        }
        opened = {e.round: block_time(e.block_number) for e in events if isinstance(e, RoundOpened)}
        byzantine = {n.wallet for n in state.nodes if n.behaviour != "honest"}
        rounds = []
        for s in monitor.rounds:
            r = s.round
            start = finalized.get(r - 1, opened.get(r))
            wall = finalized[r] - start if r in finalized and start is not None else None
            trains = [
                journal(Path(n.data_dir), r).get("notes", {}).get("train_seconds", 0.0)
                for n in state.nodes
            ]
            evals = [
                sum(
                    journal(Path(n.data_dir), r).get("notes", {}).get(k, 0.0)
                    for k in ("aggregate_seconds", "eval_seconds")
                )
                for n in state.nodes
            ]
            work = max(trains) + max(evals)
            cheaters_proposing = [p for p in s.proposers if state.node(p).wallet in byzantine]
            slashed_cheaters = [x for x in s.slashed if state.node(x).wallet in byzantine]
            rounds.append(
                {
                    **s.to_json(),
                    "wall_seconds": wall,
                    "max_train_seconds": round(max(trains), 3),
                    "max_eval_seconds": round(max(evals), 3),
                    "overhead_seconds": round(wall - work, 3) if wall is not None else None,
                    "cheaters_proposing": cheaters_proposing,
                    "cheaters_slashed": slashed_cheaters,
                }
            )
        overheads = [r["overhead_seconds"] for r in rounds if r["overhead_seconds"] is not None]
        acc = {r["round"]: r["accuracy"] for r in rounds}
        return {
            "nodes": args.nodes,
            "rounds": args.rounds,
            "rule": args.rule,
            "byzantine": args.byzantine,
            "finished": finished,
            "initial_accuracy": monitor.initial_accuracy,
            "accuracy_round_5": acc.get(5),
            "accuracy_round_10": acc.get(10),
            "accuracy_final": rounds[-1]["accuracy"] if rounds else None,
            "accepted_rounds": sum(1 for r in rounds if r["accepted"]),
            "round_overhead_median_s": statistics.median(overheads) if overheads else None,
            "round_wall_median_s": statistics.median(
                [r["wall_seconds"] for r in rounds if r["wall_seconds"] is not None] or [0]
            ),
            "peak_rss_total_mb": round(sum(rss.values()), 1),
            "peak_rss_max_node_mb": round(max(rss.values()), 1),
            "slashed_events": sum(1 for e in events if isinstance(e, Slashed)),
            "seconds": round(time.monotonic() - t0, 1),
            "per_round": rounds,
        }
    finally:
        down(state)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--rule", default="fedavg")
    p.add_argument("--byzantine", action="append", default=[])
    p.add_argument("--keep", action="store_true", help="keep the cluster directory")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "per_round":
                print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
