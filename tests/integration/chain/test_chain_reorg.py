"""Transactions a chain reorganisation removes are broadcast again (docs/protocol.md,
"Chain reorganisations and confirmations"), against a real anvil's
``anvil_rollback`` and ``anvil_reorg``, which drop the removed blocks'
transactions (they do not return to the pool)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from eth_utils import keccak
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from flocknode.chain.anvil import AnvilChain, rpc_request
from flocknode.chain.client import TaskClient, TxResult
from flocknode.chain.types import Phase
from tests.fixtures.anvil import anvil
from tests.integration.chain.chain_helpers import Deployed, Member, connect, deploy, mine

pytestmark = pytest.mark.integration

DEADLINE = 20.0


@pytest.fixture(scope="module")
def chain() -> Iterator[AnvilChain]:
    """An automine anvil of this module's own: its tests roll blocks back."""
    with anvil(accounts=12) as c:
        yield c


@pytest.fixture
def round_one(chain: AnvilChain) -> tuple[Deployed, list[Member]]:
    """A fresh task whose round 1 is open and elected (train phase)."""
    task = deploy(chain)
    members = [task.join(i, 1000) for i in range(1, 9)]
    owner = task.owner
    owner.open_round()
    view = owner.get_round(1)
    mine(chain, max(0, view.seed_block + 2 - owner.conn.rpc.block_number()))
    owner.elect_roles(1)
    return task, members


def _member(members: list[Member], wallet: str) -> Member:
    return next(m for m in members if m.wallet == wallet)


def _receipt_block(client: TaskClient, tx_hash: bytes) -> int | None:
    try:
        r = client.conn.rpc.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        return None
    return int(r["blockNumber"])


def _until(what: str, done: object) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        time.sleep(0.05)


def _submit_all(task: Deployed, members: list[Member]) -> None:
    view = task.owner.get_round(1)
    for seat, w in enumerate(view.proposers):
        _member(members, w).client.submit_update(1, keccak(b"u%d" % seat), b"\xb0" * 32, 100)


def test_commit_rolled_back_is_broadcast_again(
    chain: AnvilChain, round_one: tuple[Deployed, list[Member]]
) -> None:
    """confirmations = 0: commitVote mined, its block rolled back, the node's recheck
    (on the next block) sends the same bytes again; later sends are not stuck."""
    task, members = round_one
    owner = task.owner
    _submit_all(task, members)
    view = owner.get_round(1)
    assert view.phase is Phase.COMMIT
    voter = TaskClient(connect(chain, _member(members, view.voters[0]).index), task.address)
    commitment = voter.vote_commitment(1, voter.wallet, keccak(b"agg"), 1, 0, 0, 7, b"\x05" * 32)
    sent = voter.commit_vote(1, commitment)
    assert owner.get_round(1).votes[0].committed
    sender = voter.conn.sender
    assert sender is not None
    assert voter.recheck_sent() == 0  # nothing dropped: nothing sent

    rpc_request(chain.rpc_url, "anvil_rollback", [1])
    assert _receipt_block(owner, sent.tx_hash) is None
    assert not owner.get_round(1).votes[0].committed  # the commit is gone

    assert voter.recheck_sent() == 1
    assert sender.rebroadcasts == 1
    # automine: the same transaction (same hash) is mined again, in anvil's own
    # time after the send returns
    _until("the commit mined again", lambda: _receipt_block(owner, sent.tx_hash) is not None)
    assert owner.get_round(1).votes[0].committed
    assert voter.recheck_sent() == 0
    # the wallet's next transaction gets the next nonce and is mined
    after = voter.update_multiaddrs(["/ip4/127.0.0.1/tcp/4999"])
    assert _receipt_block(owner, after.tx_hash) == after.block_number


def test_later_send_fills_the_gap_a_reorg_left(
    chain: AnvilChain, round_one: tuple[Deployed, list[Member]]
) -> None:
    """A reorganisation drops a submitUpdate the node counted as done; the wallet's
    next transaction (nonce + 1) would wait behind the gap forever: its wait
    rebroadcasts the dropped one, and both are mined."""
    task, members = round_one
    owner = task.owner
    view = owner.get_round(1)
    proposer = TaskClient(connect(chain, _member(members, view.proposers[0]).index), task.address)
    submitted = proposer.submit_update(1, keccak(b"u0"), b"\xb0" * 32, 100)
    assert owner.get_round(1).updates[0].submitted

    rpc_request(chain.rpc_url, "anvil_reorg", [1, []])  # its block replaced by an empty one
    assert _receipt_block(owner, submitted.tx_hash) is None
    assert not owner.get_round(1).updates[0].submitted

    later = proposer.update_multiaddrs(["/ip4/127.0.0.1/tcp/4998"])
    assert proposer.conn.sender is not None
    assert proposer.conn.sender.rebroadcasts == 1
    assert _receipt_block(owner, submitted.tx_hash) is not None
    assert owner.get_round(1).updates[0].submitted
    assert _receipt_block(owner, later.tx_hash) == later.block_number


def test_confirmations_wait_for_depth_and_survive_a_reorg(
    chain: AnvilChain, round_one: tuple[Deployed, list[Member]]
) -> None:
    """confirmations = 2: submitUpdate is done only with 2 blocks on top; a reorg of
    its block while it waits makes the sender broadcast it again and wait anew."""
    task, members = round_one
    owner = task.owner
    view = owner.get_round(1)
    index = _member(members, view.proposers[1]).index
    proposer = TaskClient(connect(chain, index, confirmations=2), task.address)
    sender = proposer.conn.sender
    assert sender is not None
    start = owner.conn.rpc.block_number()
    result: list[TxResult] = []
    worker = threading.Thread(
        target=lambda: result.append(proposer.submit_update(1, keccak(b"u1"), b"\xb1" * 32, 100)),
        daemon=True,
    )
    worker.start()
    _until("the submitUpdate is mined", lambda: owner.conn.rpc.block_number() > start)
    first = start + 1
    block = owner.conn.rpc.get_block(first)
    assert len(block["transactions"]) == 1
    tx_hash = bytes(block["transactions"][0])
    mine(chain, 1)  # one block on top: not deep enough
    worker.join(1.0)  # a sender that wrongly returned would be done by now
    assert worker.is_alive() and not result

    rpc_request(chain.rpc_url, "anvil_reorg", [2, []])  # its block and the one on top
    _until("the sender broadcasts it again", lambda: sender.rebroadcasts == 1)
    again = _receipt_block(owner, tx_hash)
    assert again is not None and again == first + 2  # mined on top of the new two blocks
    assert sender.reorged == 1
    assert worker.is_alive() and not result
    mine(chain, 2)
    worker.join(DEADLINE)
    assert not worker.is_alive()
    assert result[0].tx_hash == tx_hash and result[0].block_number == again
    assert owner.get_round(1).updates[1].submitted
