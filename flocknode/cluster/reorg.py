"""``--chaos reorg``: chain reorganisations on a local cluster (docs/protocol.md,
"Faults and the promises kept under them"; "Chain reorganisations and
confirmations").

A reorg fault replaces the chain's last 1-3 blocks (depth drawn from the
seed; fewer when a block in reach opens or elects a round, which stays) with
empty ones, through anvil's ``anvil_reorg`` (same height) or
``anvil_rollback`` (the height goes back; the next blocks are new), method
drawn too: the transactions in those blocks are gone from the chain and from
anvil's pool, as on a real chain whose fork lost. It waits, in the drawn round
and phase, until a seat holder's ``submitUpdate``, ``commitVote`` or
``revealVote`` is within reach (in the last ``depth`` blocks), so what the
nodes saw mined and counted as done disappears; after ``WAIT_FOR_SEAT_TX``
seconds without one it reorganises whatever is there. The fault records the
depth, the method and every transaction removed (hash, sender node, task
function, round).

Checked after the run (``reorg_invariants``): every removed transaction of a
cluster node was mined again (the node's sender broadcast its bytes again),
and every removed commit or reveal of an honest voter ended revealed in its
finalized round.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_utils import function_abi_to_4byte_selector, to_checksum_address

from flocknode.chain.anvil import rpc_request
from flocknode.chain.contracts import load_artifact
from flocknode.chain.types import Phase, RoundView
from flocknode.cluster.chaos import Fault
from flocknode.cluster.launcher import ClusterState

MAX_DEPTH = 3
# chain.confirmations of the nodes of a reorg run: each transaction is waited
# on for one block over it, so a reorganisation of its block while the sender
# waits is met by the sender itself, and a deeper one removes transactions the
# node already counted as done (met by its watch of sent transactions): one run
# exercises both ways back, for about one block (1 s) more per transaction
REORG_CONFIRMATIONS = 1
METHODS = ("anvil_reorg", "anvil_rollback")
WAIT_FOR_SEAT_TX = 20.0  # seconds a due reorg waits for a seat transaction in reach
# the seat transactions a reorg aims at, and the role that sends each
SEAT_FUNCTIONS = {"submitUpdate": "proposer", "commitVote": "voter", "revealVote": "voter"}
VOTE_FUNCTIONS = ("commitVote", "revealVote")
ROUND_FUNCTIONS = ("openRound", "electRoles")  # never reorganised away (see inject)

Rpc = Callable[[str, list[object]], object]


@dataclass
class ReorgFault(Fault):
    depth: int = 0
    method: str = ""
    # each removed transaction: {"hash", "wallet", "node" ("" for none of the
    # cluster's wallets), "action" (the task function, "" for another call), "round"}
    removed: list[dict[str, Any]] = field(default_factory=list)


def task_functions() -> dict[bytes, str]:
    """FlockTask's function names by selector."""
    abi = load_artifact("FlockTask").abi
    return {
        function_abi_to_4byte_selector(e): str(e["name"])  # type: ignore[arg-type]
        for e in abi
        if e.get("type") == "function"
    }


def describe(tx: dict[str, Any], task: str, nodes: dict[str, str], fns: dict[bytes, str]) -> dict:
    """What the fault records of one removed transaction."""
    data = bytes.fromhex(str(tx.get("input", "0x"))[2:])
    to = str(tx.get("to") or "")
    action = fns.get(data[:4], "") if to and to.lower() == task.lower() else ""
    takes_round = action in SEAT_FUNCTIONS or action in ("electRoles", "finalizeRound")
    return {
        "hash": str(tx["hash"]),
        "wallet": to_checksum_address(str(tx["from"])),
        "node": nodes.get(str(tx["from"]).lower(), ""),
        "action": action,
        "round": int.from_bytes(data[4:36], "big") if takes_round and len(data) >= 36 else 0,
    }


class Reorger:
    """Draws and injects the reorg faults of one run on the cluster's anvil."""

    def __init__(
        self,
        state: ClusterState,
        seed: int,
        rpc: Rpc | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.rng = random.Random(f"reorg-{seed}")
        self.rpc: Rpc = rpc or (lambda method, params: rpc_request(state.rpc_url, method, params))
        self.clock = clock
        self.nodes = {n.wallet.lower(): n.name for n in state.nodes}
        self.honest = {n.name for n in state.nodes if n.behaviour == "honest"}
        self.functions = task_functions()
        self._draw: tuple[int, str, float] | None = None  # depth, method, when first due

    def inject(self, view: RoundView, began: float) -> ReorgFault | None:
        """Reorganise now if a seat transaction is in reach (or waiting is over)."""
        if self._draw is None:
            depth = self.rng.randint(1, MAX_DEPTH)
            self._draw = (depth, self.rng.choice(METHODS), self.clock())
        depth, method, since = self._draw
        head = int(str(self.rpc("eth_blockNumber", [])), 16)
        if head <= depth:
            return None
        # newest first, stopping short of a block that opens or elects a round:
        # roles re-drawn from a replaced seed block are beyond what the nodes
        # recover from (docs/protocol.md, "Chain reorganisations and confirmations")
        txs: list[dict[str, Any]] = []
        reach = 0
        for number in range(head, head - depth, -1):
            block = self.rpc("eth_getBlockByNumber", [hex(number), True])
            found = [
                describe(tx, self.state.task, self.nodes, self.functions)
                for tx in (block.get("transactions", []) if isinstance(block, dict) else [])
            ]
            if any(t["action"] in ROUND_FUNCTIONS for t in found):
                break
            txs = found + txs
            reach += 1
        if reach == 0:
            return None
        aimed = [t for t in txs if t["action"] in SEAT_FUNCTIONS and t["node"] in self.honest]
        if not aimed and self.clock() - since < WAIT_FOR_SEAT_TX:
            return None
        # a block mined since the read would be reorganised unrecorded: read again next time
        if int(str(self.rpc("eth_blockNumber", [])), 16) != head:
            return None
        self.rpc(method, [reach, []] if method == "anvil_reorg" else [reach])
        self._draw = None
        # a block mined between the read and the call shifts the replaced range
        # up by one: a transaction with a receipt still was not removed
        txs = [t for t in txs if self.rpc("eth_getTransactionReceipt", [t["hash"]]) is None]
        aimed = [t for t in aimed if t in txs]
        first = aimed[0] if aimed else {"node": "", "action": ""}
        return ReorgFault(
            kind="reorg",
            node=first["node"],
            round=view.round,
            phase=view.phase.label,
            role=SEAT_FUNCTIONS.get(first["action"], ""),
            began=began,
            undone=True,
            depth=reach,
            method=method,
            removed=txs,
        )


def tx_mined(state: ClusterState) -> Callable[[str], bool]:
    """Whether a transaction hash has a receipt on the cluster's chain now."""

    def mined(tx_hash: str) -> bool:
        return rpc_request(state.rpc_url, "eth_getTransactionReceipt", [tx_hash]) is not None

    return mined


def reorg_invariants(
    faults: list[Fault], views: dict[int, RoundView], mined: Callable[[str], bool], honest: set[str]
) -> dict[str, dict[str, Any]]:
    """The promises a reorg run keeps (none without a reorg fault).

    - ``reorged_txs_mined_again``: every removed transaction of a cluster node
      is on chain again at the end (``mined``: its hash has a receipt);
    - ``reorged_votes_revealed``: every removed commit or reveal of an honest
      voter is revealed in its round, once that round finalized.
    """
    reorgs = [f for f in faults if isinstance(f, ReorgFault)]
    if not reorgs:
        return {}
    removed = [t for f in reorgs for t in f.removed]
    own = [t for t in removed if t["node"]]
    missing = [
        f"{t['node']} {t['action'] or 'tx'} {t['hash']}" for t in own if not mined(t["hash"])
    ]
    unrevealed: list[str] = []
    votes = [t for t in own if t["action"] in VOTE_FUNCTIONS and t["node"] in honest]
    for t in votes:
        v = views.get(t["round"])
        if v is None or v.phase is not Phase.FINALIZED:
            continue
        for seat_wallet, vote in zip(v.voters, v.votes, strict=True):
            if seat_wallet.lower() == t["wallet"].lower() and not vote.revealed:
                unrevealed.append(f"round {t['round']}: {t['node']}")
    return {
        "reorged_txs_mined_again": {
            "ok": not missing,
            "removed": len(removed),
            "removed_own": len(own),
            "missing": missing,
        },
        "reorged_votes_revealed": {
            "ok": not unrevealed,
            "removed_votes": len(votes),
            "unrevealed": unrevealed,
        },
    }
