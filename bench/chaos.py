"""A long run under faults next to a fault-free run of the same length.

    .venv/bin/python bench/chaos.py [--nodes 6] [--rounds 200] [--mix kill,pause]
        [--every 5] [--seed 0] [--skip-baseline] [--json]

Runs ``flocknode cluster up --json`` twice, as a tester would: once without
faults (the baseline), once with ``--chaos`` drawing one fault per ``--every``
rounds from ``--mix`` in turn (at most 20 of a kind, the spec's cap). Prints,
for each run, the rounds finalized, voided and accepted, the median and 95th
percentile round time, the last round's test accuracy, the peak memory of a
node and the slashes (every node is honest); for the chaos run also the
faults injected and every invariant (docs/protocol.md, "Faults and the
promises kept under them"); and the ratios
of the chaos run's round times to the baseline's. ``--skip-baseline`` runs
the chaos run alone (half the time; ``"baseline"`` is null and there are no
ratios). Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flocknode.cluster.chaos import KINDS, MAX_FAULTS

ROOT = Path(__file__).resolve().parents[1]


def chaos_spec(mix: list[str], rounds: int, every: int) -> str:
    """One fault per ``every`` rounds over the rounds the chaos may use
    (2 .. rounds - 1), kinds of ``mix`` in turn, each capped at MAX_FAULTS."""
    total = max(1, (rounds - 2) // every)
    counts = {k: 0 for k in mix}
    for i in range(total):
        k = mix[i % len(mix)]
        if counts[k] < MAX_FAULTS:
            counts[k] += 1
    return ",".join(f"{k}={n}" for k, n in counts.items() if n)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cluster_run(args: argparse.Namespace, chaos: str | None, workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--json"]
    cmd += ["--dir", str(workdir), "--nodes", str(args.nodes), "--rounds", str(args.rounds)]
    cmd += ["--isolation", args.isolation]
    if chaos:
        cmd += ["--chaos", chaos, "--chaos-seed", str(args.seed)]
    label = f"chaos {chaos}" if chaos else "fault-free"
    print(f"{label}: {args.nodes} nodes, {args.rounds} rounds ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    try:
        s = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"error": f"cluster up exited {done.returncode}: {' | '.join(tail)}"}
    rounds = s["rounds"]
    final = [r for r in rounds if not r["voided"]]
    times = [r["seconds"] for r in final]
    rss = [u["rss_mb"] for r in final for u in r.get("usage", {}).values()]
    out: dict[str, Any] = {
        "ok": s["ok"],
        "exit": done.returncode,
        "seconds": round(seconds, 1),
        "finalized": len(final),
        "voided": len(rounds) - len(final),
        "accepted": sum(1 for r in final if r["accepted"]),
        "round_s_median": round(statistics.median(times), 2) if times else None,
        "round_s_p95": round(percentile(times, 0.95), 2) if times else None,
        "last_metric": final[-1]["metric"] if final else None,
        "peak_rss_mb": max(rss) if rss else None,
        # every node of these runs is honest: each slash is one of an honest node
        "slashes": sum(len(r["slashed"]) for r in final),
        "rounds_with_slashes": sum(1 for r in final if r["slashed"]),
    }
    if chaos:
        out["chaos"] = s.get("chaos")
        out["invariants"] = s.get("invariants")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--mix", default="kill,pause", help=f"fault kinds in turn ({', '.join(KINDS)})")
    ap.add_argument("--every", type=int, default=5, help="one fault per this many rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--isolation", default="none", choices=("namespace", "process", "none"))
    ap.add_argument("--skip-baseline", action="store_true", help="only the run under faults")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    mix = [k.strip() for k in args.mix.split(",") if k.strip()]
    unknown = [k for k in mix if k not in KINDS]
    if unknown or not mix or args.rounds < 4 or args.every < 1:
        print(f"--mix {args.mix!r}: known kinds {', '.join(KINDS)}; --rounds >= 4", file=sys.stderr)
        return 2
    spec = chaos_spec(mix, args.rounds, args.every)
    with tempfile.TemporaryDirectory(prefix="flocknode-chaos-bench-") as tmp:
        base = None if args.skip_baseline else cluster_run(args, None, Path(tmp) / "baseline")
        chaos = cluster_run(args, spec, Path(tmp) / "chaos")
    ratios = {}
    for key in ("round_s_median", "round_s_p95"):
        if base and base.get(key) and chaos.get(key):
            ratios[key] = round(chaos[key] / base[key], 2)
    result = {
        "bench": "chaos",
        "nodes": args.nodes,
        "rounds": args.rounds,
        "spec": spec,
        "seed": args.seed,
        "baseline": base,
        "chaos": chaos,
        "chaos_over_baseline": ratios,
        "invariants_hold": bool(chaos.get("invariants"))
        and all(c["ok"] for c in chaos["invariants"].values()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0 if result["invariants_hold"] else 1


if __name__ == "__main__":
    sys.exit(main())
