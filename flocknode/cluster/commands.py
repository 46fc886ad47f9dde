"""The ``flocknode cluster`` subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flocknode.aggregation.settings import AggregationSettings, SettingsError
from flocknode.chain.types import RoundView
from flocknode.cluster.chaos import (
    Chaos,
    ChaosRunner,
    ChaosSpec,
    ChaosSpecError,
    invariants,
    parse_chaos,
)
from flocknode.cluster.churn import CHURN_KINDS, churn_invariants
from flocknode.cluster.launcher import (
    ClusterError,
    ClusterSpec,
    ClusterState,
    Stopped,
    _alive,
    create_cluster,
    down,
    kill_node,
    node_status,
    parse_byzantine,
    start_node,
)
from flocknode.cluster.monitor import Monitor, cluster_client
from flocknode.cluster.netns import can_create_namespaces
from flocknode.cluster.relay import Relays, parse_delay_ms
from flocknode.cluster.relay import start_for_cluster as start_relays
from flocknode.cluster.reorg import REORG_CONFIRMATIONS, reorg_invariants, tx_mined
from flocknode.cluster.rpcproxy import RpcProxies, start_for_cluster
from flocknode.rounds.byzantine import Behaviour

DEFAULT_DIR = "run/cluster"


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops ``cluster up`` as Ctrl-C does: its cluster is brought down
    (a background job of a non-interactive shell ignores SIGINT, and service
    managers send SIGTERM)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _compression(args: argparse.Namespace) -> tuple[tuple[str, str, Any], ...]:
    """The task's update compression (aggregation settings), when asked for; a
    value out of range raises ``SettingsError``."""
    if args.compression in (None, "none"):
        return ()
    values = {"compression": args.compression}
    if args.compression == "topk":
        values.update(topk_fraction=args.topk_fraction, topk_bits=args.topk_bits)
    AggregationSettings(**values)
    return tuple(("aggregation", k, v) for k, v in values.items())


def cmd_up(args: argparse.Namespace) -> int:
    try:
        compression = _compression(args)
    except SettingsError as e:
        _err(f"--{e.name.replace('_', '-')}: {e.message}")
        return 2
    spec = ClusterSpec(
        nodes=args.nodes,
        rounds=args.rounds,
        rule=args.rule,
        byzantine=tuple(parse_byzantine(args.byzantine)),
        proposers=args.proposers,
        voters=args.voters,
        task=args.task,
        task_package=args.task_package or "",
        isolation=args.isolation or "",
        settings_overrides=compression,
    )
    progress = _err if args.json else print
    try:
        chaos_spec = parse_chaos(args.chaos, args.chaos_seed) if args.chaos else None
    except ChaosSpecError as e:
        _err(str(e))
        return 2
    if chaos_spec is not None and args.keep and "rpc" in dict(chaos_spec.faults):
        _err("--chaos rpc: --keep would leave the nodes on RPC proxies that stop with cluster up")
        return 2
    kinds = dict(chaos_spec.faults) if chaos_spec is not None else {}
    try:
        delay = parse_delay_ms(args.latency_ms) if args.latency_ms else None
    except ValueError as e:
        _err(f"--latency-ms {e}")
        return 2
    latency = "latency" in kinds
    if latency and args.keep:
        _err("--chaos latency: --keep would leave the nodes dialed through relays that stop")
        return 2
    if latency and "partition" in kinds:
        # a partition cuts routes between the nodes' namespaces; relays on the
        # launcher's loopback would carry every link around the cut
        _err("--chaos latency and partition do not go together: pick one per run")
        return 2
    if chaos_spec is not None:
        # phases end early once everyone acted: longer deadlines cost time only
        # while a node is down or slowed, and give a node the chaos stopped (or
        # whose RPC it broke) room to come back and still submit, commit and reveal
        spec = dataclasses.replace(spec, train_seconds=40, commit_seconds=30, reveal_seconds=40)
        # a spare node per join, laid out but not registered (flocknode/cluster/churn.py)
        spec = dataclasses.replace(spec, spares=dict(chaos_spec.faults).get("join", 0))
    if chaos_spec is not None and "partition" in dict(chaos_spec.faults):
        refusal = can_create_namespaces()
        if refusal:
            _err(refusal)
            return 2
        spec = dataclasses.replace(spec, netns=True)  # each node in a namespace of its own
    if chaos_spec is not None and "reorg" in dict(chaos_spec.faults):
        spec = dataclasses.replace(spec, confirmations=REORG_CONFIRMATIONS)
    if latency:
        spec = dataclasses.replace(spec, relays=True)  # each node registers its relay
    t0 = time.monotonic()
    _interrupt_on_sigterm()
    state = create_cluster(Path(args.dir), spec, progress)
    proxies: RpcProxies | None = None
    relays: Relays | None = None
    try:
        if chaos_spec is not None and "rpc" in dict(chaos_spec.faults):
            proxies = start_for_cluster(state, chaos_spec.seed)  # every node behind its own
        if chaos_spec is not None and latency:
            relays = start_relays(state, chaos_spec.seed, delay)  # before the nodes dial them
        for n in state.nodes:
            if not n.spare:
                start_node(state, n.name)
        cheaters = [f"{n.name}={n.behaviour}" for n in state.nodes if n.behaviour != "honest"]
        progress(
            f"started {len([n for n in state.nodes if not n.spare])} nodes in {state.directory}"
            + (f" (byzantine: {', '.join(cheaters)})" if cheaters else "")
        )
        per_round = 60 + 3 * (spec.train_seconds + spec.commit_seconds + spec.reveal_seconds)
        summary = follow(
            state,
            Monitor(state, progress),
            chaos_spec,
            90 + per_round * spec.rounds,
            progress,
            rpc=proxies,
            relays=relays,
        )
        return _finish(summary, t0, args.json)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        if not args.keep:
            _report_down(down(state), progress)
        else:
            progress(f"cluster left running; stop it with: flocknode cluster down --dir {args.dir}")
        if proxies is not None:  # after the nodes: a stopping node may still talk to the chain
            proxies.close()
        if relays is not None:
            relays.close()


def cmd_chaos(args: argparse.Namespace) -> int:
    """Faults on a running cluster, over its next ``--rounds`` rounds."""
    progress = _err if args.json else print
    try:
        chaos_spec = parse_chaos(args.spec, args.chaos_seed)
        state = ClusterState.load(Path(args.dir))
    except (ChaosSpecError, ClusterError) as e:
        _err(str(e))
        return 2
    if not _alive(state.anvil_pid):
        _err(f"{args.dir}: the cluster's chain is not running (start one with: cluster up)")
        return 2
    if "rpc" in dict(chaos_spec.faults):
        _err(f"{args.dir}: rpc faults need the proxies of: cluster up --chaos rpc ...")
        return 2
    if "latency" in dict(chaos_spec.faults):
        # the relays live in cluster up's process, which --keep does not leave running
        _err(f"{args.dir}: latency faults need the relays of: cluster up --chaos latency ...")
        return 2
    spares = len([n for n in state.nodes if n.spare and not n.pid])
    if dict(chaos_spec.faults).get("join", 0) > spares:
        _err(
            f"{args.dir}: join needs a spare node per join and the cluster has {spares} "
            "(start it with: cluster up --chaos join ...)"
        )
        return 2
    if "partition" in dict(chaos_spec.faults) and not state.network:
        _err(
            f"{args.dir}: partition needs nodes in network namespaces "
            "(start the cluster with: cluster up --chaos partition ...)"
        )
        return 2
    monitor = Monitor(state, progress)
    current = monitor.client.current_round()
    left = monitor.client.params().total_rounds - current
    if left < args.rounds:
        _err(
            f"{args.dir}: the task has {max(left, 0)} rounds left after round {current}, "
            f"fewer than --rounds {args.rounds}"
        )
        return 2
    monitor.first_round, monitor.follow = current + 1, args.rounds
    progress(f"chaos {chaos_spec.text} over rounds {current + 1}-{current + args.rounds}")
    t0 = time.monotonic()
    try:
        summary = follow(state, monitor, chaos_spec, 120 + 200 * args.rounds, progress)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    return _finish(summary, t0, args.json)


def follow(
    state: ClusterState,
    monitor: Monitor,
    chaos_spec: ChaosSpec | None,
    timeout: float,
    progress: Callable[[str], None],
    rpc: RpcProxies | None = None,
    relays: Relays | None = None,
) -> dict[str, Any]:
    """Follow ``monitor``'s rounds, injecting ``chaos_spec``'s faults meanwhile;
    the summary, with the faults and the invariants if there was chaos."""
    rounds = monitor.follow or state.rounds
    chaos: ChaosRunner | None = None
    if chaos_spec is not None:
        chaos = ChaosRunner(
            Chaos(
                state,
                chaos_spec,
                rounds,
                progress,
                first_round=monitor.first_round,
                rpc=rpc,
                relays=relays,
            ),
            current_round_reader(state),
        )
        chaos.start()
    try:
        finished = monitor.run(timeout=timeout)
    finally:
        if chaos is not None:
            chaos.stop()
    summary = cluster_summary(state, monitor, finished)
    if chaos is not None:
        summary.update(chaos_summary(state, monitor, chaos.chaos))
        summary["ok"] = summary["ok"] and all(
            check["ok"] for check in summary["invariants"].values()
        )
    return summary


def _finish(summary: dict[str, Any], t0: float, as_json: bool) -> int:
    summary["seconds"] = round(time.monotonic() - t0, 1)
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0 if summary["ok"] else 1


def cluster_summary(state: ClusterState, monitor: Monitor, finished: bool) -> dict[str, Any]:
    """``cluster up``'s summary (``--json``): the rounds, the task and its package."""
    honest_live = [n for n in state.nodes if n.behaviour == "honest" and node_status(n).alive]
    rounds = [r for r in monitor.rounds if not r.voided]
    ok = finished and all(
        all(r.node_hashes.get(n.name) == r.model_after for n in honest_live) for r in rounds[-1:]
    )
    return {
        "ok": ok,
        "byzantine": [n.wallet for n in state.nodes if n.behaviour != "honest"],
        "byzantine_nodes": {n.name: n.behaviour for n in state.nodes if n.behaviour != "honest"},
        "initial_accuracy": monitor.initial_accuracy,
        "initial_metric": {"name": f"test_{monitor.metric}", "value": monitor.initial_metric},
        "rounds": [r.to_json() for r in monitor.rounds],
        "task": state.task_name,
        "task_package": monitor.learner.settings.task_package or None,
        "task_address": state.task,
        "model_bytes": monitor.model_bytes,
        "rpc_url": state.rpc_url,
        "directory": state.directory,
    }


def current_round_reader(state: ClusterState) -> Callable[[], RoundView | None]:
    """A reader of the chain's current round, with a connection of its own."""
    client = cluster_client(state)

    def read() -> RoundView | None:
        current = client.current_round()
        return client.get_round(current) if current else None

    return read


def chaos_summary(state: ClusterState, monitor: Monitor, chaos: Chaos) -> dict[str, Any]:
    """``--json``'s ``chaos`` (the faults injected) and ``invariants`` (each check)."""
    initial = "0x" + monitor.client.params().initial_model_hash.hex()
    rounds = [r.to_json() for r in monitor.rounds]
    checks = invariants(
        state,
        rounds,
        monitor.views,
        monitor.slash_events,
        chaos.faults,
        initial,
        {r.round: r.usage for r in monitor.rounds if not r.voided},
        monitor.keep_rounds,
        monitor.follow,
        frozenset(chaos.churn.gone()),
    )
    planned = {k: n for k, n in chaos.spec.faults if k in CHURN_KINDS}
    if planned:
        stopped = {(r, node) for f in chaos.faults for r in f.out_rounds for node in f.out_nodes}
        churn = chaos.churn
        checks |= churn_invariants(
            state, rounds, monitor.views, monitor.slash_events, churn, planned, stopped
        )
    honest = {n.name for n in state.nodes if n.behaviour == "honest"}
    checks.update(reorg_invariants(chaos.faults, monitor.views, tx_mined(state), honest))
    return {"chaos": chaos.to_json(), "invariants": checks}


def _print_summary(s: dict[str, Any]) -> None:
    print()
    print(f"round  accepted  {s['initial_metric']['name'][5:]:>8}  model       seconds  slashed")
    for r in s["rounds"]:
        value = r["metric"]["value"]
        acc = f"{value:.3f}" if value is not None else "  n/a"
        accepted = "void" if r["voided"] else ("yes" if r["accepted"] else "no")
        print(
            f"{r['round']:>5}  {accepted:<8}  {acc:>8}  {r['model_after'][:10]:<10}  "
            f"{r['seconds']:>7.1f}  {', '.join(r['slashed']) or '-'}"
        )
    if "chaos" in s:
        print()
        for f in s["chaos"]["faults"]:
            print(
                f"chaos: {f['kind']} {f['node']} ({f['role']} of round {f['round']}, "
                f"{f['phase']}) for {f['seconds']:.1f} s"
            )
        for name, check in s["invariants"].items():
            figures = {k: v for k, v in check.items() if k != "ok"}
            print(f"invariant {name}: {'ok' if check['ok'] else 'BROKEN'} {json.dumps(figures)}")
    print()
    print(
        "OK: every round finalized and every live honest node holds the final model"
        if s["ok"]
        else "NOT OK: see the node logs (flocknode cluster logs NODE)"
    )


def cmd_status(args: argparse.Namespace) -> int:
    state = ClusterState.load(Path(args.dir))
    rows: list[dict[str, Any]] = []
    for n in state.nodes:
        report = node_status(n)
        st = report.status
        rows.append(
            {
                "node": n.name,
                "wallet": n.wallet,
                "pid": n.pid,
                "behaviour": n.behaviour,
                "alive": report.alive,
                "round": st.round.number if st else None,
                "phase": st.round.phase if st else None,
                "role": st.round.role if st else None,
                "peers": list(st.p2p.peers) if st else None,
                "global_model_hash": st.model.global_hash if st else None,
            }
        )
    if args.json:
        print(json.dumps({"task": state.task, "rpc_url": state.rpc_url, "nodes": rows}))
        return 0
    print(f"task {state.task} on {state.rpc_url}")
    for r in rows:
        peers = len(r["peers"] or [])
        print(
            f"{r['node']:<8} {'up  ' if r['alive'] else 'DOWN'} round {r['round']} "
            f"{r['phase'] or '-':<11} {r['role'] or '-':<9} peers {peers}  {r['behaviour']}"
        )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = down(ClusterState.load(Path(args.dir)))
    _report_down(stopped, print)
    if any(s.running for s in stopped):
        return 1
    print("cluster stopped")
    return 0


def _report_down(stopped: list[Stopped], progress: Any) -> None:
    """One line per process that needed SIGKILL or survived it; clean exits are quiet."""
    for s in stopped:
        if s.running:
            progress(f"{s.name} (pid {s.pid}) is still running after SIGKILL")
        elif s.how == "killed":
            progress(f"{s.name} (pid {s.pid}) did not exit on SIGTERM: killed")


def cmd_kill(args: argparse.Namespace) -> int:
    n = kill_node(ClusterState.load(Path(args.dir)), args.node)
    print(f"{n.name} killed (SIGKILL)")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    n = start_node(ClusterState.load(Path(args.dir)), args.node)
    print(f"{n.name} started (pid {n.pid})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    n = ClusterState.load(Path(args.dir)).node(args.node)
    lines = n.layout.log_file.read_text(errors="replace").splitlines()
    print("\n".join(lines[-args.lines :]))
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("cluster", help="local multi-node clusters for testing")
    csub = c.add_subparsers(dest="cluster_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = csub.add_parser(name, help=help)
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"cluster directory ({DEFAULT_DIR})")
        p.set_defaults(handler=handler)
        return p

    p = add("up", "start anvil, deploy a task and run N nodes for R rounds", cmd_up)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--rule",
        default="fedavg",
        choices=["fedavg", "median", "trimmed_mean", "multi_krum", "centered_clip"],
    )
    p.add_argument(
        "--compression",
        choices=["none", "int8", "topk"],
        help="how proposers send updates (the task's aggregation.compression; default none)",
    )
    p.add_argument(
        "--topk-fraction",
        type=float,
        default=0.01,
        help="with --compression topk: the share of each chunk's values sent (0.01)",
    )
    p.add_argument(
        "--topk-bits",
        type=int,
        choices=[8, 2],
        default=8,
        help="with --compression topk: bits per value sent (8)",
    )
    p.add_argument(
        "--byzantine",
        action="append",
        default=[],
        metavar="K:BEHAVIOUR",
        help=f"K cheating nodes: {', '.join(Behaviour.names())} (repeatable)",
    )
    p.add_argument(
        "--task",
        default="digits-mlp",
        help="built-in task (digits-mlp, digits-cnn, lm-lora) or module:attr (with --task-package; "
        "default digits-mlp)",
    )
    p.add_argument(
        "--task-package",
        metavar="PATH",
        help="the task's code package for --task module:attr (a directory, .py, .whl or "
        "archive); every node but the last gets the file, the last fetches it by hash",
    )
    p.add_argument(
        "--isolation",
        choices=("namespace", "process", "none"),
        help="where the nodes run task code ([compute] isolation; default namespace: "
        "the jailed task worker)",
    )
    p.add_argument("--proposers", type=int, help="proposers per round (default: half the nodes)")
    p.add_argument("--voters", type=int, help="voters per round (default: half the nodes)")
    p.add_argument(
        "--chaos",
        metavar="SPEC",
        help="faults to inject, e.g. kill,pause or kill=2,pause=1: kill -9 and restart, or "
        "SIGSTOP and SIGCONT, an honest node holding a seat, one at a time, 5 s each; "
        "partition: cut a minority of the nodes off the rest for 30 s (root: each node runs "
        "in a network namespace); rpc: errors, timeouts, drops, 429s and stale answers from "
        "the node's RPC proxy for 20 s; join,leave: a spare node registers, starts and "
        "stakes, an honest node unstakes, withdraws and stops; reorg: replace the last 1-3 "
        "blocks after a seat holder's transaction; latency: 50-300 ms one way, jitter and "
        "TCP-like loss on a seat holder's p2p links for 10 s, through a relay in front of "
        "each node; the summary gains the faults and the invariants checked after them",
    )
    p.add_argument("--chaos-seed", type=int, default=0, help="seed of the chaos draws (0)")
    p.add_argument(
        "--latency-ms",
        metavar="LO-HI",
        help="one-way delay of a latency fault, drawn per fault (default 50-300)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary at the end")
    p.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    p = add(
        "chaos",
        "inject faults into a running cluster over its next rounds and check the invariants",
        cmd_chaos,
    )
    p.add_argument("spec", metavar="SPEC", help="faults, as cluster up --chaos takes them")
    p.add_argument("--rounds", type=int, default=3, help="rounds to follow (3)")
    p.add_argument("--chaos-seed", type=int, default=0, help="seed of the chaos draws (0)")
    p.add_argument("--json", action="store_true", help="print one JSON summary at the end")
    p = add("status", "show the nodes of a running cluster", cmd_status)
    p.add_argument("--json", action="store_true")
    add("down", "stop every node and the chain", cmd_down)
    p = add("kill", "SIGKILL one node", cmd_kill)
    p.add_argument("node")
    p = add("start", "start (or restart) one node", cmd_start)
    p.add_argument("node")
    p = add("logs", "print a node's log", cmd_logs)
    p.add_argument("node")
    p.add_argument("-n", "--lines", type=int, default=50)
