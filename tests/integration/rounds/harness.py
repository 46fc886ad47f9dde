"""A real local cluster for the round-engine tests: anvil + N ``flocknode run`` processes.

Nothing is mocked: the nodes are separate processes that talk libp2p on loopback
and send transactions to a real anvil; the test reads the chain and the nodes'
status files, and kills and restarts processes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.events import ChainEvent
from flocknode.chain.types import Phase, RoundView
from flocknode.cluster.launcher import (
    ClusterSpec,
    ClusterState,
    create_cluster,
    down,
    kill_node,
    node_status,
    start_node,
)
from flocknode.cluster.monitor import Monitor


class Harness:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        conn = ChainConnection(state.rpc_url, None, expected_chain_id=state.chain_id)
        self.client = TaskClient(conn, state.task)
        self.monitor = Monitor(state, progress=lambda line: None)
        self.by_wallet = {n.wallet: n.name for n in state.nodes}

    def wallet(self, name: str) -> str:
        return self.state.node(name).wallet

    def start(self, *names: str) -> None:
        for name in names or [n.name for n in self.state.nodes]:
            start_node(self.state, name)

    def kill(self, name: str) -> None:
        kill_node(self.state, name)

    def wait(self, what: str, pred: Callable[[], Any], timeout: float, poll: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            time.sleep(poll)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.tails()}")

    def round_view(self, r: int) -> RoundView | None:
        if self.client.current_round() < r:
            return None
        return self.client.get_round(r)

    def wait_phase(self, r: int, phases: set[Phase], timeout: float = 90) -> RoundView:
        def check() -> RoundView | None:
            v = self.round_view(r)
            return v if v is not None and v.phase in phases else None

        result: RoundView = self.wait(f"round {r} in {phases}", check, timeout)
        return result

    def wait_finalized(self, r: int, timeout: float = 120) -> RoundView:
        return self.wait_phase(r, {Phase.FINALIZED}, timeout)

    def wait_all_hold(self, model_hash: bytes, names: list[str], timeout: float = 60) -> None:
        want = "0x" + model_hash.hex()

        def check() -> bool:
            docs = [node_status(self.state.node(n)).status for n in names]
            return all(s is not None and s.model.held and s.model.global_hash == want for s in docs)

        self.wait(f"nodes {names} to hold {want[:12]}", check, timeout, poll=0.25)

    def events(self, kind: type, r: int | None = None) -> list[Any]:
        evs: list[ChainEvent] = self.client.events(0)
        return [e for e in evs if isinstance(e, kind) and (r is None or e.round == r)]

    def accuracy(self, model_hash: bytes) -> float:
        acc = self.monitor.accuracy_of(model_hash)
        assert acc is not None, "no node holds the model"
        return acc

    def initial_accuracy(self) -> float:
        learner = self.monitor.learner
        return learner.evaluate(learner.initial_state(), "test").accuracy

    def journal(self, name: str, r: int) -> dict[str, Any]:
        p = Path(self.state.node(name).data_dir) / "journal" / f"round-{r}.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def tails(self, lines: int = 15) -> str:
        out = []
        for n in self.state.nodes:
            try:
                text = (Path(n.data_dir) / "node.log").read_text(errors="replace").splitlines()
            except OSError:
                text = []
            out.append(f"--- {n.name} ({n.behaviour}) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


@contextmanager
def cluster(directory: Path, spec: ClusterSpec, start: bool = True) -> Iterator[Harness]:
    # These tests are about the protocol: task code runs in the node process
    # (isolation "none") unless a test asks for the task worker, which has its
    # own tests (tests/integration/worker) and test_cluster_task_package.py.
    if not spec.isolation:
        spec = dataclasses.replace(spec, isolation="none")
    state = create_cluster(directory, spec, progress=lambda line: None)
    h = Harness(state)
    try:
        if start:
            h.start()
        yield h
    finally:
        down(state)
