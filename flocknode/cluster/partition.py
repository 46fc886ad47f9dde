"""The ``partition`` chaos fault and its promise (docs/protocol.md, "Faults and
the promises kept under them").

A partition splits the cluster's nodes into two sides drawn from the chaos
seed: a minority of at least one node, drawn outside the current round's
voters (so the round's voters, a quorum of them, keep reaching each other),
and the majority. Blackhole routes in every node's namespace drop p2p traffic
between the sides (cluster/netns.py) while every node still reaches the chain;
``SECONDS`` later the routes are deleted (the heal).

``resumes_after_partition``: within the 3 rounds after the round current at the
heal, some round has a winning vote again (a quorum of voters agreed on an
aggregate), and the run had such a round to show it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from flocknode.chain.types import RoundView
from flocknode.cluster import netns
from flocknode.cluster.launcher import ClusterState

SECONDS = 30.0  # a partition's length: a few phases, longer than a kill's or a pause's
RESUME_ROUNDS = 3  # rounds after the heal within which a round must have a winner again


def split(
    state: ClusterState, view: RoundView, rng: random.Random
) -> tuple[list[str], list[str]] | None:
    """(minority, majority) node names, or None when no node can be cut off in
    this round (every node but the voters' side is too small)."""
    by_wallet = {n.wallet.lower(): n.name for n in state.nodes}
    voters = [by_wallet[w.lower()] for w in view.voters if w.lower() in by_wallet]
    try:
        return netns.draw_sides([n.name for n in state.nodes], voters, rng)
    except ValueError:
        return None


def _indices(state: ClusterState, names: Sequence[str]) -> list[int]:
    return [state.node(name).index for name in names]


def cut(state: ClusterState, minority: Sequence[str], majority: Sequence[str]) -> None:
    """Add the partition's routes; on a failure (NetnsError) none is left."""
    plan = netns.NetPlan.from_json(state.network)
    try:
        netns.run_commands(plan.cut_commands(_indices(state, minority), _indices(state, majority)))
    except BaseException:
        heal(state, minority, majority)
        raise


def heal(state: ClusterState, minority: Sequence[str], majority: Sequence[str]) -> list[str]:
    """Delete the partition's routes; returns the commands that failed (the
    heal goes on past one, so no route is left behind)."""
    plan = netns.NetPlan.from_json(state.network)
    cmds = plan.heal_commands(_indices(state, minority), _indices(state, majority))
    return netns.run_commands(cmds, check=False)


def resumes_after_partition(
    rounds: list[dict[str, Any]], partitions: list[tuple[int, list[str]]]
) -> dict[str, Any]:
    """The check over the summary's ``rounds``; ``partitions``: for each
    partition fault, the round current at its heal and its minority."""
    by_number = {r["round"]: r for r in rounds if not r["voided"]}
    last = max((r["round"] for r in rounds), default=0)
    late: list[str] = []
    resumed: dict[str, int] = {}
    for healed, minority in partitions:
        after = range(healed + 1, min(healed + RESUME_ROUNDS, last) + 1)
        won = [r for r in after if r in by_number and by_number[r]["winning_aggregate"]]
        key = f"{','.join(minority)} healed in round {healed}"
        if won:
            resumed[key] = won[0]
        elif not after:
            late.append(f"{key}: no round after the heal to show it")
        else:
            late.append(f"{key}: no winning vote in rounds {after.start}..{after.stop - 1}")
    return {"ok": not late, "first_winning_round": resumed, "not_resumed": late}
