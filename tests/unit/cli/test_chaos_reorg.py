"""``--chaos reorg``: when it strikes, what it records, what is checked after
(pure logic over a scripted JSON-RPC; the reorg itself runs against a real
anvil in tests/integration/rounds/test_cluster_chaos_reorg.py)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

from eth_utils import function_signature_to_4byte_selector

from flocknode.chain.types import Phase, VoteView
from flocknode.cluster.chaos import Chaos, Fault, parse_chaos
from flocknode.cluster.reorg import Reorger, ReorgFault, describe, reorg_invariants, task_functions
from tests.unit.rounds.views import make_view

TASK = "0x" + "ab" * 20
COMMIT = function_signature_to_4byte_selector("commitVote(uint256,bytes32)")
OPEN = function_signature_to_4byte_selector("openRound()")


def _state(*behaviours: str) -> Any:
    nodes = [
        SimpleNamespace(name=f"node-{i}", wallet=f"0x{i + 1:040x}", behaviour=b, pid=0)
        for i, b in enumerate(behaviours)
    ]
    return SimpleNamespace(nodes=nodes, rounds=3, task=TASK, rpc_url="http://127.0.0.1:1")


def _tx(n: int, sender: str, data: bytes, to: str = TASK) -> dict[str, Any]:
    return {"hash": f"0x{n:064x}", "from": sender, "to": to, "input": "0x" + data.hex()}


def _commit_data(round_number: int) -> bytes:
    return COMMIT + round_number.to_bytes(32, "big") + bytes(32)


class ScriptedChain:
    """Blocks by number, and a log of the anvil methods called."""

    def __init__(self, blocks: dict[int, list[dict[str, Any]]]) -> None:
        self.blocks = blocks
        self.calls: list[tuple[str, list[object]]] = []
        self.grow_on_second_read = False
        self._reads = 0
        self.still_mined: set[str] = set()  # hashes with a receipt after the reorg

    def __call__(self, method: str, params: list[object]) -> object:
        if method == "eth_blockNumber":
            self._reads += 1
            head = max(self.blocks)
            if self.grow_on_second_read and self._reads % 2 == 0:
                head += 1
            return hex(head)
        if method == "eth_getBlockByNumber":
            return {"transactions": self.blocks[int(str(params[0]), 16)]}
        if method == "eth_getTransactionReceipt":
            return {"status": "0x1"} if params[0] in self.still_mined else None
        self.calls.append((method, params))
        return None


def test_the_task_functions_are_known_by_selector() -> None:
    fns = task_functions()
    assert fns[COMMIT] == "commitVote" and fns[OPEN] == "openRound"


def test_a_removed_transaction_is_named_by_node_function_and_round() -> None:
    nodes = {"0x" + "01" * 20: "node-0"}
    fns = task_functions()
    t = describe(_tx(1, "0x" + "01" * 20, _commit_data(7)), TASK, nodes, fns)
    assert (t["node"], t["action"], t["round"]) == ("node-0", "commitVote", 7)
    other = describe(
        _tx(2, "0x" + "02" * 20, _commit_data(7), to="0x" + "cd" * 20), TASK, nodes, fns
    )
    assert (other["node"], other["action"], other["round"]) == ("", "", 0)
    short = describe(_tx(3, "0x" + "01" * 20, COMMIT), TASK, nodes, fns)
    assert (short["action"], short["round"]) == ("commitVote", 0)  # no round argument to read


def test_a_reorg_waits_for_a_seat_transaction_in_reach() -> None:
    state = _state("honest", "honest")
    honest = state.nodes[0].wallet
    chain = ScriptedChain({b: [] for b in range(1, 11)})
    now = [100.0]
    reorger = Reorger(state, seed=4, rpc=chain, clock=lambda: now[0])
    view = make_view(2, Phase.COMMIT)
    assert reorger.inject(view, 1.0) is None  # nothing in reach yet
    depth = reorger._draw[0] if reorger._draw else 0
    assert 1 <= depth <= 3 and chain.calls == []
    # a keeper transaction is not what it waits for
    chain.blocks[10] = [_tx(1, honest, OPEN)]
    assert depth > 0
    assert reorger.inject(view, 1.5) is None and chain.calls == []
    chain.blocks[11] = [_tx(2, honest, _commit_data(2))]
    fault = reorger.inject(view, 2.0)
    assert isinstance(fault, ReorgFault)
    # the block that opened a round stays: only the block after it is replaced
    assert chain.calls == [(fault.method, [1, []] if fault.method == "anvil_reorg" else [1])]
    assert (fault.node, fault.role, fault.round, fault.phase) == ("node-0", "voter", 2, "commit")
    assert fault.depth == 1 and [t["hash"] for t in fault.removed] == [f"0x{2:064x}"]
    assert fault.to_json()["depth"] == 1 and fault.to_json()["removed"] == fault.removed


def test_a_byzantine_nodes_transaction_is_not_aimed_at_and_waiting_ends() -> None:
    state = _state("honest", "sign_flip")
    chain = ScriptedChain({b: [] for b in range(1, 11)})
    chain.blocks[10] = [_tx(1, state.nodes[1].wallet, _commit_data(2))]
    now = [0.0]
    reorger = Reorger(state, seed=1, rpc=chain, clock=lambda: now[0])
    view = make_view(2, Phase.REVEAL)
    assert reorger.inject(view, 0.0) is None
    now[0] = 19.9
    assert reorger.inject(view, 19.9) is None
    now[0] = 20.0  # WAIT_FOR_SEAT_TX passed: whatever is in reach
    fault = reorger.inject(view, 20.0)
    assert fault is not None and fault.node == "" and fault.role == ""
    assert [t["node"] for t in fault.removed] == ["node-1"]


def test_a_block_mined_during_the_read_postpones_the_reorg() -> None:
    state = _state("honest")
    chain = ScriptedChain({b: [] for b in range(1, 11)})
    chain.blocks[10] = [_tx(1, state.nodes[0].wallet, _commit_data(2))]
    chain.grow_on_second_read = True
    reorger = Reorger(state, seed=2, rpc=chain, clock=lambda: 0.0)
    assert reorger.inject(make_view(2, Phase.COMMIT), 0.0) is None
    assert chain.calls == []


def test_a_transaction_the_reorg_left_mined_is_not_counted_removed() -> None:
    # a block mined between the read and the call: the replaced range moved up
    # by one, and the oldest block read (with a node's commit) stayed
    state = _state("honest", "honest")
    chain = ScriptedChain({b: [] for b in range(1, 11)})
    chain.blocks[9] = [_tx(1, state.nodes[0].wallet, _commit_data(2))]
    chain.blocks[10] = [_tx(2, state.nodes[1].wallet, _commit_data(2))]
    chain.still_mined = {f"0x{1:064x}"}
    reorger = Reorger(state, seed=3, rpc=chain, clock=lambda: 0.0)
    reorger._draw = (2, "anvil_rollback", 0.0)
    fault = reorger.inject(make_view(2, Phase.COMMIT), 0.0)
    assert fault is not None and chain.calls == [("anvil_rollback", [2])]
    assert [t["node"] for t in fault.removed] == ["node-1"] and fault.node == "node-1"


def test_the_chaos_plans_and_reports_reorgs() -> None:
    state = _state("honest", "honest")
    chain = ScriptedChain({b: [] for b in range(1, 6)})
    chain.blocks[5] = [_tx(1, state.nodes[1].wallet, _commit_data(2))]
    lines: list[str] = []
    chaos = Chaos(state, parse_chaos("reorg"), 3, lines.append)
    chaos._reorger.rpc = chain
    chaos._plan = [(2, "reorg", Phase.COMMIT)]
    chaos.tick(make_view(2, Phase.TRAIN))  # not the drawn phase yet
    assert chaos.pending == 1 and chain.calls == []
    chaos.tick(make_view(2, Phase.COMMIT))
    assert chaos.pending == 0 and len(chain.calls) == 1 and not chaos.active
    (fault,) = chaos.faults
    assert isinstance(fault, ReorgFault) and fault.node == "node-1"
    assert lines[-1].startswith("chaos: reorg of ")
    assert chaos.to_json()["faults"][0]["removed"][0]["action"] == "commitVote"


def _reorg(removed: list[dict[str, Any]]) -> ReorgFault:
    return ReorgFault("reorg", "", 2, "commit", "voter", 1.0, depth=1, removed=removed)


def _removed(n: int, node: str, wallet: str, action: str, r: int) -> dict[str, Any]:
    return {"hash": f"0x{n:064x}", "wallet": wallet, "node": node, "action": action, "round": r}


def test_no_reorg_no_reorg_checks() -> None:
    kill = Fault("kill", "node-0", 2, "train", "proposer", 1.0)
    assert reorg_invariants([kill], {}, lambda _: True, {"node-0"}) == {}


def test_reorg_checks_hold_and_break() -> None:
    a, b = "0x" + "01" * 20, "0x" + "02" * 20
    votes = (VoteView(True, True, bytes(32), bytes(32), 0, 0, 0, 0),) * 2
    view = dataclasses.replace(make_view(2, Phase.FINALIZED), voters=(a, b), votes=votes)
    fault = _reorg(
        [
            _removed(1, "node-0", a, "commitVote", 2),
            _removed(2, "", "0x" + "09" * 20, "", 0),  # not a cluster wallet: not checked
        ]
    )
    checks = reorg_invariants([fault], {2: view}, lambda h: h.endswith("1"), {"node-0", "node-1"})
    assert checks["reorged_txs_mined_again"] == {
        "ok": True,
        "removed": 2,
        "removed_own": 1,
        "missing": [],
    }
    assert checks["reorged_votes_revealed"] == {"ok": True, "removed_votes": 1, "unrevealed": []}

    unrevealed = (votes[0], VoteView(True, False, bytes(32), bytes(32), 0, 0, 0, 0))
    view = dataclasses.replace(view, votes=unrevealed)
    fault = _reorg([_removed(3, "node-1", b, "revealVote", 2)])
    checks = reorg_invariants([fault], {2: view}, lambda _: False, {"node-0", "node-1"})
    assert not checks["reorged_txs_mined_again"]["ok"]
    assert checks["reorged_txs_mined_again"]["missing"] == [f"node-1 revealVote 0x{3:064x}"]
    assert checks["reorged_votes_revealed"] == {
        "ok": False,
        "removed_votes": 1,
        "unrevealed": ["round 2: node-1"],
    }
