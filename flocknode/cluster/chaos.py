"""Faults on demand for testers (``cluster up --chaos SPEC``) and the promises
checked after them (docs/protocol.md, "Faults and the promises kept under them").

SPEC is a comma-separated list of fault kinds, each with an optional count
(``kill,pause`` or ``kill=2,pause=1``; one of each by default):

- ``kill``: SIGKILL an honest node that holds a seat in the current round,
  while the round is in its train, commit or reveal phase, and restart it
  ``down_seconds`` later;
- ``pause``: SIGSTOP such a node and SIGCONT it ``down_seconds`` later;
- ``partition``: cut the p2p traffic between a minority of the nodes and the
  rest for ``partition.SECONDS``, both sides still reaching the chain (the
  cluster's nodes run in network namespaces, cluster/partition.py);
- ``rpc``: open a fault window of such a node's RPC proxy (rpcproxy.py) for
  ``rpcproxy.WINDOW_SECONDS``; the node is not out meanwhile (it is expected to
  act through the faults);
- ``join``, ``leave``: churn (flocknode/cluster/churn.py): a spare node
  registers, stakes and starts; an honest node unstakes, withdraws and stops;
- ``reorg``: replace the chain's last 1-3 blocks right after a seat holder's
  transaction was mined in them (``flocknode.cluster.reorg``);
- ``latency``: delay (with jitter) and TCP-like loss on the p2p links of
  such a node to a drawn set of the others (per link, all or fewer), through
  the relays in front of the nodes (relay.py), for
  ``relay.FAULT_SECONDS``; like ``rpc``, the node is not out meanwhile.

A voter is chosen only while the round's reveal deadline leaves it room to come
back and reveal (``VOTER_ROOM``): the promise that a committed vote is revealed
holds for faults the phases can absorb.

Faults come one at a time, in rounds spread over the run (never the first or
the last), each in a phase (train, commit or reveal; the next round's first
role phase if the round left that phase unseen), in an order and on nodes
drawn from ``seed``; each is bounded in time, and a fault still active when
the run ends is undone first. The
invariants read the chain and the summary's rounds afterwards.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flocknode.chain.events import Slashed
from flocknode.chain.types import Phase, RoundView
from flocknode.cluster import partition
from flocknode.cluster.churn import CHURN_KINDS, Churn
from flocknode.cluster.launcher import ClusterState, _alive, kill_node, start_node
from flocknode.cluster.relay import FAULT_SECONDS as LATENCY_SECONDS
from flocknode.cluster.relay import Relays
from flocknode.cluster.resources import Usage, growth
from flocknode.cluster.rpcproxy import WINDOW_SECONDS, RpcProxies

KINDS = ("kill", "pause", "partition", "rpc", *CHURN_KINDS, "reorg", "latency")
# faults that leave their node running and acting: it is never out, so no idle
# slash of it is excused
SLOWING_KINDS = frozenset({"rpc", "latency"})
MAX_FAULTS = 20  # per kind and run
RESTART_LIMIT = 120.0  # seconds a killed node may take to run again before the next fault
# Seconds a voter needs, once back, to reveal a vote it committed before the
# fault: a killed one restarts (interpreter, torch, libp2p, chain) and resumes
# from its journal; a paused one only sends its reveal. A voter is faulted only
# while the round's reveal deadline leaves it ``down_seconds`` plus this.
# kinds that leave a node without the round's model until they end
LAST_ROUND_UNSAFE = ("kill", "pause", "partition")
VOTER_ROOM = {"kill": 15.0, "pause": 3.0, "rpc": 0.0, "latency": 0.0}
ROLE_PHASES = (Phase.TRAIN, Phase.COMMIT, Phase.REVEAL)


class ChaosSpecError(ValueError):
    """A ``--chaos`` value that does not parse: the message says what is wrong."""


@dataclass(frozen=True)
class ChaosSpec:
    faults: tuple[tuple[str, int], ...]  # (kind, count) in the order given
    seed: int = 0
    down_seconds: float = 5.0

    @property
    def text(self) -> str:
        return ",".join(f"{k}={n}" for k, n in self.faults)


def parse_chaos(text: str, seed: int = 0, down_seconds: float = 5.0) -> ChaosSpec:
    faults: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, _, count = part.partition("=")
        if kind not in KINDS:
            raise ChaosSpecError(
                f"--chaos {text!r}: unknown fault {kind!r} (known: {', '.join(KINDS)})"
            )
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ChaosSpecError(f"--chaos {text!r}: {part!r} needs a whole count") from None
        if not 1 <= n <= MAX_FAULTS:
            raise ChaosSpecError(f"--chaos {text!r}: {kind} count must be 1..{MAX_FAULTS}")
        faults[kind] = faults.get(kind, 0) + n
    if not faults:
        raise ChaosSpecError(f"--chaos {text!r}: name at least one fault ({', '.join(KINDS)})")
    return ChaosSpec(tuple(faults.items()), seed, down_seconds)


@dataclass
class Fault:
    kind: str
    node: str
    round: int
    phase: str  # the round's phase when the fault began
    role: str  # "proposer" or "voter": the seat the node held in that round
    began: float  # seconds since the chaos started
    seconds: float = 0.0  # how long the node was down or paused
    undone: bool = False
    # the rounds current while the node was out: down or paused, then, after a
    # kill, until the restarted process wrote its first status (it runs again)
    out_rounds: list[int] = field(default_factory=list)
    sides: list[list[str]] = field(default_factory=list)  # partition: [minority, majority]

    @property
    def out_nodes(self) -> list[str]:
        """The nodes the fault had out: a partition's minority, else its node."""
        return self.sides[0] if self.sides else [self.node]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["began"], d["seconds"] = round(self.began, 2), round(self.seconds, 2)
        return d


@dataclass
class LatencyFault(Fault):
    """A ``latency`` fault: what it did to its node's links (relay.py)."""

    links: list[str] = field(default_factory=list)  # the nodes its slowed links go to
    delay_ms: float = 0.0  # one way, drawn for the fault
    jitter_ms: float = 0.0
    loss: float = 0.0  # share of chunks held for a retransmission timeout
    rto_ms: float = 0.0  # the first timeout, doubling to rto_cap_ms
    rto_cap_ms: float = 0.0


@dataclass
class Chaos:
    """Injects ``spec``'s faults into a running cluster of ``rounds`` rounds."""

    state: ClusterState
    spec: ChaosSpec
    rounds: int
    progress: Callable[[str], None] = print
    faults: list[Fault] = field(default_factory=list)
    first_round: int = 1  # the run's rounds are first_round .. first_round + rounds - 1
    wall: Callable[[], float] = time.time  # the chain's clock (anvil's blocks follow it)
    rpc: RpcProxies | None = None  # the nodes' RPC proxies (``rpc`` faults)
    relays: Relays | None = None  # the relays in front of the nodes (``latency`` faults)

    def __post_init__(self) -> None:
        rng = random.Random(self.spec.seed)
        kinds = [k for k, n in self.spec.faults for _ in range(n)]
        rng.shuffle(kinds)
        # the run's rounds but the first and the last (the last one shows the
        # cluster recovered)
        offset = self.first_round - 1
        usable = [offset + r for r in range(2, max(2, self.rounds - 1) + 1)]
        self._plan = [
            (usable[i * len(usable) // len(kinds)], k, rng.choice(ROLE_PHASES))
            for i, k in enumerate(kinds)
        ]
        self._rng = rng
        self._t0 = time.monotonic()
        self._active: Fault | None = None
        self._until = 0.0
        self._restarting: tuple[Fault, float] | None = None  # (fault, wall time of the restart)
        self.churn = Churn(self.state, self.progress, self._t0)
        self._reorger: Any = None
        if "reorg" in kinds:
            from flocknode.cluster.reorg import Reorger  # it builds on Fault: imported late

            self._reorger = Reorger(self.state, self.spec.seed)

    @property
    def pending(self) -> int:
        return len(self._plan)

    @property
    def active(self) -> bool:
        """A fault is in progress (a node is down, paused or restarting)."""
        return self._active is not None or self._restarting is not None

    def tick(self, view: RoundView | None) -> None:
        """Undo the active fault when its time is up; once its node runs again,
        begin the next fault when due."""
        now = time.monotonic()
        self.churn.tick(view)
        out = self._active or (self._restarting[0] if self._restarting else None)
        if out is not None and out.kind in SLOWING_KINDS:
            out = None  # a node behind a faulty RPC or slow links is not out: it acts through
        if out is not None and view is not None and view.round not in out.out_rounds:
            out.out_rounds.append(view.round)
        if self._active is not None:
            if now >= self._until:
                self._undo(self._active, now)
            return
        if self._restarting is not None:
            fault, since = self._restarting
            if not self._runs_again(fault.node, since) and now < self._until + RESTART_LIMIT:
                return
            self._restarting = None
        if view is None or not self._plan or view.phase not in ROLE_PHASES:
            return
        due, kind, phase = self._plan[0]
        # from the drawn phase of the due round on: a phase can pass between two
        # looks (a reveal phase ends as soon as every vote is revealed), and then
        # the fault lands in the next role phase seen rather than a round later
        if view.round < due or (view.round == due and view.phase < phase):
            return
        if kind == "partition":
            self._partition(view, now)
            return
        if kind in CHURN_KINDS:
            if self.churn.begin(kind, view, {f.node for f in self.faults if not f.undone}):
                self._plan.pop(0)
            return
        if kind == "reorg":
            self._reorg(view, now)
            return
        if (
            kind in LAST_ROUND_UNSAFE
            and self.rounds > 2
            and view.round >= self.first_round + self.rounds - 1
        ):
            # a fault the faults before it pushed into the run's last round: the
            # run ends when that round finalizes, before the stopped or cut-off
            # node has the round's model, and it would count as an honest node
            # behind; it is left out (``not_injected``) rather than break ``agreement``
            return
        honest = {n.wallet.lower(): n.name for n in self.state.nodes if n.behaviour == "honest"}
        seats = [("proposer", w) for w in view.proposers] + [("voter", w) for w in view.voters]
        seats = [(role, honest[w.lower()]) for role, w in seats if w.lower() in honest]
        seats = [(r, name) for r, name in seats if _alive(self.state.node(name).pid)]
        leaving = {lv.node for lv in self.churn.leaves}  # a leaver is not restarted
        seats = [(r, n) for r, n in seats if n not in leaving]
        # a voter only while it can come back and still reveal
        room = view.reveal_end - self.wall()
        seats = [
            (r, n)
            for r, n in seats
            if r == "proposer" or room >= self.spec.down_seconds + VOTER_ROOM[kind]
        ]
        if not seats:
            return
        role, name = self._rng.choice(seats)
        self._plan.pop(0)
        fault = Fault(kind, name, view.round, view.phase.label, role, now - self._t0)
        seconds = self.spec.down_seconds
        if kind == "kill":
            kill_node(self.state, name)
        elif kind == "rpc":
            if self.rpc is not None:
                self.rpc.window(name, True)
            seconds = WINDOW_SECONDS
        elif kind == "latency":
            fault = self._slow(fault)
            seconds = LATENCY_SECONDS
        else:
            os.kill(self.state.node(name).pid, signal.SIGSTOP)
        if kind not in SLOWING_KINDS:
            fault.out_rounds.append(view.round)
        self.faults.append(fault)
        self._active, self._until = fault, now + seconds
        self.progress(f"chaos: {kind} {name} ({role} of round {view.round}, {view.phase.label})")

    def _slow(self, fault: Fault) -> LatencyFault:
        """Begin a latency fault on ``fault``'s node (no relays: recorded only)."""
        out = LatencyFault(**{k: v for k, v in vars(fault).items()})
        # the links slowed: to a drawn non-empty set of the other running nodes
        others = [n.name for n in self.state.nodes if n.name != fault.node and n.pid]
        count = self._rng.randint(1, len(others)) if others else 0
        out.links = sorted(self._rng.sample(others, count))
        if self.relays is not None:
            peers = {m: self.state.node(m).pid for m in out.links}
            every = len(out.links) == len(others)
            pid = self.state.node(fault.node).pid
            active = self.relays.fault(fault.node, pid, None if every else peers)
            f = active.settings
            out.delay_ms, out.jitter_ms = round(active.delay * 1000, 1), f.jitter * 1000
            out.loss, out.rto_ms, out.rto_cap_ms = f.loss, f.rto * 1000, f.rto_cap * 1000
        return out

    def _partition(self, view: RoundView, now: float) -> None:
        sides = partition.split(self.state, view, self._rng)
        if sides is None:
            return
        minority, majority = sides
        partition.cut(self.state, minority, majority)
        self._plan.pop(0)
        names, began = ",".join(minority), now - self._t0
        fault = Fault("partition", names, view.round, view.phase.label, "minority", began)
        fault.sides = [minority, majority]
        fault.out_rounds.append(view.round)
        self.faults.append(fault)
        self._active, self._until = fault, now + partition.SECONDS
        self.progress(f"chaos: partition {minority} | {majority} (round {view.round})")

    def _reorg(self, view: RoundView, now: float) -> None:
        fault = self._reorger.inject(view, now - self._t0)
        if fault is None:
            return
        self._plan.pop(0)
        self.faults.append(fault)
        self.progress(
            f"chaos: reorg of {fault.depth} blocks ({fault.method}) in round {view.round}, "
            f"{view.phase.label}: {len(fault.removed)} transactions removed"
        )

    def finish(self) -> None:
        """Undo a fault still active (the run ended or was interrupted)."""
        if self._active is not None:
            self._undo(self._active, time.monotonic())
        self._restarting = None

    def _runs_again(self, name: str, since: float) -> bool:
        try:
            return self.state.node(name).layout.status_file.stat().st_mtime > since
        except OSError:
            return False

    def _undo(self, fault: Fault, now: float) -> None:
        if fault.kind == "kill":
            self._restarting = (fault, time.time())
            start_node(self.state, fault.node)
        elif fault.kind == "partition":
            for line in partition.heal(self.state, *fault.sides):
                self.progress(f"chaos: heal: {line}")
        elif fault.kind == "rpc":
            if self.rpc is not None:
                self.rpc.window(fault.node, False)
        elif fault.kind == "latency":
            if self.relays is not None:
                self.relays.clear(fault.node)
        else:
            pid = self.state.node(fault.node).pid
            if pid and _alive(pid):
                os.kill(pid, signal.SIGCONT)
        fault.seconds = now - self._t0 - fault.began
        fault.undone = True
        self._active = None
        self.progress(f"chaos: {fault.node} back after {fault.seconds:.1f} s")

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.text,
            "seed": self.spec.seed,
            "faults": [f.to_json() for f in self.faults],
            "churn": self.churn.to_json(),
            "not_injected": [k for _, k, _ in self._plan],
            **({"rpc": self.rpc.to_json()} if self.rpc is not None else {}),
            **({"latency": self.relays.to_json()} if self.relays is not None else {}),
        }


class ChaosRunner:
    """Runs ``chaos`` in a thread of its own, on the chain's current round as
    ``read_view`` reads it every ``every`` seconds, so a fault is undone on time
    whatever the caller's loop waits for (``cluster up``'s monitor waits up to
    20 s for the nodes to hold a finalized model, a paused one included)."""

    def __init__(
        self,
        chaos: Chaos,
        read_view: Callable[[], RoundView | None],
        every: float = 0.1,
    ) -> None:
        self.chaos, self.read_view, self.every = chaos, read_view, every
        self.read_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and undo a fault still active (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.chaos.finish()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                view = self.read_view()
            except Exception:  # an RPC hiccup: the next look decides
                self.read_errors += 1
                view = None
                if not self.chaos.active:
                    continue
            self.chaos.tick(view)


def invariants(
    state: ClusterState,
    rounds: list[dict[str, Any]],
    views: dict[int, RoundView],
    slashes: list[Slashed],
    faults: list[Fault],
    initial_model: str,
    usage: Mapping[int, Mapping[str, Usage]] | None = None,
    keep_rounds: int = 0,
    expected_rounds: int = 0,
    gone: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """The promises a run keeps under its faults, each with its figures.

    - ``agreement``: no live honest node reported a global model that is not a
      finalized one (a node catching up may hold an earlier one), every honest
      node is running at the end and holds the last round's model (but for the
      nodes ``gone`` names: churn's leavers and spares that never joined);
    - ``honest_not_slashed``: an honest node is slashed only for idling, and
      only in a round current while the chaos had it out (down, paused,
      restarting after a kill, or on a partition's minority side; never
      behind a faulty RPC or slowed links: such a node runs and must act);
    - ``committed_votes_revealed``: every vote committed in a finalized round
      was revealed (honest voters only: a byzantine ``no_reveal`` voter is the
      slash's business);
    - ``rounds_finalized``: every round of the run (``expected_rounds``; the
      task's rounds if 0) finalized;
    - ``bounded_growth``: no node's memory, descriptors or disk kept growing
      (cluster/resources.py; ``usage`` by finalized round);
    - ``resumes_after_partition`` (runs with a partition only): a round has a
      winning vote again within 3 rounds of each heal.
    """
    name = {n.wallet.lower(): n for n in state.nodes}
    honest = {n.name for n in state.nodes if n.behaviour == "honest"}
    finalized = [r for r in rounds if not r["voided"]]
    known = {initial_model} | {r["model_after"] for r in finalized}
    stray: list[str] = []
    for r in finalized:
        for node, held in r["node_hashes"].items():
            if node in honest and held and held not in known:
                stray.append(f"round {r['round']}: {node} held {held[:12]}")
    at_end: dict[str, str] = finalized[-1]["node_hashes"] if finalized else {}
    final = finalized[-1]["model_after"] if finalized else ""
    down = sorted(honest - set(at_end) - gone)  # the chaos restarts every node it stops: a crash
    behind = [n for n in sorted(honest & set(at_end)) if at_end[n] != final]
    stopped = {(r, node) for f in faults for r in f.out_rounds for node in f.out_nodes}
    bad_slashes, excused = [], 0
    for s in slashes:
        n = name.get(s.wallet.lower())
        if n is None or n.name not in honest:
            continue
        if s.reason.startswith("idle") and (s.round, n.name) in stopped:
            excused += 1
        else:
            bad_slashes.append(f"round {s.round}: {n.name} ({s.reason})")
    unrevealed = []
    for number, v in sorted(views.items()):
        if v.phase is not Phase.FINALIZED:
            continue
        for wallet, vote in zip(v.voters, v.votes, strict=True):
            n = name.get(wallet.lower())
            if n is not None and n.name in honest and vote.committed and not vote.revealed:
                unrevealed.append(f"round {number}: {n.name}")
    checks: dict[str, dict[str, Any]] = {
        "agreement": {
            "ok": not stray and not behind and not down,
            "stray_models": stray,
            "not_holding_the_last_model": behind,
            "honest_nodes_down": down,
        },
        "honest_not_slashed": {
            "ok": not bad_slashes,
            "slashes": bad_slashes,
            "idle_slashes_of_stopped_nodes": excused,
        },
        "committed_votes_revealed": {"ok": not unrevealed, "unrevealed": unrevealed},
        "rounds_finalized": {
            "ok": len(finalized) >= (expected_rounds or state.rounds),
            "finalized": len(finalized),
            "voided": len(rounds) - len(finalized),
        },
        "bounded_growth": growth(usage or {}, keep_rounds, [n.name for n in state.nodes]),
    }
    cuts = [(max(f.out_rounds), f.sides[0]) for f in faults if f.kind == "partition"]
    if cuts:
        checks["resumes_after_partition"] = partition.resumes_after_partition(rounds, cuts)
    return checks
