"""Watching a local cluster: live progress lines and the end-of-run summary.

Reads the chain (rounds, roles, finalization, slashes) and each node's
``status.json`` (which global model it holds). The metric is the task's report
on the global model (test accuracy for classifiers, ``test_loss`` for
``lm-lora``) over the held-out test split (the files ``cluster up`` wrote to
``data/test``), evaluated here on the model a node stored. ``update_bytes`` is
the size of one sealed update (the exchanged entries, in the task's
compression: every update has that size); ``model_bytes`` the canonical bytes
of the full model state, frozen entries included. A round's ``bytes_sent`` is
what the nodes served over their content streams (update blobs and models)
from the previous round's finalization to this one's, summed over the nodes
(their ``bytes_served`` counters in ``status.json``; a restarted node counts
from zero).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flocknode.chain.client import TaskClient
from flocknode.chain.events import RoundVoided, Slashed
from flocknode.chain.types import Phase, RoundView
from flocknode.cluster.launcher import ClusterState, node_status
from flocknode.cluster.resources import Usage, sample
from flocknode.config import NodeConfig, load_config
from flocknode.connect import connect
from flocknode.crypto import canonical_size, parse_canonical
from flocknode.errors import FlockError
from flocknode.learning.learner import Learner
from flocknode.learning.models import build_model, model_state
from flocknode.learning.settings import TaskSettings
from flocknode.learning.task import Evaluation
from flocknode.p2p.metrics import BYTES_SERVED
from flocknode.rounds.update_form import update_form


def _hex(h: bytes) -> str:
    """0x-hex of a hash; "" for none (all zero bytes)."""
    return "0x" + h.hex() if any(h) else ""


@dataclass
class RoundSummary:
    round: int
    accepted: bool
    model_after: str  # the task's global model after the round (the previous one if rejected)
    winning_aggregate: str  # the aggregate the round's voters agreed on ("" if none)
    accuracy: float | None  # of model_after on the held-out test split
    node_hashes: dict[str, str]
    slashed: list[str]
    proposers: list[str]
    voters: list[str]
    seconds: float
    voided: bool = False
    update_bytes: int = 0
    bytes_sent: int = 0
    metric_name: str = "test_accuracy"  # the task's report: test_accuracy, or test_loss (lm-lora)
    metric: float | None = None  # its value for model_after (the accuracy if not given)
    usage: dict[str, Usage] = field(default_factory=dict)  # live nodes' at finalization

    def __post_init__(self) -> None:
        if self.metric is None and self.metric_name == "test_accuracy":
            self.metric = self.accuracy

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "accepted": self.accepted,
            "model_after": self.model_after,
            "winning_aggregate": self.winning_aggregate,
            "accuracy": self.accuracy,
            "node_hashes": self.node_hashes,
            "slashed": self.slashed,
            "proposers": self.proposers,
            "voters": self.voters,
            "seconds": round(self.seconds, 2),
            "voided": self.voided,
            "metric": {"name": self.metric_name, "value": self.metric},
            "update_bytes": self.update_bytes,
            "bytes_sent": self.bytes_sent,
            "usage": {n: u.to_json() for n, u in self.usage.items()},
        }


def round_summary(
    view: RoundView,
    name: Callable[[str], str],
    *,
    accuracy: float | None,
    node_hashes: dict[str, str],
    slashed: list[str],
    seconds: float,
    update_bytes: int = 0,
    metric: tuple[str, float | None] = ("test_accuracy", None),
) -> RoundSummary:
    """A finalized round's line in the summary, from its on-chain view.

    ``model_after`` is the task's global model once the round is over: the
    winning aggregate when the round was accepted, the model before it when it
    was not (or the rollback model voters fell back to).
    """
    return RoundSummary(
        round=view.round,
        accepted=view.accepted,
        model_after="0x" + view.global_model_hash_after.hex(),
        winning_aggregate=_hex(view.winning_hash),
        accuracy=accuracy,
        node_hashes=node_hashes,
        slashed=slashed,
        proposers=[name(p) for p in view.proposers],
        voters=[name(v) for v in view.voters],
        seconds=seconds,
        update_bytes=update_bytes,
        metric_name=metric[0],
        metric=metric[1],
    )


def cluster_client(state: ClusterState) -> TaskClient:
    """A read-only client of the cluster's task, on a connection of its own."""
    chain = {"rpc_url": state.rpc_url, "chain_id": state.chain_id, "task": state.task}
    return connect(NodeConfig.model_validate({"chain": chain}), account=None)


@dataclass
class Monitor:
    state: ClusterState
    progress: Any = print
    rounds: list[RoundSummary] = field(default_factory=list)
    initial_accuracy: float | None = None
    initial_metric: float | None = None
    first_round: int = 1  # follow rounds from this one on ...
    read_errors: int = 0
    follow: int = 0  # ... until this many finalized (0: the task's rounds)

    def __post_init__(self) -> None:
        self.client = cluster_client(self.state)
        settings = TaskSettings.from_canonical_json(Path(self.state.settings_file).read_bytes())
        node0 = load_config(Path(self.state.nodes[0].data_dir) / "node.toml", environ={})
        test = self.state.test_path or (
            node0.path(node0.data.test_path) if node0.data.test_path else None
        )
        base = node0.path(node0.task.base_model) if node0.task.base_model else None
        self.keep_rounds = node0.store.keep_rounds
        package = Path(self.state.package_dir) if self.state.package_dir else None
        self.learner = Learner.from_settings(
            settings.training,
            node0.path(node0.data.path),
            test,
            base_model=base,
            package_dir=package,
        )
        # the task's report: accuracy for classifiers, held-out loss for lm-lora
        self.metric = str(getattr(self.learner.task, "report_metric", "accuracy"))
        init = self.learner.initial_state()
        # the full model (with entries that are not exchanged, such as a frozen base)
        task = self.learner.task
        full = model_state(build_model(task.build_model, init, settings.training.init_seed))
        self.model_bytes = canonical_size(full)
        self.update_bytes = update_form(init, settings.aggregation).blob_size
        self._served: dict[str, int] = {}  # each node's bytes_served at the last finalization
        self.names = {n.wallet.lower(): n.name for n in self.state.nodes}
        self.views: dict[int, RoundView] = {}  # finalized rounds
        self.slash_events: list[Slashed] = []
        self._seen_phase: dict[int, Phase] = {}
        self._round_start: dict[int, float] = {}
        self._events_from = 0

    def name(self, wallet: str) -> str:
        return self.names.get(wallet.lower(), wallet)

    def accuracy_of(self, model_hash: bytes) -> float | None:
        for n in self.state.nodes:
            # read only: opening a ContentStore would clear a running node's temp files
            p = n.layout.store / model_hash.hex()
            if p.exists():
                try:
                    state = parse_canonical(p.read_bytes())
                except Exception:
                    continue
                return self.learner.evaluate(state, "test").accuracy
        return None

    def metric_of(self, model_hash: bytes) -> tuple[float | None, float | None]:
        """(accuracy, the task's report metric) of a stored model on the test split."""
        for n in self.state.nodes:
            p = n.layout.store / model_hash.hex()
            if p.exists():
                try:
                    state = parse_canonical(p.read_bytes())
                except Exception:
                    continue
                return self._report(self.learner.evaluate(state, "test"))
        return None, None

    def _report(self, ev: Evaluation) -> tuple[float | None, float | None]:
        if self.metric == "accuracy":
            return ev.accuracy, ev.accuracy
        return None, float(ev.metrics[self.metric])

    def run(self, timeout: float, settle: float = 30.0) -> bool:
        """Follow the rounds until the last is finalized; True if every round finalized."""
        deadline = time.monotonic() + timeout
        total = self.follow or self.state.rounds
        if self.initial_metric is None:
            init = self.learner.initial_state()
            ev = self.learner.evaluate(init, "test")
            self.initial_accuracy, self.initial_metric = self._report(ev)
            self.progress(f"initial model: test {self.metric} {self.initial_metric:.3f}")
        while time.monotonic() < deadline:
            try:
                self._step()
            except FlockError as e:  # a read the chain refused (a reorg moved it): look again
                self.read_errors += 1
                if self.read_errors in (1, 10, 100):
                    self.progress(f"chain read failed ({self.read_errors}): {e}")
            if len([r for r in self.rounds if not r.voided]) >= total:
                return True
            time.sleep(0.25)
        self.progress(f"timed out after {timeout:.0f} s")
        return False

    def _step(self) -> None:
        cur = self.client.current_round()
        if cur < self.first_round:
            return
        self.state.refresh_pids()
        done = {r.round for r in self.rounds}
        for r in range(max(self.first_round, cur - 2), cur + 1):
            if r in done:
                continue
            view = self.client.get_round(r)
            prev = self._seen_phase.get(r)
            if prev is None:
                self._round_start[r] = time.monotonic()
            if view.phase != prev:
                self._seen_phase[r] = view.phase
                if view.phase is Phase.TRAIN:
                    self.progress(
                        f"round {r}: train   proposers {', '.join(map(self.name, view.proposers))}"
                        f" | voters {', '.join(map(self.name, view.voters))}"
                    )
                elif view.phase in (Phase.COMMIT, Phase.REVEAL):
                    self.progress(f"round {r}: {view.phase.label}")
            if view.phase is Phase.FINALIZED:
                self._finalized(r, view)
            elif view.phase is Phase.VOIDED:
                self._voided(r)

    def _slashes(self, r: int) -> tuple[list[str], list[str]]:
        events = self.client.events(self._events_from)
        # a round's slashes come with its finalization, after every earlier event:
        # the next round's look-up starts past what this one read
        if events:
            self._events_from = max(e.block_number for e in events) + 1
        self.slash_events += [e for e in events if isinstance(e, Slashed)]
        slashed = [
            self.name(e.wallet) + f" ({e.reason})"
            for e in events
            if isinstance(e, Slashed) and e.round == r
        ]
        return slashed, [e.reason for e in events if isinstance(e, RoundVoided) and e.round == r]

    def _voided(self, r: int) -> None:
        _, reasons = self._slashes(r)
        self.progress(f"round {r}: VOIDED ({'; '.join(reasons) or 'no reason given'})")
        self.rounds.append(
            RoundSummary(
                r,
                False,
                "",
                "",
                None,
                {},
                [],
                [],
                [],
                self._elapsed(r),
                voided=True,
                metric_name=f"test_{self.metric}",
            )
        )

    def _finalized(self, r: int, view: RoundView) -> None:
        self.views[r] = view
        slashed, _ = self._slashes(r)
        h = view.global_model_hash_after
        before = next((x.model_after for x in reversed(self.rounds) if x.model_after), "")
        node_hashes = self._wait_nodes_hold(h, 20.0)
        usage = self.sample_usage()
        acc, value = self.metric_of(h)
        summary = round_summary(
            view,
            self.name,
            accuracy=acc,
            node_hashes=node_hashes,
            slashed=[s.split(" ")[0] for s in slashed],
            seconds=self._elapsed(r),
            update_bytes=self.update_bytes,
            metric=(f"test_{self.metric}", value),
        )
        summary.usage = usage
        summary.bytes_sent = self._bytes_sent()
        self.rounds.append(summary)
        if view.accepted:
            verdict = "accepted"
        elif before and before != summary.model_after:  # voters found it unservable
            verdict = "NOT accepted (model rolled back)"
        else:
            verdict = "NOT accepted (model stays)"
        acc_text = f"{value:.3f}" if value is not None else "n/a"
        held = sum(1 for v in node_hashes.values() if v == summary.model_after)
        self.progress(
            f"round {r}: {verdict}  {self.metric} {acc_text}  model {h.hex()[:10]}  "
            f"held by {held}/{len(node_hashes)} live nodes  {summary.seconds:.1f} s"
            + (f"  slashed: {', '.join(slashed)}" if slashed else "")
        )

    def _bytes_sent(self) -> int:
        """Bytes the nodes served since the last call (a counter that went back: a restart)."""
        total = 0
        for n in self.state.nodes:
            status = node_status(n).status
            if status is None:
                continue
            now = int(status.p2p.events.get(BYTES_SERVED, 0))
            before = self._served.get(n.name, 0)
            total += now - before if now >= before else now
            self._served[n.name] = now
        return total

    def sample_usage(self) -> dict[str, Usage]:
        """Each running node's memory, descriptors and disk (cluster/resources.py)."""
        out = {}
        for n in self.state.nodes:
            u = sample(n.pid, n.layout.store, n.layout.journal) if n.pid else None
            if u is not None:
                out[n.name] = u
        return out

    def _elapsed(self, r: int) -> float:
        return time.monotonic() - self._round_start.get(r, time.monotonic())

    def _wait_nodes_hold(self, h: bytes, timeout: float) -> dict[str, str]:
        """Live nodes' global model hashes, waiting a little for stragglers (a
        node still starting, with no status file yet, is none: it is left out;
        a node holding the task's current model, when later rounds moved it on
        while the monitor caught up, is none either)."""
        want = "0x" + h.hex()
        deadline = time.monotonic() + timeout
        while True:
            hashes = {}
            for n in self.state.nodes:
                report = node_status(n)
                if report.alive and report.status is not None:
                    hashes[n.name] = report.holds
            done = {want, "0x" + self.client.global_model_hash().hex()}
            if all(v in done for v in hashes.values()) or time.monotonic() > deadline:
                return hashes
            time.sleep(0.25)
