"""The chain client against a real anvil: every view and event decodes; errors read well."""

from __future__ import annotations

import logging

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from flocknode.chain.anvil import AnvilChain, rpc_request
from flocknode.chain.client import AsyncTaskClient, TaskClient, opened_round
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.deploy import deploy_task
from flocknode.chain.errors import ContractRevert, NoGasMoney, WrongChain
from flocknode.chain.events import EVENT_TYPES, ChainEvent
from flocknode.chain.types import Phase, TaskParams
from flocknode.identity import BoxKey, PeerKey, sign_registration
from tests.integration.chain.chain_helpers import (
    FAST_RETRY,
    Deployed,
    Member,
    advance,
    deploy,
    mine,
)

pytestmark = pytest.mark.integration

TRAIN, COMMIT, REVEAL = 60, 20, 20


def _commitment(task: Deployed, r: int, voter: str, agg: bytes, inc: int, score: int) -> bytes:
    """The commitment of docs/contracts.md, computed here independently of the client."""
    types = ["uint256", "address", "uint256", "address", "bytes32"]
    types += ["uint256", "uint256", "uint256", "int64", "bytes32"]
    values = [task.chain.chain_id, task.address, r, voter, agg, inc, 0, 0, score, b"\x5a" * 32]
    return keccak(encode(types, values))


def _by_wallet(members: list[Member], wallet: str) -> Member:
    return next(m for m in members if m.wallet == wallet)


def _elect(task: Deployed, r: int) -> None:
    view = task.owner.get_round(r)
    mine(task.chain, max(0, view.seed_block + 2 - task.owner.conn.rpc.block_number()))
    task.owner.elect_roles(r)


def test_every_view_and_event_decodes(chain: AnvilChain) -> None:
    task = deploy(chain)
    owner = task.owner
    assert owner.params() == task.params
    assert owner.current_round() == 0
    assert owner.global_model_hash() == b"\x33" * 32
    assert owner.global_model_round() == 0

    task.token.mint(owner.wallet, 10_000)
    owner.fund_rewards(5_000)
    assert owner.reward_pool() == 5_000

    members = [task.join(i, 1000) for i in range(1, 8)]
    assert owner.participant_count() == 7
    assert owner.eligible_count() == 7
    page1, page2 = owner.participants(0, 3), owner.participants(3, 100)
    assert [p.wallet for p in page1 + page2] == [m.wallet for m in members]
    assert [p.registered_at for p in owner.all_participants(page=2)] == list(range(7))
    members[0].client.update_multiaddrs(["/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/udp/5001"])
    me = members[0].client.participant()
    assert me.multiaddrs == (b"/ip4/127.0.0.1/tcp/5001", b"/ip4/127.0.0.1/udp/5001")
    assert me.box_public_key == members[0].box_key.public_bytes
    assert me.peer_id == members[0].peer_key.peer_id.to_bytes()
    assert (me.stake, me.pending_unstake, me.rewards, me.slashed) == (1000, 0, 0, 0)
    assert owner.is_eligible(me.wallet) and not owner.is_eligible(Account.create().address)

    registry = owner.registry()
    assert registry.dropped == 0
    assert [m.peer_id for m in registry.members] == [m.peer_key.peer_id for m in members]

    r = opened_round(owner.open_round())
    assert r == 1 and owner.phase(1) is Phase.SEEDING
    _elect(task, 1)
    view = owner.get_round(1)
    assert view.phase is Phase.TRAIN and view.train_end == view.elected_at + TRAIN
    for seat, w in enumerate(view.proposers):
        _by_wallet(members, w).client.submit_update(
            1, keccak(b"u%d" % seat), b"\xb0" * 32, 100 + seat
        )
    assert owner.phase(1) is Phase.COMMIT  # every proposer submitted: the phase ends early

    agg = keccak(b"new global model")
    scores = [10, 20, 30]
    for seat, w in enumerate(view.voters):
        client = _by_wallet(members, w).client
        commitment = _commitment(task, 1, w, agg, 0b111, scores[seat])
        assert (
            client.vote_commitment(1, w, agg, 0b111, 0, 0, scores[seat], b"\x5a" * 32) == commitment
        )
        client.commit_vote(1, commitment)
    assert owner.phase(1) is Phase.REVEAL
    for seat, w in enumerate(view.voters[:2]):  # the third voter never reveals: slashed
        _by_wallet(members, w).client.reveal_vote(1, agg, 0b111, 0, 0, scores[seat], b"\x5a" * 32)
    view = owner.get_round(1)
    assert [u.size for u in view.updates] == [100, 101, 102]
    assert all(u.submitted and u.blob_id == b"\xb0" * 32 for u in view.updates)
    assert [(v.committed, v.revealed) for v in view.votes] == [(True, True)] * 2 + [(True, False)]
    assert [v.score for v in view.votes[:2]] == [10, 20]
    assert view.votes[0].aggregate_hash == agg and view.votes[0].included_bits == 0b111

    advance(chain, REVEAL + 1)
    assert owner.phase(1) is Phase.FINALIZABLE
    owner.finalize_round(1)
    view = owner.get_round(1)
    assert view.phase is Phase.FINALIZED and view.finalized and view.accepted
    assert view.winning_hash == agg and view.winning_included_bits == 0b111
    assert owner.global_model_hash() == agg and owner.global_model_round() == 1
    assert owner.finalized_rounds() == 1
    assert owner.participant(view.voters[2]).slashed == 100  # 10% of 1000

    winner = _by_wallet(members, view.voters[0]).client
    winner.claim_rewards()
    outsider = next(m for m in members if m.wallet not in view.proposers + view.voters)
    outsider.client.request_unstake(1000)
    assert outsider.client.participant().pending_unstake == 1000
    outsider.client.withdraw()

    # Round 2's seed block ages past 256 blocks: electRoles voids it and opens round 3.
    assert opened_round(owner.open_round()) == 2
    mine(chain, 300)
    voided = owner.elect_roles(2)
    assert owner.phase(2) is Phase.VOIDED
    assert opened_round(voided) == 3

    events = owner.events(0)
    assert {type(e).__name__ for e in events} == set(EVENT_TYPES)
    in_receipt: list[ChainEvent] = list(voided.events)
    assert all(e in events for e in in_receipt)
    assert events == sorted(events, key=lambda e: (e.block_number, e.log_index))


def test_revert_sentences(chain: AnvilChain) -> None:
    task = deploy(chain)
    members = [task.join(i, 500) for i in range(1, 7)]
    owner = task.owner
    owner.open_round()
    seed_block = owner.get_round(1).seed_block
    retries = owner.conn.rpc.retries
    with pytest.raises(ContractRevert) as err:
        owner.elect_roles(1)
    assert str(err.value) == f"the seed for round 1 is not ready until block {seed_block + 2}"
    assert err.value.name == "SeedNotReady"
    assert err.value.error_args == {"round": 1, "readyAtBlock": seed_block + 2}
    assert owner.conn.rpc.retries == retries  # a revert is an answer, never retried

    _elect(task, 1)
    view = owner.get_round(1)
    voter = _by_wallet(members, view.voters[0])
    with pytest.raises(ContractRevert) as err:
        voter.client.submit_update(1, b"\x01" * 32, b"\x02" * 32, 10)
    assert str(err.value) == f"wallet {voter.wallet} is not an elected proposer in round 1"
    for w in view.proposers:
        _by_wallet(members, w).client.submit_update(1, b"\x01" * 32, b"\x02" * 32, 10)
    proposer = _by_wallet(members, view.proposers[0])
    with pytest.raises(ContractRevert) as err:
        proposer.client.commit_vote(1, b"\x03" * 32)
    assert str(err.value) == f"wallet {proposer.wallet} is not an elected voter in round 1"
    with pytest.raises(ContractRevert) as err:
        proposer.client.submit_update(1, b"\x01" * 32, b"\x02" * 32, 10)
    assert str(err.value) == "round 1 is in the commit phase, not the train phase"
    with pytest.raises(ContractRevert) as err:
        members[0].client.register_node(
            PeerKey.generate(), BoxKey.generate(), ["/ip4/1.2.3.4/tcp/1"]
        )
    assert str(err.value) == f"wallet {members[0].wallet} is already registered in this task"
    with pytest.raises(ContractRevert) as err:
        owner.get_round(9)
    assert str(err.value) == "round 9 does not exist"
    with pytest.raises(ContractRevert) as err:
        deploy_task(owner.conn, TaskParams(**{**task.params.__dict__, "quorum_bps": 5000}))
    assert str(err.value) == "invalid task parameters: quorumBps"


def test_wallet_without_gas_money(chain: AnvilChain) -> None:
    task = deploy(chain)
    broke = Account.create()
    client = TaskClient(ChainConnection(chain.rpc_url, broke, retry=FAST_RETRY), task.address)
    assert client.participant_count() == 0  # views need no ETH
    with pytest.raises(NoGasMoney) as err:
        client.register_node(PeerKey.generate(), BoxKey.generate(), ["/ip4/127.0.0.1/tcp/1"])
    assert str(err.value) == f"wallet {broke.address} has no ETH for gas on chain 31337 (balance 0)"

    rpc_request(chain.rpc_url, "anvil_setBalance", [broke.address, hex(1000)])
    with pytest.raises(NoGasMoney) as err:
        client.register_node(PeerKey.generate(), BoxKey.generate(), ["/ip4/127.0.0.1/tcp/1"])
    assert str(err.value).startswith(
        f"wallet {broke.address} has too little ETH for gas on chain 31337 (balance 1000 wei"
    )
    assert client.participant_count() == 0


def test_registry_drops_a_forged_peer_signature(
    chain: AnvilChain, caplog: pytest.LogCaptureFixture
) -> None:
    task = deploy(chain)
    good = [task.join(i, 200) for i in (1, 2)]
    forger = task.client(3)
    victim = good[0]
    # The forger claims the victim's peer id with a signature made for another wallet.
    box = BoxKey.generate().public_bytes
    sig = sign_registration(victim.peer_key, chain.chain_id, task.address, victim.wallet, box)
    forger.register(victim.peer_key.peer_id.to_bytes(), box, ["/ip4/127.0.0.1/tcp/9"], sig)

    reader = task.owner.registry_reader()
    with caplog.at_level(logging.WARNING, logger="flocknode.chain.registry"):
        first = task.owner.registry(reader)
        second = task.owner.registry(reader)
    assert first.dropped == second.dropped == 1
    assert [m.wallet for m in first.members] == [m.wallet for m in good]
    assert first.by_peer_id(victim.peer_key.peer_id) is not None
    assert first.by_wallet(forger.wallet) is None
    assert first.members[0].multiaddrs == ("/ip4/127.0.0.1/tcp/4001",)
    warnings = [r for r in caplog.records if forger.wallet in r.getMessage()]
    assert len(warnings) == 1  # once per wallet, not once per refresh


def test_wrong_chain_and_missing_contract(chain: AnvilChain) -> None:
    task = deploy(chain)
    conn = ChainConnection(chain.rpc_url, expected_chain_id=1, retry=FAST_RETRY)
    with pytest.raises(WrongChain) as err:
        TaskClient(conn, task.address).current_round()
    assert str(err.value) == (
        f"the RPC endpoint {chain.rpc_url} serves chain 31337, but chain 1 was expected"
    )
    nowhere = Account.create().address
    with pytest.raises(WrongChain) as err:
        TaskClient(ChainConnection(chain.rpc_url), nowhere).check()
    assert str(err.value) == f"no FlockTask contract at {nowhere} on chain 31337 ({chain.rpc_url})"


async def test_async_client(chain: AnvilChain) -> None:
    task = deploy(chain)
    member = task.join(1, 300)
    client = AsyncTaskClient(member.client)
    assert await client.params() == task.params
    assert (await client.participant()).stake == 300
    result = await client.update_multiaddrs(["/ip4/127.0.0.1/tcp/7777"])
    assert result.events and (await client.participant()).multiaddrs == (
        b"/ip4/127.0.0.1/tcp/7777",
    )
    with pytest.raises(ContractRevert, match="round 4 does not exist"):
        await client.get_round(4)
    assert [type(e).__name__ for e in await client.events(result.block_number)] == [
        "MultiaddrsUpdated"
    ]
