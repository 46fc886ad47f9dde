"""Watching a local cluster: live progress lines and the end-of-run summary.

Reads the chain (rounds, roles, finalization, slashes) and each node's
``status.json`` (which global model it holds). Accuracy is the global model's
on the held-out test split (the files ``cluster up`` wrote to ``data/test``),
evaluated here on the model a node stored. ``update_bytes`` is the size of one
sealed update of the task's model (every update has the model's shapes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flocknode.chain.events import RoundVoided, Slashed
from flocknode.chain.types import Phase, RoundView
from flocknode.cluster.launcher import ClusterState, node_status
from flocknode.config import NodeConfig, load_config
from flocknode.connect import connect
from flocknode.crypto import canonical_size, parse_canonical
from flocknode.crypto.envelope import ABYTES, DEFAULT_CHUNK_SIZE, HEAD_LEN
from flocknode.learning.learner import Learner
from flocknode.learning.settings import TaskSettings


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
            "metric": {"name": "test_accuracy", "value": self.accuracy},
            "update_bytes": self.update_bytes,
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
    )


@dataclass
class Monitor:
    state: ClusterState
    progress: Any = print
    rounds: list[RoundSummary] = field(default_factory=list)
    initial_accuracy: float | None = None

    def __post_init__(self) -> None:
        chain = {
            "rpc_url": self.state.rpc_url,
            "chain_id": self.state.chain_id,
            "task": self.state.task,
        }
        self.client = connect(NodeConfig.model_validate({"chain": chain}), account=None)
        settings = TaskSettings.from_canonical_json(Path(self.state.settings_file).read_bytes())
        node0 = load_config(Path(self.state.nodes[0].data_dir) / "node.toml", environ={})
        test = self.state.test_path or (
            node0.path(node0.data.test_path) if node0.data.test_path else None
        )
        self.learner = Learner.from_settings(settings.training, node0.path(node0.data.path), test)
        self.model_bytes = canonical_size(self.learner.initial_state())
        chunks = -(-self.model_bytes // DEFAULT_CHUNK_SIZE)
        self.update_bytes = HEAD_LEN + self.model_bytes + ABYTES * chunks
        self.names = {n.wallet.lower(): n.name for n in self.state.nodes}
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

    def run(self, timeout: float, settle: float = 30.0) -> bool:
        """Follow the rounds until the last is finalized; True if every round finalized."""
        deadline = time.monotonic() + timeout
        total = self.state.rounds
        if self.initial_accuracy is None:
            init = self.learner.initial_state()
            self.initial_accuracy = self.learner.evaluate(init, "test").accuracy
            self.progress(f"initial model: test accuracy {self.initial_accuracy:.3f}")
        while time.monotonic() < deadline:
            self._step()
            if len([r for r in self.rounds if not r.voided]) >= total:
                return True
            time.sleep(0.25)
        self.progress(f"timed out after {timeout:.0f} s")
        return False

    def _step(self) -> None:
        cur = self.client.current_round()
        if cur == 0:
            return
        done = {r.round for r in self.rounds}
        for r in range(max(1, cur - 2), cur + 1):
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
            RoundSummary(r, False, "", "", None, {}, [], [], [], self._elapsed(r), voided=True)
        )

    def _finalized(self, r: int, view: RoundView) -> None:
        slashed, _ = self._slashes(r)
        h = view.global_model_hash_after
        before = next((x.model_after for x in reversed(self.rounds) if x.model_after), "")
        node_hashes = self._wait_nodes_hold(h, 20.0)
        acc = self.accuracy_of(h)
        summary = round_summary(
            view,
            self.name,
            accuracy=acc,
            node_hashes=node_hashes,
            slashed=[s.split(" ")[0] for s in slashed],
            seconds=self._elapsed(r),
            update_bytes=self.update_bytes,
        )
        self.rounds.append(summary)
        if view.accepted:
            verdict = "accepted"
        elif before and before != summary.model_after:  # voters found it unservable
            verdict = "NOT accepted (model rolled back)"
        else:
            verdict = "NOT accepted (model stays)"
        acc_text = f"{acc:.3f}" if acc is not None else "n/a"
        held = sum(1 for v in node_hashes.values() if v == summary.model_after)
        self.progress(
            f"round {r}: {verdict}  accuracy {acc_text}  model {h.hex()[:10]}  "
            f"held by {held}/{len(node_hashes)} live nodes  {summary.seconds:.1f} s"
            + (f"  slashed: {', '.join(slashed)}" if slashed else "")
        )

    def _elapsed(self, r: int) -> float:
        return time.monotonic() - self._round_start.get(r, time.monotonic())

    def _wait_nodes_hold(self, h: bytes, timeout: float) -> dict[str, str]:
        """Live nodes' global model hashes, waiting a little for stragglers."""
        want = "0x" + h.hex()
        deadline = time.monotonic() + timeout
        while True:
            hashes = {}
            for n in self.state.nodes:
                report = node_status(n)
                if report.alive:
                    hashes[n.name] = report.holds
            if all(v == want for v in hashes.values()) or time.monotonic() > deadline:
                return hashes
            time.sleep(0.25)
