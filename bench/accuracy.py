"""Accuracy of the built-in digits task in an in-process simulation, and aggregation speed.

Not part of the test suite. Simulates the protocol's learning path without the
network or the chain: each round draws proposers and voters (``--proposers``
of ``--nodes``; the rest vote), proposers train on their Dirichlet shards,
the norm check and the rule aggregate, voters score the new model on their
private validation splits and the round is accepted iff at least half of the
scores are >= 0 (docs/contracts.md "Settlement details"). Scenarios:

- ``fedavg_all``: every node proposes every round, no vote (plain FedAvg);
- ``fedavg_half``: half the nodes propose, the other half vote;
- ``<rule>_signflip``: as ``fedavg_half`` with ``--byzantine`` nodes whose
  update is the honest one negated and scaled by 4;
- ``<rule>_zero``: as ``fedavg_half`` with ``--byzantine`` nodes sending a zero update;
- ``<rule>_signflip_majority``: 3 proposers a round and 6 of 10 nodes sign-flipping,
  so most rounds have cheaters in most proposer seats.

The norm check gets the task's step scale (``step_scale``), as voters do.
Voters also flag each update judged alone (its "alone" score change below
``--flag-threshold-ppm``), and an honest proposer counts as paid only if the
round is accepted and it is neither rejected nor flagged by a quorum (two
thirds) of the voters, as the contract pays; ``rounds_all_honest_flagged``
counts accepted rounds in which every honest proposer was flagged. ``--task``
picks a built-in task (its default settings, score and flag threshold apply
unless flags override them) and ``--score`` the classifiers' voting score
(``accuracy``, ``loss`` for minus the mean validation loss, ``brier``); ``lowering_rounds``
counts accepted rounds that lowered test accuracy by more than one point.
Each round trains with the task's learning rate for that round
(``lr_decay``, ``lr_min``: ``TrainingSettings.for_round``); ``--lr-schedule``
replaces it (``exp``: ``lr x max(floor, gamma^(r-1))``; ``cosine``: down to
``lr x floor`` over ``--rounds``) and ``--warm-steps`` more local steps in
the first ``--warm-rounds``; the norm band's step scale follows the round's
lr and steps. ``--weight-by-samples`` weights FedAvg by the proposers' own
sample counts, which nobody can check (not protocol-safe: a gap measure only).

Also times each rule on 5 and 10 updates of the MLP's size and of about 100k
parameters, as a ratio to a naive float32 ``torch.stack(...).mean(0)`` baseline
measured in the same run, and reports update norms and the "update alone"
validation change of honest and label-flipping proposers (inputs for the
defaults of ``clip_tau`` and ``flag_threshold_ppm``).

    .venv/bin/python bench/accuracy.py --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from typing import Any

import torch

from flocknode.aggregation import AggregationSettings, aggregate, apply_update
from flocknode.aggregation.compression import codec, decode, encode, layout
from flocknode.aggregation.core import STAT_NAMES, step_scale
from flocknode.crypto import canonical_size
from flocknode.learning import Learner, TaskSettings
from flocknode.rounds.update_form import EF_DECAY

SIGN_FLIP_SCALE = -4.0


def simulate(
    learners: list[Learner],
    rule: AggregationSettings,
    rounds: int,
    proposers: int,
    byzantine: set[int],
    vote: bool,
    seed: int,
    attack: str = "sign_flip",
    flag_threshold: int = -450_000,
    margin: int = 0,
    schedule: Schedule | None = None,
    weight_by_samples: bool = False,
    ef_cap: float = 0.9,
    momentum: float = 0.0,
    ef_decay: float = EF_DECAY,
) -> dict[str, Any]:
    n = len(learners)
    state = learners[0].initial_state()
    base = learners[0].settings
    params = sum(v.numel() for v in state.values())
    test = learners[0]
    history: list[dict[str, Any]] = []
    c = codec(rule)
    lay = layout(state)
    residuals: dict[int, dict[str, torch.Tensor]] = {}  # each node's error feedback
    velocity: dict[str, torch.Tensor] = {}  # the outer momentum, over accepted rounds only
    update_bytes = 0
    for r in range(1, rounds + 1):
        t = base.for_round(r) if schedule is None else schedule.settings(base, r, rounds)
        # the norm band follows the round's lr and steps, as every node can compute them
        scale = step_scale(t.optimizer, t.learning_rate, t.local_steps, params)
        trainers = (
            learners if t == base else [dataclasses.replace(lr, settings=t) for lr in learners]
        )
        order = random.Random(seed * 1_000_003 + r).sample(range(n), n)
        props = sorted(order[:proposers])
        voters = order[proposers:] if vote else []
        updates, secs, counts = [], [], []
        for node in props:
            res = trainers[node].train(state, seed=seed * 100_003 + r * 1_000 + node)
            secs.append(res.seconds)
            counts.append(res.samples)
            up = res.update
            if c is not None:  # what voters decode from the packed update
                cap = None if scale is None else ef_cap * rule.norm_ceiling * scale
                up, residuals[node] = encode(up, residuals.get(node), c, cap, ef_decay)
            update_bytes = canonical_size(up)
            if node in byzantine:  # a cheater changes what it sends (dense or packed)
                factor = SIGN_FLIP_SCALE if attack == "sign_flip" else 0.0
                up = {k: v * factor if v.is_floating_point() else v for k, v in up.items()}
            if c is not None:
                up = decode(up, lay, c)
            updates.append(up)
        t0 = time.perf_counter()
        result = aggregate(state, updates, rule, seats=list(range(len(props))), scale=scale)
        agg_s = time.perf_counter() - t0
        if weight_by_samples and rule.rule == "fedavg":
            result = dataclasses.replace(
                result, model=_weighted(state, updates, counts, set(result.rejected))
            )
        if momentum:  # DiLoCo's outer Nesterov step over the aggregate (an experiment)
            moved, velocity_next = _nesterov(state, result.model, velocity, momentum)
            result = dataclasses.replace(result, model=moved)
        accepted = True
        flags = [0] * len(props)
        if voters:
            scores = []
            for v in voters:
                before = learners[v].evaluate(state, "val").ppm
                after = learners[v].evaluate(result.model, "val").ppm
                scores.append(after - before + margin)
                for i, up in enumerate(updates):
                    alone = learners[v].evaluate(apply_update(state, up), "val").ppm - before
                    flags[i] += alone < flag_threshold
            accepted = 2 * sum(1 for s in scores if s >= 0) >= len(scores)
        flagged = [
            props[i]
            for i, f in enumerate(flags)
            if voters and (f * 3 >= 2 * len(voters) or i in result.no_work)
        ]
        before_acc = test.evaluate(state, "test").accuracy
        if accepted:
            state = result.model
            if momentum:
                velocity = velocity_next
        after_acc = test.evaluate(state, "test").accuracy
        history.append(
            {
                "round": r,
                "accuracy": round(after_acc, 4),
                "lowered": accepted and after_acc < before_acc - 0.01,
                "flagged_nodes": flagged,
                "accepted": accepted,
                "proposers": props,
                "byzantine_proposers": [p for p in props if p in byzantine],
                "rejected_nodes": [props[i] for i in result.rejected],
                "no_work_nodes": [props[i] for i in result.no_work],
                "selected_nodes": None
                if result.selected is None
                else [props[i] for i in result.selected],
                "train_seconds_max": round(max(secs), 4),
                "honest_norm_over_scale": None
                if scale is None
                else [
                    round(result.norms[i] / scale, 3)
                    for i, node in enumerate(props)
                    if node not in byzantine
                ],
                "aggregate_seconds": round(agg_s, 4),
            }
        )
    return {
        "accuracy": [h["accuracy"] for h in history],
        "rounds_not_accepted": sum(1 for h in history if not h["accepted"]),
        "honest_paid": sum(
            1
            for h in history
            if h["accepted"]
            for x in h["proposers"]
            if x not in byzantine and x not in h["rejected_nodes"] and x not in h["flagged_nodes"]
        ),
        "honest_proposals": sum(1 for h in history for x in h["proposers"] if x not in byzantine),
        "honest_flagged": sum(1 for h in history for x in h["flagged_nodes"] if x not in byzantine),
        "rounds_all_honest_flagged": sum(
            1
            for h in history
            if h["accepted"]
            and (honest := [x for x in h["proposers"] if x not in byzantine])
            and all(x in h["flagged_nodes"] for x in honest)
        ),
        "lowering_rounds": sum(1 for h in history if h["lowered"]),
        "byzantine_paid": sum(
            1
            for h in history
            if h["accepted"]
            for x in h["byzantine_proposers"]
            if x not in h["rejected_nodes"] and x not in h["flagged_nodes"]
        ),
        "honest_rejected": sum(
            1 for h in history for x in h["rejected_nodes"] if x not in byzantine
        ),
        "byzantine_proposals": sum(len(h["byzantine_proposers"]) for h in history),
        "byzantine_rejected": sum(
            1 for h in history for x in h["rejected_nodes"] if x in byzantine
        ),
        "train_seconds_max": max(h["train_seconds_max"] for h in history),
        "honest_norm_over_scale_max": max(
            (x for h in history for x in h["honest_norm_over_scale"] or []), default=None
        ),
        "honest_norm_over_scale_min": min(
            (x for h in history for x in h["honest_norm_over_scale"] or []), default=None
        ),
        "update_bytes": update_bytes,
        "rounds": history,
    }


def _nesterov(
    state: dict[str, torch.Tensor],
    aggregate_model: dict[str, torch.Tensor],
    velocity: dict[str, torch.Tensor],
    mu: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``v' = mu v + d``, model ``state + d + mu v'`` for the weights (``d``: the aggregate's
    step, outer_lr included); other entries as the aggregate has them."""
    moved, nxt = dict(aggregate_model), {}
    for k, t in state.items():
        if not t.is_floating_point() or k.rsplit(".", 1)[-1] in STAT_NAMES:
            continue
        d = aggregate_model[k].double() - t.double()
        v = mu * velocity.get(k, torch.zeros_like(d)) + d
        nxt[k] = v
        moved[k] = (t.double() + d + mu * v).to(t.dtype)
    return moved, nxt


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A per-round learning rate (and local step count) every node can compute.

    ``kind``: ``const``; ``exp`` (``lr x gamma^(r-1)``); ``cosine`` (from
    ``lr`` down to ``lr x floor`` over the task's ``rounds``, half a cosine).
    ``warm_steps`` replaces ``local_steps`` in rounds 1 .. ``warm_rounds``.
    """

    kind: str = "const"
    gamma: float = 1.0
    floor: float = 0.0
    warm_rounds: int = 0
    warm_steps: int = 0

    def lr(self, lr: float, r: int, rounds: int) -> float:
        if self.kind == "exp":
            return lr * max(self.floor, self.gamma ** (r - 1))
        if self.kind == "cosine":
            frac = (r - 1) / max(1, rounds - 1)
            return lr * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac)))
        return lr

    def settings(self, base: Any, r: int, rounds: int) -> Any:
        if self.kind == "const" and not self.warm_rounds:
            return base.for_round(r)  # the task's own schedule (lr_decay, lr_min)
        steps = self.warm_steps if r <= self.warm_rounds and self.warm_steps else base.local_steps
        return dataclasses.replace(
            base, learning_rate=self.lr(base.learning_rate, r, rounds), local_steps=steps
        )


def _weighted(
    state: dict[str, torch.Tensor],
    updates: list[dict[str, torch.Tensor]],
    counts: list[int],
    rejected: set[int],
) -> dict[str, torch.Tensor]:
    """FedAvg weighted by the proposers' own (unverifiable) sample counts: NOT protocol-safe."""
    keep = [i for i in range(len(updates)) if i not in rejected]
    if not keep:
        return dict(state)
    total = float(sum(counts[i] for i in keep))
    mean = {
        k: torch.stack([updates[i][k].double() * (counts[i] / total) for i in keep])
        .sum(0)
        .to(v.dtype)
        for k, v in updates[keep[0]].items()
        if v.is_floating_point()
    }
    return apply_update(state, {**updates[keep[0]], **mean})


def time_rules(sizes: dict[str, int], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(7)
    for label, params in sizes.items():
        g = {"w": torch.randn(params, generator=gen)}
        for n in (5, 10):
            ups = [{"w": torch.randn(params, generator=gen) * 0.01} for _ in range(n)]
            base = _best(lambda ups=ups: torch.stack([u["w"] for u in ups]).mean(0), repeats)
            row: dict[str, Any] = {"baseline_naive_mean_ms": round(base * 1e3, 3)}
            for rule in ("fedavg", "median", "trimmed_mean", "multi_krum", "centered_clip"):
                s = AggregationSettings(rule=rule, krum_f=2)
                t = _best(lambda s=s, ups=ups, g=g: aggregate(g, ups, s), repeats)
                row[rule] = {"ms": round(t * 1e3, 3), "ratio": round(t / base, 1)}
            out[f"{label}_n{n}"] = row
    return out


def _best(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def probe_updates(learners: list[Learner], rounds_in: int, seed: int) -> dict[str, Any]:
    """Honest vs label-flipped updates after ``rounds_in`` FedAvg rounds (all nodes).

    Reports honest update norms (their spread is what the norm check relies
    on), honest distances to the coordinate-wise median (the scale of
    centered_clip's tau) and each update's "alone" validation change, in ppm,
    on every other node's validation split (the input of the flag threshold).
    """
    state = learners[0].initial_state()
    for r in range(rounds_in):
        ups = [lr.train(state, seed=seed + r * 1000 + i).update for i, lr in enumerate(learners)]
        state = aggregate(state, ups, AggregationSettings()).model
    honest = [lr.train(state, seed=seed + 99_000 + i).update for i, lr in enumerate(learners)]
    flipped = [
        lr.train(state, seed=seed + 99_000 + i, label_flip=True).update
        for i, lr in enumerate(learners)
    ]
    norms = [_norm(u) for u in honest]
    med = aggregate(
        {k: torch.zeros_like(v) for k, v in state.items()},
        honest,
        AggregationSettings(rule="median", norm_factor=1e9),
    ).model
    to_median = [_norm({k: u[k] - med[k] for k in u}) for u in honest]
    before = [lr.evaluate(state, "val").ppm for lr in learners]
    alone_h, alone_f = [], []
    for i, (h, f) in enumerate(zip(honest, flipped, strict=True)):
        with_h, with_f = apply_update(state, h), apply_update(state, f)
        for j, voter in enumerate(learners):
            if j != i:
                alone_h.append(voter.evaluate(with_h, "val").ppm - before[j])
                alone_f.append(voter.evaluate(with_f, "val").ppm - before[j])
    return {
        "after_rounds": rounds_in,
        "honest_norm_median": round(statistics.median(norms), 4),
        "honest_norm_max_over_median": round(max(norms) / statistics.median(norms), 3),
        "honest_norm_min_over_median": round(min(norms) / statistics.median(norms), 3),
        "honest_distance_to_median_median": round(statistics.median(to_median), 4),
        "alone_ppm_honest_quantiles": _quantiles(alone_h),
        "alone_ppm_label_flip_quantiles": _quantiles(alone_f),
    }


def _norm(m: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in m.values()))


def _quantiles(xs: list[int]) -> dict[str, int]:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return {"min": xs[0], "p05": pick(0.05), "p50": pick(0.5), "p95": pick(0.95), "max": xs[-1]}


def scenario_list(
    nodes: int, half: int, byz: set[int], base: AggregationSettings
) -> dict[str, tuple[Any, ...]]:
    """name -> (aggregation settings, proposers per round, byzantine nodes, vote, attack).

    Each scenario's rule replaces the one of ``base`` (the task's aggregation settings).
    """
    majority = set(range(max(len(byz), (6 * nodes) // 10)))

    def with_rule(**changes: Any) -> AggregationSettings:
        return dataclasses.replace(base, **{"rule": "fedavg", **changes})

    out: dict[str, tuple[Any, ...]] = {
        "fedavg_all": (with_rule(), nodes, set(), False, "sign_flip"),
        "fedavg_half": (with_rule(), half, set(), True, "sign_flip"),
        "fedavg_signflip": (with_rule(), half, byz, True, "sign_flip"),
        "fedavg_zero": (with_rule(), half, byz, True, "zero"),
        "fedavg_signflip_majority": (with_rule(), 3, majority, True, "sign_flip"),
        "median_zero": (with_rule(rule="median"), half, byz, True, "zero"),
        "median_signflip_majority": (
            with_rule(rule="median"),
            3,
            majority,
            True,
            "sign_flip",
        ),
    }
    for rule in ("median", "multi_krum", "trimmed_mean", "centered_clip"):
        out[f"{rule}_signflip"] = (with_rule(rule=rule), half, byz, True, "sign_flip")
    for rule in ("median", "multi_krum"):
        out[f"{rule}_signflip_no_normcheck"] = (
            with_rule(rule=rule, norm_factor=1e9, norm_floor=0.0, norm_ceiling=1e9),
            half,
            byz,
            True,
            "sign_flip",
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--proposers", type=int, default=0, help="default: half the nodes")
    p.add_argument("--byzantine", type=int, default=3)
    p.add_argument("--seeds", default="1,2,3,4,5,6", help="role-draw/training seeds, comma list")
    p.add_argument("--steps", type=int, help="override local_steps")
    p.add_argument("--epochs", type=int, help="override local_epochs")
    p.add_argument("--optimizer", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float)
    p.add_argument("--batch", type=int)
    p.add_argument("--momentum", type=float)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--task", default="digits-mlp", help="a built-in task")
    p.add_argument(
        "--score",
        choices=["accuracy", "loss", "brier"],
        help="default: the task's",
    )
    p.add_argument("--label-smoothing", type=float, help="default: the task's")
    p.add_argument(
        "--balanced",
        choices=["on", "off"],
        help="train with the node's class prior added to the logits (default: the task's)",
    )
    p.add_argument("--lr-decay", type=float, help="override lr_decay")
    p.add_argument("--lr-min", type=float, help="override lr_min")
    p.add_argument("--flag-threshold-ppm", type=int, help="default: the task's")
    p.add_argument("--min-val", type=int, help="override min_val_samples")
    p.add_argument(
        "--score-margin-ppm", type=int, default=0, help="added to each voter's score change"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--detail", action="store_true", help="include every round's record")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--only", help="comma list of scenario names")
    p.add_argument(
        "--lr-schedule",
        choices=["const", "exp", "cosine"],
        default="const",
        help="per-round learning rate (the norm band's step scale follows it)",
    )
    p.add_argument("--lr-gamma", type=float, default=1.0, help="exp: lr x gamma^(round-1)")
    p.add_argument(
        "--lr-floor", type=float, default=0.0, help="cosine: final lr as a fraction of --lr"
    )
    p.add_argument("--warm-rounds", type=int, default=0, help="rounds using --warm-steps")
    p.add_argument("--warm-steps", type=int, default=0, help="local_steps in the warm rounds")
    p.add_argument("--norm-ceiling", type=float, help="override the task's norm_ceiling")
    p.add_argument("--outer-lr", type=float, help="override the task's outer_lr")
    p.add_argument("--compression", choices=["none", "int8", "topk"], help="default: the task's")
    p.add_argument("--topk-fraction", type=float, default=0.01)
    p.add_argument("--topk-bits", type=int, choices=[8, 2], default=8)
    p.add_argument("--ef-cap", type=float, default=0.9, help="proposer norm cap / ceiling")
    p.add_argument(
        "--ef-decay",
        type=float,
        default=EF_DECAY,
        help="the residual's factor when a proposer adds it (1: plain error feedback)",
    )
    p.add_argument(
        "--outer-momentum",
        type=float,
        default=0.0,
        help="Nesterov momentum of an outer step over the aggregate (0: none)",
    )
    p.add_argument(
        "--weight-by-samples",
        action="store_true",
        help="fedavg weighted by proposers' claimed sample counts (NOT protocol-safe)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    overrides = {
        "local_steps": args.steps,
        "local_epochs": args.epochs,
        "optimizer": args.optimizer,
        "learning_rate": args.lr,
        "batch_size": args.batch,
        "momentum": args.momentum,
        "val_fraction": args.val_fraction,
        "task": args.task,
        "min_val_samples": args.min_val,
        "lr_decay": args.lr_decay,
        "lr_min": args.lr_min,
    }
    task = TaskSettings.from_dict(
        {"training": {k: v for k, v in overrides.items() if v is not None}}
    )
    settings = task.training
    if args.flag_threshold_ppm is None:
        args.flag_threshold_ppm = task.flag_threshold_ppm
    learners = [Learner.for_shard(settings, i, args.nodes) for i in range(args.nodes)]
    for lr in learners:
        if len(lr.data.val) < settings.min_val_samples:
            raise SystemExit(f"node {lr} has {len(lr.data.val)} validation samples")
        lr.task.score = args.score or lr.task.score
        if args.label_smoothing is not None:
            lr.task.label_smoothing = args.label_smoothing
        if args.balanced is not None:
            lr.task.balanced = args.balanced == "on"
    learners[0].train(learners[0].initial_state(), seed=0)  # warm torch up (first call ~1.5 s)
    half = args.proposers or args.nodes // 2
    agg_base = task.aggregation
    if args.norm_ceiling is not None:
        agg_base = dataclasses.replace(agg_base, norm_ceiling=args.norm_ceiling)
    if args.outer_lr is not None:
        agg_base = dataclasses.replace(agg_base, outer_lr=args.outer_lr)
    if args.compression is not None:
        agg_base = dataclasses.replace(
            agg_base,
            compression=args.compression,
            topk_fraction=args.topk_fraction if args.compression == "topk" else 0.01,
            topk_bits=args.topk_bits if args.compression == "topk" else 8,
        )
    schedule = Schedule(
        args.lr_schedule, args.lr_gamma, args.lr_floor, args.warm_rounds, args.warm_steps
    )
    byz = set(range(args.byzantine))
    seeds = [int(x) for x in args.seeds.split(",")]
    t0 = time.perf_counter()
    scenarios: dict[str, Any] = {}
    only = set(args.only.split(",")) if args.only else None
    for name, (rule, props, bad, vote, attack) in scenario_list(
        args.nodes, half, byz, agg_base
    ).items():
        if only is not None and name not in only:
            continue
        runs = [
            simulate(
                learners,
                rule,
                args.rounds,
                props,
                bad,
                vote,
                sd,
                attack,
                args.flag_threshold_ppm,
                args.score_margin_ppm,
                schedule,
                args.weight_by_samples,
                args.ef_cap,
                args.outer_momentum,
                args.ef_decay,
            )
            for sd in seeds
        ]
        per_round = [statistics.mean(r["accuracy"][i] for r in runs) for i in range(args.rounds)]
        scenarios[name] = {
            "proposers_per_round": props,
            "byzantine": sorted(bad),
            "vote": vote,
            "mean_accuracy_per_round": [round(a, 4) for a in per_round],
            "accuracy_per_seed": {
                str(sd): r["accuracy"] for sd, r in zip(seeds, runs, strict=True)
            },
            "min_round5": min(r["accuracy"][min(4, args.rounds - 1)] for r in runs),
            "min_final": min(r["accuracy"][-1] for r in runs),
            **{
                k: sum(r[k] for r in runs)
                for k in (
                    "rounds_not_accepted",
                    "honest_rejected",
                    "honest_paid",
                    "honest_proposals",
                    "honest_flagged",
                    "rounds_all_honest_flagged",
                    "lowering_rounds",
                    "byzantine_paid",
                    "byzantine_proposals",
                    "byzantine_rejected",
                )
            },
            "train_seconds_max": max(r["train_seconds_max"] for r in runs),
            "honest_norm_over_scale_max": max(
                (r["honest_norm_over_scale_max"] or 0.0 for r in runs), default=None
            ),
            "honest_norm_over_scale_min": min(
                (r["honest_norm_over_scale_min"] or 0.0 for r in runs), default=None
            ),
            "update_bytes": runs[0]["update_bytes"],
        }
        if args.detail:
            scenarios[name]["rounds"] = {
                str(sd): r["rounds"] for sd, r in zip(seeds, runs, strict=True)
            }
    report: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "aggregation": agg_base.to_dict(),
        "score": learners[0].task.score,
        "label_smoothing": getattr(learners[0].task, "label_smoothing", None),
        "balanced": getattr(learners[0].task, "balanced", None),
        "flag_threshold_ppm": args.flag_threshold_ppm,
        "score_margin_ppm": args.score_margin_ppm,
        "val_sizes": [len(lr.data.val) for lr in learners],
        "nodes": args.nodes,
        "rounds": args.rounds,
        "seeds": seeds,
        "torch_threads": args.threads,
        "simulation_seconds": round(time.perf_counter() - t0, 2),
        "summary": {
            k: {
                "mean_round5": v["mean_accuracy_per_round"][min(4, args.rounds - 1)],
                "mean_final": v["mean_accuracy_per_round"][-1],
                "min_round5": v["min_round5"],
                "min_final": v["min_final"],
            }
            for k, v in scenarios.items()
        },
        "scenarios": scenarios,
        "update_probe": []
        if args.skip_probe
        else [probe_updates(learners, n, seeds[0]) for n in (1, 3, 6)],
    }
    if not args.skip_timing:
        report["aggregation_timing"] = time_rules(
            {"mlp_4810": 4810, "p100k": 100_000}, args.repeats
        )
    if args.json:
        json.dump(report, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        print(f"{'scenario':32s} {'mean r5':>8s} {'mean r10':>8s} {'min r5':>8s} {'min r10':>8s}")
        for name, v in report["summary"].items():
            print(
                f"{name:32s} {v['mean_round5']:8.4f} {v['mean_final']:8.4f} "
                f"{v['min_round5']:8.4f} {v['min_final']:8.4f}"
            )
        for name, v in scenarios.items():
            print(
                f"{name:32s} not accepted {v['rounds_not_accepted']:3d}  honest rejected "
                f"{v['honest_rejected']:3d}  flagged {v['honest_flagged']} (all honest "
                f"{v['rounds_all_honest_flagged']})  lowering "
                f"{v['lowering_rounds']}  paid honest {v['honest_paid']}/"
                f"{v['honest_proposals']} byz {v['byzantine_paid']}  byzantine rejected "
                f"{v['byzantine_rejected']}/"
                f"{v['byzantine_proposals']}  train max {v['train_seconds_max']:.3f}s  "
                f"norm/scale {v['honest_norm_over_scale_min']}..{v['honest_norm_over_scale_max']}"
                f"  update bytes {v['update_bytes']}"
            )
        for probe in report["update_probe"]:
            print(json.dumps(probe))
        print(json.dumps(report.get("aggregation_timing", {}), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
