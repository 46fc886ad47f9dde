"""Rounds keep finalizing while hostile registrants sit in the task.

Two staked registrations (heavy stake, so the draw seats them nearly every
round) that every honest node must survive: one whose only multiaddr is not
UTF-8, one whose box key is a low-order X25519 point. Before the registry
read was made defensive the first stopped every node at start; before low-order
keys were refused the second made a proposer's sealing raise whenever it was
drawn as a voter. Real node processes, a real anvil.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector

from flocknode.chain.anvil import rpc_request
from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import ContractRevert
from flocknode.chain.events import Slashed
from flocknode.chain.token import TokenClient
from flocknode.cluster.launcher import ClusterSpec, node_status
from flocknode.identity import BoxKey, PeerKey, sign_registration
from tests.fixtures.low_order import REGISTRABLE_LOW_ORDER_KEYS
from tests.integration.rounds.harness import Harness, cluster

pytestmark = pytest.mark.integration

TOKENS = 10**18
REGISTER = function_signature_to_4byte_selector("register(bytes,bytes32,string[],bytes)")
SPEC = ClusterSpec(nodes=4, rounds=2, proposers=1, voters=3, commit_seconds=12, reveal_seconds=8)


def funded_wallet(h: Harness, funder: str) -> LocalAccount:
    """A fresh wallet with ETH and 800 tokens (from ``funder``)."""
    acct: LocalAccount = Account.create()
    rpc_request(h.state.rpc_url, "anvil_setBalance", [acct.address, hex(10**20)])
    payer = ChainConnection(h.state.rpc_url, Account.from_key(h.state.node(funder).key))
    TokenClient(payer, h.state.token).transfer(acct.address, 800 * TOKENS)
    return acct


def register_junk_and_stake(h: Harness, acct: LocalAccount, multiaddrs: list[bytes]) -> None:
    """Register with raw multiaddr bytes (hand-built calldata) and a valid peer signature."""
    state = h.state
    peer, box = PeerKey.generate(), BoxKey.generate().public_bytes
    sig = sign_registration(peer, state.chain_id, state.task, acct.address, box)
    args = encode(
        ["bytes", "bytes32", "bytes[]", "bytes"], [peer.peer_id.to_bytes(), box, multiaddrs, sig]
    )
    rpc_request(state.rpc_url, "anvil_impersonateAccount", [acct.address])
    tx: Any = {"from": acct.address, "to": state.task, "data": "0x" + (REGISTER + args).hex()}
    w3 = h.client.conn.rpc.w3
    assert w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx))["status"] == 1
    rpc_request(state.rpc_url, "anvil_stopImpersonatingAccount", [acct.address])
    TaskClient(ChainConnection(state.rpc_url, acct), state.task).stake(800 * TOKENS)


def register_low_order_and_stake(h: Harness, acct: LocalAccount) -> bool:
    """Register with the first low-order box key the contract stores; False if it
    refuses them all (then the contract keeps them out itself)."""
    state = h.state
    client = TaskClient(ChainConnection(state.rpc_url, acct), state.task)
    for key in REGISTRABLE_LOW_ORDER_KEYS:
        peer = PeerKey.generate()
        sig = sign_registration(peer, state.chain_id, state.task, acct.address, key)
        try:
            client.register(peer.peer_id.to_bytes(), key, ["/ip4/127.0.0.1/tcp/9"], sig)
        except ContractRevert as e:
            assert "BoxKey" in e.name, e  # a contract that checks them itself
            continue
        client.stake(800 * TOKENS)
        return True
    return False


def test_finding2_rounds_finalize_with_hostile_registrants(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", SPEC, start=False) as h:
        junk_acct, low_acct = funded_wallet(h, "node-0"), funded_wallet(h, "node-1")
        register_junk_and_stake(h, junk_acct, [b"/ip4/127.0.0.1/tcp/\xff\xfe"])
        low_stored = register_low_order_and_stake(h, low_acct)
        h.start()
        views = [h.wait_finalized(r, timeout=150) for r in (1, 2)]

        if low_stored:
            seated = [v for v in views if low_acct.address in v.voters]
            assert seated, "the low-order key never held a voter seat: nothing was tested"
        honest = {n.wallet for n in h.state.nodes}
        for v in views:
            for seat, w in enumerate(v.proposers):
                if w in honest:  # every honest proposer sealed and submitted
                    assert v.updates[seat].submitted, (v.round, h.tails())
        # no honest node is slashed: not a proposer whose sealing met the bad key, and
        # not a voter whose round's only proposer seat was a hostile registrant's
        slashed = [e for e in h.events(Slashed) if e.wallet in honest]
        assert slashed == [], slashed
        for n in h.state.nodes:  # every node still runs and ignores both registrants
            report = node_status(h.state.node(n.name))
            s = report.status
            assert report.alive and s is not None and s.round.number >= 2, (n.name, h.tails())
            ignored = s.registry_ignored
            assert ignored["no_valid_multiaddr"] == 1, ignored
            assert ignored.get("bad_box_key", 0) == int(low_stored), ignored
        members = {m.wallet for m in h.client.registry().members}
        assert junk_acct.address not in members and low_acct.address not in members
