"""Resource growth of a local cluster over many rounds: what an operator running for weeks sees.

    .venv/bin/python bench/soak.py --nodes 4 --rounds 60 [--json]

Starts a real local cluster (anvil, ``--nodes`` node processes, the demo task)
and lets it run ``--rounds`` rounds. After every finalized round it samples,
per node: resident memory (VmRSS), open file descriptors, threads, bytes and
files in the content store, and round files in the journal. It prints the
samples and, per quantity, the growth per round fitted over the second half of
the run (after warm-up: imports, first model, caches filling), summed over the
nodes. A daemon that holds steady shows slopes near zero; anything that grows
with every round (a table keyed by round or peer, an undeleted file) shows a
slope that, multiplied by the rounds of a few weeks, tells whether it matters.
Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
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
from flocknode.chain.types import Phase
from flocknode.cluster.launcher import ClusterSpec, create_cluster, down, start_node

QUANTITIES = ("rss_mb", "fds", "threads", "store_mb", "store_files", "journal_files")


def _proc_status(pid: int) -> dict[str, float]:
    out = {"rss_mb": 0.0, "threads": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                out["threads"] = float(line.split()[1])
    except OSError:
        pass
    return out


def _count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _dir_usage(path: Path, pattern: str = "*") -> tuple[int, int]:
    """Files and bytes; a file the node deletes while we look (pruning) is skipped."""
    count = size = 0
    for p in path.glob(pattern):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if p.is_file():
            count, size = count + 1, size + st.st_size
    return count, size


def sample(data_dir: Path, pid: int) -> dict[str, float]:
    store_files, store_bytes = _dir_usage(data_dir / "store")
    journal_files, _ = _dir_usage(data_dir / "journal", "round-*.json")
    return {
        **_proc_status(pid),
        "fds": float(_count_fds(pid)),
        "store_mb": store_bytes / 1e6,
        "store_files": float(store_files),
        "journal_files": float(journal_files),
    }


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares growth of ys per unit of xs; None with fewer than 3 points."""
    if len(xs) < 3 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = ClusterSpec(
        nodes=args.nodes,
        rounds=args.rounds,
        train_seconds=args.train_seconds,
        commit_seconds=args.train_seconds,
        reveal_seconds=max(5, args.train_seconds // 2),
    )
    workdir = Path(tempfile.mkdtemp(prefix="flocknode-soak-"))
    t0 = time.monotonic()
    state = create_cluster(workdir / "cluster", spec, progress=lambda line: None)
    samples: list[dict[str, Any]] = []
    try:
        for n in state.nodes:
            start_node(state, n.name)
        conn = ChainConnection(state.rpc_url, None, expected_chain_id=state.chain_id)
        client = TaskClient(conn, state.task)
        deadline = time.monotonic() + 120 + 150 * args.rounds
        ended: set[int] = set()
        while len(ended) < args.rounds and time.monotonic() < deadline:
            cur = client.current_round()
            for r in range(max(1, cur - 2), cur + 1):
                if r in ended:
                    continue
                phase = client.get_round(r).phase
                if phase in (Phase.FINALIZED, Phase.VOIDED):
                    ended.add(r)
                    per_node = {n.name: sample(Path(n.data_dir), n.pid) for n in state.nodes}
                    samples.append(
                        {
                            "round": r,
                            "voided": phase is Phase.VOIDED,
                            "t": round(time.monotonic() - t0, 1),
                            "nodes": per_node,
                        }
                    )
                    if not args.json:
                        total = {q: sum(s[q] for s in per_node.values()) for q in QUANTITIES}
                        print(f"round {r:4} " + " ".join(f"{q} {v:.1f}" for q, v in total.items()))
            time.sleep(0.5)
    finally:
        down(state)
        shutil.rmtree(workdir, ignore_errors=True)
    half = samples[len(samples) // 2 :]
    growth = {
        q: slope(
            [float(s["round"]) for s in half],
            [sum(v[q] for v in s["nodes"].values()) for s in half],
        )
        for q in QUANTITIES
    }
    return {
        "nodes": args.nodes,
        "rounds_requested": args.rounds,
        "rounds_ended": len(samples),
        "rounds_voided": sum(1 for s in samples if s["voided"]),
        "seconds": round(time.monotonic() - t0, 1),
        "growth_per_round_all_nodes": {
            q: (round(v, 4) if v is not None else None) for q, v in growth.items()
        },
        "first": {q: round(sum(v[q] for v in samples[0]["nodes"].values()), 1) for q in QUANTITIES}
        if samples
        else None,
        "last": {q: round(sum(v[q] for v in samples[-1]["nodes"].values()), 1) for q in QUANTITIES}
        if samples
        else None,
        "samples": samples,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--train-seconds", type=int, default=15, help="phase length (the task's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "samples":
                print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
