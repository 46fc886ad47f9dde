"""Churn for ``cluster up --chaos join,leave`` (docs/protocol.md, "Faults and the
promises kept under them"): participants join and leave mid-task the way a real
participant does, through the wallet actions of ``flocknode register``,
``stake``, ``unstake`` and ``withdraw`` (flocknode/commands/participant.py).

- ``join``: a spare node (laid out by ``create_cluster``: wallet funded, config
  and data written, not registered) registers and starts, and stakes once its
  process runs (its first status file): its stake counts from the next round
  the task opens, and a node that starts only then (a few seconds to tens of
  seconds on a loaded machine) may hold a seat before it runs or holds the
  model. Members serve it from its stake on (the registry refresh).
- ``leave``: an honest node that did not join requests the unstake of its whole
  stake, once the task keeps enough eligible participants without it to draw
  every seat; its stake still counts in the round current then, so it may be
  (or be drawn) in a seat there, which its running process fills. The node
  stops (SIGTERM) only once ``withdraw`` pays out: the contract pays while no
  round the node was elected in is unfinalized, no vote it won can still be
  challenged, and the round of the request has drawn its roles. From the next
  round its stake is gone and the contract seats it no more.

The checks of :func:`churn_invariants` read the chain's finalized round views
(the monitor's ``views``), its slash events and the summary's rounds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from eth_account import Account

from flocknode.chain.client import TaskClient
from flocknode.chain.errors import ContractRevert
from flocknode.chain.events import Slashed
from flocknode.chain.types import RoundView
from flocknode.cluster.launcher import TOKENS, ClusterState, NodeInfo, _alive, kill_node, start_node
from flocknode.commands import participant
from flocknode.config import load_config
from flocknode.connect import connect

CHURN_KINDS = ("join", "leave")
JOIN_STAKE = 100 * TOKENS  # what create_cluster stakes for every node by default
WINDOW = 2  # rounds, from the first its stake counts in, for a newcomer to contribute
RETRY_SECONDS = 1.0  # between looks at a node or the chain (running, eligible count, withdraw)
START_LIMIT = 120.0  # seconds a joining node may take to run; it stakes then all the same


@dataclass
class Join:
    node: str
    round: int  # the round current when the chaos began the join
    phase: str
    began: float  # seconds since the chaos started
    step: str = "started"  # registered and started -> staked (its process ran first)
    staked_round: int = 0  # round current at the stake: it counts from a later one
    seconds: float = 0.0  # from the registration to the stake

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["began"], d["seconds"] = round(self.began, 2), round(self.seconds, 2)
        return d


@dataclass
class Leave:
    node: str
    round: int  # the round current when the leave was due
    phase: str
    began: float
    step: str = "waiting"  # waiting (for enough others) -> unstaked -> left
    unstake_round: int = 0  # round current at requestUnstake: the last its stake counts in
    left_round: int = 0  # round current when withdraw paid and the process stopped
    withdraw_refusals: dict[str, int] = field(default_factory=dict)  # revert name -> count
    seconds: float = 0.0  # from the request to the stop

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["began"], d["seconds"] = round(self.began, 2), round(self.seconds, 2)
        return d


def participant_client(n: NodeInfo) -> TaskClient:
    """The node's own wallet on the chain, as its ``flocknode`` commands connect."""
    return connect(load_config(n.layout.config, environ={}), Account.from_key(n.key))


@dataclass
class Churn:
    """Joins and leaves in a running cluster, driven by :class:`~flocknode.cluster.chaos.Chaos`."""

    state: ClusterState
    progress: Callable[[str], None] = print
    t0: float = field(default_factory=time.monotonic)
    joins: list[Join] = field(default_factory=list)
    leaves: list[Leave] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # chain errors met (each retried)
    client_of: Callable[[NodeInfo], TaskClient] = participant_client

    def __post_init__(self) -> None:
        self._clients: dict[str, TaskClient] = {}
        self._next_look = 0.0
        # round -> wallets (lower case) its draw counts: the contract gives a
        # round's eligible set only while that round is current, so it is
        # recorded from the current round's views as the chaos reads them
        self.eligible: dict[int, set[str]] = {}

    @property
    def busy(self) -> bool:
        """A join or a leave is still under way."""
        return any(j.step != "staked" for j in self.joins) or any(
            lv.step != "left" for lv in self.leaves
        )

    def gone(self) -> set[str]:
        """Nodes out by design: spares that never started, and nodes that left."""
        joined = {j.node for j in self.joins}
        spares = {n.name for n in self.state.nodes if n.spare and n.name not in joined}
        return spares | {lv.node for lv in self.leaves if lv.step == "left"}

    def begin(self, kind: str, view: RoundView, avoid: set[str]) -> bool:
        """Begin a ``join`` or ``leave`` in the round ``view``; False if no node can
        (no spare left; no honest running node left to leave, ``avoid`` aside)."""
        now = time.monotonic() - self.t0
        if kind == "join":
            spare = next((n for n in self.state.nodes if n.spare and not n.pid), None)
            if spare is None:
                return False
            try:
                self._register_and_start(spare)
            except Exception as e:  # an RPC hiccup: the next tick tries again
                self.errors.append(f"join {spare.name}: {e}")
                return False
            self.joins.append(Join(spare.name, view.round, view.phase.label, now))
            self.progress(f"chaos: join {spare.name} (round {view.round}, {view.phase.label})")
            return True
        leaver = self.pick_leaver(view, avoid)
        if leaver is None:
            return False
        self.leaves.append(Leave(leaver, view.round, view.phase.label, now))
        self.progress(f"chaos: leave {leaver} (round {view.round}, {view.phase.label})")
        return True

    def pick_leaver(self, view: RoundView, avoid: set[str]) -> str | None:
        """An honest running node of the original ones, not leaving yet; one
        with a seat in ``view`` if there is such, a voter's first (it finishes
        that role before it leaves: the contract still counts its stake in this
        round, and a voter needs the others to serve it the updates)."""
        taken = avoid | {lv.node for lv in self.leaves} | {j.node for j in self.joins}
        free = [
            n
            for n in self.state.nodes
            if n.behaviour == "honest" and not n.spare and n.name not in taken and _alive(n.pid)
        ]
        rank = {w.lower(): 0 for w in view.proposers} | {w.lower(): -1 for w in view.voters}
        pick = sorted(free, key=lambda n: rank.get(n.wallet.lower(), 1))[:1]
        return pick[0].name if pick else None

    def tick(self, view: RoundView | None) -> None:
        """Record the current round's eligible set; move every join and leave
        under way one step on, at most once a second."""
        if view is not None and view.eligible:
            self.eligible.setdefault(view.round, set()).update(_lower(view.eligible))
        now = time.monotonic()
        if not self.busy or now < self._next_look:
            return
        self._next_look = now + RETRY_SECONDS
        for j in self.joins:
            if j.step == "staked":
                continue
            try:
                self._stake_once_running(j, now)
            except Exception as e:  # an RPC hiccup: the next look tries again
                self.errors.append(f"join {j.node}: {e}")
        for lv in self.leaves:
            if lv.step == "left":
                continue
            try:
                self._step(lv, view)
            except Exception as e:  # an RPC hiccup: the next look tries again
                self.errors.append(f"leave {lv.node}: {e}")

    def _client(self, name: str) -> TaskClient:
        if name not in self._clients:
            self._clients[name] = self.client_of(self.state.node(name))
        return self._clients[name]

    def _register_and_start(self, n: NodeInfo) -> None:
        client = self._client(n.name)
        if not _registered(client):  # a retry after a failed start registers once
            participant.register(client, load_config(n.layout.config, environ={}))
        start_node(self.state, n.name)

    def _stake_once_running(self, j: Join, now: float) -> None:
        n = self.state.node(j.node)
        if not n.layout.status_file.exists() and now - self.t0 < j.began + START_LIMIT:
            return
        client = self._client(j.node)
        participant.stake(client, JOIN_STAKE)
        j.staked_round = client.current_round()
        j.step = "staked"
        j.seconds = now - self.t0 - j.began
        self.progress(f"chaos: {j.node} runs and staked in round {j.staked_round}")

    def _step(self, lv: Leave, view: RoundView | None) -> None:
        client = self._client(lv.node)
        if lv.step == "waiting":
            p = client.params()
            if client.eligible_count() - 1 < p.proposers_per_round + p.voters_per_round:
                return  # without it the task could not draw a round's seats
            participant.unstake(client, client.participant().stake)
            lv.unstake_round = client.current_round()
            lv.step = "unstaked"
            lv.seconds = time.monotonic() - self.t0 - lv.began
            self.progress(f"chaos: {lv.node} requested its unstake in round {lv.unstake_round}")
            return
        try:  # participant.withdraw's call, without its progress line at every try
            client.withdraw()
        except ContractRevert as e:  # still elected, under challenge, or its round undrawn
            lv.withdraw_refusals[e.name] = lv.withdraw_refusals.get(e.name, 0) + 1
            return
        kill_node(self.state, lv.node, signal.SIGTERM)
        lv.left_round = view.round if view is not None else client.current_round()
        lv.step = "left"
        lv.seconds = time.monotonic() - self.t0 - lv.began
        self.progress(f"chaos: {lv.node} withdrew and stopped (round {lv.left_round})")

    def to_json(self) -> dict[str, Any]:
        return {
            "joins": [j.to_json() for j in self.joins],
            "leaves": [lv.to_json() for lv in self.leaves],
            "errors": self.errors[-10:],
        }


def _registered(client: TaskClient) -> bool:
    try:
        client.participant()
    except ContractRevert as e:
        if e.name == "NotRegistered":
            return False
        raise
    return True


def seat_of(view: RoundView, wallet: str) -> tuple[str, bool] | None:
    """(role, acted) of ``wallet``'s seat in a finalized round, None without one.
    A proposer acted if its update was submitted, a voter if its vote was
    committed and revealed and is not the "base model unavailable" vote
    (docs/protocol.md, "Unservable models"): a voter without the model did not
    contribute."""
    w = wallet.lower()
    for i, p in enumerate(view.proposers):
        if p.lower() == w:
            return "proposer", i < len(view.updates) and view.updates[i].submitted
    for j, v in enumerate(view.voters):
        if v.lower() == w:
            vote = view.votes[j] if j < len(view.votes) else None
            real = vote is not None and (
                any(vote.aggregate_hash) or vote.included_bits or vote.rejected_bits
            )
            return "voter", bool(real) and vote is not None and vote.committed and vote.revealed
    return None


def churn_invariants(
    state: ClusterState,
    rounds: list[dict[str, Any]],
    views: dict[int, RoundView],
    slashes: list[Slashed],
    churn: Churn,
    planned: dict[str, int],
    excused: set[tuple[int, str]],
) -> dict[str, dict[str, Any]]:
    """The promises of churn, each with its figures.

    - ``new_participants_contribute``: every planned join was made and, for
      every joined node that staked before the last finalized round, some
      finalized round's eligible set (the contract's
      stake snapshot, given while the round is current: ``Churn.eligible``, or
      the view) lists it; in the first such round and the next finalized one
      (``WINDOW``) it is eligible (drawn-able), every seat it was drawn for was
      acted on (an update submitted; a vote committed and revealed), and after
      one of them it held that round's global model (the summary's
      ``node_hashes``);
    - ``leavers_left``: every planned leave began and ended (unstaked,
      withdrawn, stopped), the leaver held no seat in a round after the one of
      its request, and it was not slashed (but for an idle slash in a round
      ``excused`` names: the chaos had it out).
    """
    joins, leaves = [j for j in churn.joins if j.step == "staked"], churn.leaves
    by_round = {r["round"]: r for r in rounds if not r["voided"]}
    node = {n.name: n for n in state.nodes}
    report: list[dict[str, Any]] = []
    broken: list[str] = []
    if len(joins) < planned.get("join", 0):
        broken.append(f"{len(joins)} of {planned['join']} joins made")
    for j in joins:
        wallet = node[j.node].wallet.lower()
        eligible = {r: _lower(v.eligible) | churn.eligible.get(r, set()) for r, v in views.items()}
        counted = [r for r in sorted(views) if wallet in eligible[r]]
        if not counted and not any(r > j.staked_round for r in views):
            # staked in the last round: its stake counts in none of the task's
            report.append({"node": j.node, "counts_from": None, "too_late": True})
            continue
        if not counted:
            broken.append(f"{j.node}: its stake counted in no finalized round")
            report.append({"node": j.node, "counts_from": None})
            continue
        window = [r for r in sorted(views) if r >= counted[0]][:WINDOW]
        seats, held = [], []
        for r in window:
            v = views[r]
            if wallet not in eligible[r]:
                broken.append(f"{j.node}: not eligible in round {r}")
            seat = seat_of(v, wallet)
            if seat is not None:
                seats.append({"round": r, "role": seat[0], "acted": seat[1]})
                if not seat[1]:
                    broken.append(f"{j.node}: did not act as {seat[0]} in round {r}")
            s = by_round.get(r)
            if s is not None and s["node_hashes"].get(j.node) == s["model_after"]:
                held.append(r)
        if not held:
            broken.append(f"{j.node}: held no round's model in rounds {window}")
        report.append(
            {"node": j.node, "counts_from": counted[0], "window": window, "seats": seats,
             "held_model_after": held}
        )  # fmt: skip
    left_report: list[dict[str, Any]] = []
    left_broken: list[str] = []
    if len(leaves) < planned.get("leave", 0):
        left_broken.append(f"{len(leaves)} of {planned['leave']} leaves begun")
    for lv in leaves:
        wallet = node[lv.node].wallet.lower()
        late = [
            r
            for r, v in sorted(views.items())
            if lv.unstake_round and r > lv.unstake_round and seat_of(v, wallet) is not None
        ]
        slashed = [
            f"round {s.round} ({s.reason})"
            for s in slashes
            if s.wallet.lower() == wallet
            and not (s.reason.startswith("idle") and (s.round, lv.node) in excused)
        ]
        if lv.step != "left":
            left_broken.append(f"{lv.node}: leave ended at step {lv.step}")
        left_broken += [f"{lv.node}: seated in round {r} after leaving" for r in late]
        left_broken += [f"{lv.node}: slashed in {s}" for s in slashed]
        left_report.append({"node": lv.node, "seated_after_leaving": late, "slashes": slashed})
    return {
        "new_participants_contribute": {
            "ok": not broken,
            "joins": report,
            "broken": broken,
        },
        "leavers_left": {"ok": not left_broken, "leaves": left_report, "broken": left_broken},
    }


def _lower(wallets: tuple[str, ...]) -> set[str]:
    return {w.lower() for w in wallets}
