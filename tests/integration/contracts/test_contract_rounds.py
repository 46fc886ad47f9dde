"""FlockTask round life cycle on a real anvil: open, elect, phases, early ends,
voids, TaskComplete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_utils import keccak

from flocknode.chain.draw import compute_seed, elect
from tests.fixtures.contracts import (
    COMMIT,
    ETHER,
    FINALIZABLE,
    FINALIZED,
    NONE,
    REVEAL,
    SEEDING,
    TRAIN,
    VOIDED,
    Harness,
    NoReveal,
    Vote,
)

pytestmark = pytest.mark.integration

AGG = keccak(b"aggregate")


def test_open_round_snapshots_and_sets_seed_block(h: Harness) -> None:
    assert h.task.functions.currentRound().call() == 0
    assert h.task.functions.phase(1).call() == NONE
    h.expect_revert(h.task.functions.getRound(1), h.deployer, "NoSuchRound", 1)
    receipt = h.send(h.task.functions.openRound(), h.deployer)
    (ev,) = h.events(receipt, "RoundOpened")
    assert ev.round == 1
    assert ev.seedBlock == receipt["blockNumber"] + 2
    rv = h.round(1)
    assert rv.phase == SEEDING
    assert rv.seedBlock == ev.seedBlock
    assert rv.seed == b"\x00" * 32
    assert rv.proposers == [] and rv.voters == []
    assert len(rv.eligible) == 8
    assert rv.eligibleStakes == [200 * ETHER] * 8
    assert h.task.functions.phase(2).call() == NONE
    h.expect_revert(h.task.functions.openRound(), h.deployer, "RoundStillOpen", 1)


def test_open_round_needs_enough_eligible(deploy: Callable[..., Harness]) -> None:
    few = deploy(n=5)
    assert few.task.functions.eligibleCount().call() == 5
    few.expect_revert(few.task.functions.openRound(), few.deployer, "NotEnoughEligible", 5, 6)


def test_elect_roles_uses_the_seed_and_the_exact_draw(h: Harness) -> None:
    r = h.open_round()
    seed_block = h.round(r).seedBlock
    h.expect_revert(h.task.functions.electRoles(r), h.deployer, "SeedNotReady", r, seed_block + 2)
    h.expect_revert(h.task.functions.electRoles(r + 1), h.deployer, "NoSuchRound", r + 1)
    before = h.round(r)
    receipt = h.elect(r)
    block = h.w3.eth.get_block(receipt["blockNumber"])
    seed_hash = h.w3.eth.get_block(seed_block)["hash"]
    expected_seed = compute_seed(
        bytes(seed_hash),
        int.from_bytes(bytes(block["mixHash"]), "big"),
        h.w3.eth.chain_id,
        h.task.address,
        r,
    )
    rv = h.round(r)
    assert rv.seed == expected_seed
    assert rv.phase == TRAIN
    assert rv.electedAt == block["timestamp"]
    params = h.params()
    assert rv.trainEnd == block["timestamp"] + params.trainSeconds
    assert rv.commitEnd == rv.trainEnd + params.commitSeconds
    assert rv.revealEnd == rv.commitEnd + params.revealSeconds
    proposers, voters = elect(rv.seed, before.eligible, before.eligibleStakes, 3, 3)
    assert rv.proposers == proposers
    assert rv.voters == voters
    (ev,) = h.events(receipt, "RolesElected")
    assert (ev.seed, ev.proposers, ev.voters) == (rv.seed, rv.proposers, rv.voters)
    for seat, wallet in enumerate(rv.proposers + rv.voters):
        assert h.task.functions.participant(wallet).call().lastElectedRound == r, seat
    h.expect_revert(h.task.functions.electRoles(r), h.deployer, "AlreadyElected", r)


def test_train_phase_rules_and_early_end(h: Harness) -> None:
    r, rv = h.open_and_elect()
    outsider = next(a for a in rv.eligible if a not in rv.proposers + rv.voters)
    h.expect_revert(
        h.task.functions.submitUpdate(r, b"\x01" * 32, b"\x02" * 32, 10),
        outsider,
        "NotElectedProposer",
        r,
        outsider,
    )
    h.expect_revert(
        h.task.functions.submitUpdate(r, b"\x01" * 32, b"\x02" * 32, 10),
        rv.voters[0],
        "NotElectedProposer",
    )
    h.expect_revert(
        h.task.functions.commitVote(r, b"\x01" * 32), rv.voters[0], "WrongPhase", r, TRAIN, COMMIT
    )
    h.expect_revert(
        h.task.functions.finalizeRound(r), h.deployer, "WrongPhase", r, TRAIN, FINALIZABLE
    )
    h.expect_revert(h.task.functions.openRound(), h.deployer, "RoundStillOpen", r)
    receipt = h.submit(r, rv.proposers[0], tag=b"a", size=1234)
    (ev,) = h.events(receipt, "UpdateSubmitted")
    assert (ev.round, ev.proposer, ev.size) == (r, rv.proposers[0], 1234)
    h.expect_revert(
        h.task.functions.submitUpdate(r, b"\x01" * 32, b"\x02" * 32, 10),
        rv.proposers[0],
        "AlreadySubmitted",
        r,
        rv.proposers[0],
    )
    h.submit(r, rv.proposers[1])
    assert h.phase(r) == TRAIN
    last = h.submit(r, rv.proposers[2])
    ts = h.w3.eth.get_block(last["blockNumber"])["timestamp"]
    after = h.round(r)
    assert after.phase == COMMIT  # every proposer acted: train ended early
    assert after.trainEnd == ts
    assert after.commitEnd == ts + h.params().commitSeconds
    assert [u.submitted for u in after.updates] == [True, True, True]
    assert after.updates[0].size == 1234
    assert after.updates[0].updateHash == keccak(b"a" + rv.proposers[0].encode())


def test_train_ends_at_its_deadline(h: Harness) -> None:
    r, rv = h.open_and_elect()
    h.submit(r, rv.proposers[0])
    h.advance(h.params().trainSeconds - 30)
    assert h.phase(r) == TRAIN
    h.advance(31)
    assert h.phase(r) == COMMIT
    h.expect_revert(
        h.task.functions.submitUpdate(r, b"\x01" * 32, b"\x02" * 32, 1),
        rv.proposers[1],
        "WrongPhase",
    )


def test_commit_and_reveal_rules_and_early_ends(h: Harness) -> None:
    r, rv = h.open_and_elect()
    for p in rv.proposers:
        h.submit(r, p)
    v0, v1, v2 = rv.voters
    h.expect_revert(
        h.task.functions.commitVote(r, b"\x01" * 32), rv.proposers[0], "NotElectedVoter", r
    )
    vote = Vote(AGG, 0b111, score=12)
    receipt = h.commit(r, v0, vote)
    assert [(e.round, e.voter) for e in h.events(receipt, "VoteCommitted")] == [(r, v0)]
    h.expect_revert(h.task.functions.commitVote(r, b"\x01" * 32), v0, "AlreadyCommitted", r, v0)
    # a commitment copied from another voter cannot be revealed by the copier
    h.send(h.task.functions.commitVote(r, h.commitment(r, v0, vote)), v1)
    assert h.phase(r) == COMMIT  # v2 has not committed yet
    h.advance(h.params().commitSeconds)
    assert h.phase(r) == REVEAL
    h.expect_revert(
        h.task.functions.commitVote(r, b"\x01" * 32), v2, "WrongPhase", r, REVEAL, COMMIT
    )
    h.expect_revert(h.reveal_fn(r, vote), v1, "CommitmentMismatch", r, v1)
    h.expect_revert(h.reveal_fn(r, Vote(AGG, 0b111, score=13)), v0, "CommitmentMismatch", r, v0)
    h.expect_revert(h.reveal_fn(r, vote), v2, "NotCommitted", r, v2)
    receipt = h.reveal(r, v0, vote)
    (ev,) = h.events(receipt, "VoteRevealed")
    assert (ev.round, ev.voter, ev.aggregateHash) == (r, v0, AGG)
    h.expect_revert(h.reveal_fn(r, vote), v0, "AlreadyRevealed", r, v0)
    assert h.phase(r) == REVEAL  # v1 committed and has not revealed
    h.advance(h.params().revealSeconds)
    assert h.phase(r) == FINALIZABLE
    h.expect_revert(h.reveal_fn(r, vote), v1, "WrongPhase", r, FINALIZABLE, REVEAL)
    votes = h.round(r).votes
    assert [(v.committed, v.revealed) for v in votes] == [
        (True, True),
        (True, False),
        (False, False),
    ]
    assert votes[0].score == 12 and votes[0].includedBits == 0b111


def test_commit_phase_ends_once_every_voter_committed(h: Harness) -> None:
    r, rv = h.open_and_elect()
    for p in rv.proposers:
        h.submit(r, p)
    vote = Vote(AGG, 0b111)
    for v in rv.voters[:2]:
        h.commit(r, v, vote)
    assert h.phase(r) == COMMIT
    last = h.commit(r, rv.voters[2], vote)
    ts = h.w3.eth.get_block(last["blockNumber"])["timestamp"]
    assert h.phase(r) == REVEAL
    assert h.round(r).commitEnd == ts
    assert h.round(r).revealEnd == ts + h.params().revealSeconds
    for v in rv.voters[:2]:
        h.reveal(r, v, vote)
    assert h.phase(r) == REVEAL
    last = h.reveal(r, rv.voters[2], vote)
    assert h.phase(r) == FINALIZABLE  # every committed voter revealed: reveal ended early
    assert h.round(r).revealEnd == h.w3.eth.get_block(last["blockNumber"])["timestamp"]


def test_reveal_ends_early_when_every_committed_voter_revealed(h: Harness) -> None:
    r, _rv = h.open_and_elect()
    vote = Vote(AGG, 0b111)
    h.play(r, [vote, vote, None], finalize=False)
    # play advanced past commit (one voter idle), then the two committed voters revealed
    rd = h.round(r)
    assert rd.phase == FINALIZABLE
    assert rd.revealEnd < rd.commitEnd + h.params().revealSeconds


def test_nobody_commits_goes_straight_to_finalizable(h: Harness) -> None:
    r, _rv = h.open_and_elect()
    params = h.params()
    h.advance(params.trainSeconds)
    assert h.phase(r) == COMMIT
    h.advance(params.commitSeconds)
    assert h.phase(r) == FINALIZABLE


def test_finalize_errors(h: Harness) -> None:
    h.expect_revert(h.task.functions.finalizeRound(0), h.deployer, "NoSuchRound", 0)
    r, _rv = h.open_and_elect()
    h.expect_revert(h.task.functions.finalizeRound(r + 1), h.deployer, "NoSuchRound", r + 1)
    vote = Vote(AGG, 0b111)
    h.play(r, [vote, vote, vote])
    h.expect_revert(h.task.functions.finalizeRound(r), h.deployer, "AlreadyFinalized", r)
    assert h.phase(r) == FINALIZED


def test_open_round_finalizes_the_previous_round_when_due(h: Harness) -> None:
    r, rv = h.open_and_elect()
    vote = Vote(AGG, 0b111, score=1)
    h.play(r, [vote, vote, vote], finalize=False)
    receipt = h.send(h.task.functions.openRound(), rv.voters[0])
    (fin,) = h.events(receipt, "RoundFinalized")
    assert (fin.round, fin.accepted, fin.winningHash) == (r, True, AGG)
    (opened,) = h.events(receipt, "RoundOpened")
    assert opened.round == r + 1
    assert h.phase(r) == FINALIZED and h.phase(r + 1) == SEEDING
    assert h.task.functions.globalModelHash().call() == AGG
    assert h.task.functions.finalizedRounds().call() == 1


def test_seed_expiry_voids_and_open_round_reopens(h: Harness) -> None:
    r = h.open_round()
    seed_block = h.round(r).seedBlock
    h.mine(seed_block + 256 - h.w3.eth.block_number)
    assert h.phase(r) == SEEDING  # blockhash(seedBlock) is still readable
    h.mine(1)
    assert h.phase(r) == VOIDED
    h.expect_revert(
        h.task.functions.finalizeRound(r), h.deployer, "WrongPhase", r, VOIDED, FINALIZABLE
    )
    receipt = h.send(h.task.functions.openRound(), h.deployer)
    (voided,) = h.events(receipt, "RoundVoided")
    assert voided.round == r and "seed" in voided.reason
    (opened,) = h.events(receipt, "RoundOpened")
    assert opened.round == r + 1
    assert h.phase(r) == VOIDED and h.phase(r + 1) == SEEDING
    h.expect_revert(h.task.functions.electRoles(r), h.deployer, "WrongPhase", r, VOIDED, SEEDING)
    assert h.task.functions.finalizedRounds().call() == 0
    # the fresh round works normally
    h.elect(r + 1)
    assert h.phase(r + 1) == TRAIN


def test_seed_expiry_at_elect_roles_voids_and_reopens(h: Harness) -> None:
    r = h.open_round()
    h.mine(h.round(r).seedBlock + 257 - h.w3.eth.block_number)
    receipt = h.send(h.task.functions.electRoles(r), h.deployer)
    assert [e.round for e in h.events(receipt, "RoundVoided")] == [r]
    assert [e.round for e in h.events(receipt, "RoundOpened")] == [r + 1]
    assert h.events(receipt, "RolesElected") == []
    assert h.task.functions.currentRound().call() == r + 1
    assert h.round(r).proposers == []


def test_seed_expiry_without_enough_eligible_only_voids(h: Harness) -> None:
    r = h.open_round()
    wallets = h.round(r).eligible
    for w in wallets[:3]:  # 5 left: not enough for 3 + 3 seats from the next round on
        h.send(h.task.functions.requestUnstake(200 * ETHER), w)
    h.mine(h.round(r).seedBlock + 257 - h.w3.eth.block_number)
    receipt = h.send(h.task.functions.electRoles(r), h.deployer)
    assert [e.round for e in h.events(receipt, "RoundVoided")] == [r]
    assert h.events(receipt, "RoundOpened") == []
    assert h.task.functions.currentRound().call() == r
    h.expect_revert(h.task.functions.openRound(), h.deployer, "NotEnoughEligible", 5, 6)


def test_task_complete_after_total_rounds(deploy: Callable[..., Harness]) -> None:
    t = deploy(n=6, totalRounds=2)
    vote = Vote(AGG, 0b111)
    for expected in (1, 2):
        r, _ = t.open_and_elect()
        assert r == expected
        t.play(r, [vote, vote, vote], finalize=(r == 1))
    # round 2 is finalizable: openRound finalizes it and opens nothing
    receipt = t.send(t.task.functions.openRound(), t.deployer)
    assert [e.round for e in t.events(receipt, "RoundFinalized")] == [2]
    assert t.events(receipt, "RoundOpened") == []
    assert t.task.functions.currentRound().call() == 2
    assert t.task.functions.finalizedRounds().call() == 2
    t.expect_revert(t.task.functions.openRound(), t.deployer, "TaskComplete")


def test_voided_rounds_do_not_count_towards_total(deploy: Callable[..., Harness]) -> None:
    t = deploy(n=6, totalRounds=1)
    r = t.open_round()
    t.mine(t.round(r).seedBlock + 257 - t.w3.eth.block_number)
    r2 = t.open_round()
    assert r2 == r + 1
    t.elect(r2)
    t.play(r2, [Vote(AGG, 0b111)] * 3)
    t.expect_revert(t.task.functions.openRound(), t.deployer, "TaskComplete")


def test_open_round_returns_zero_when_slashes_leave_too_few(deploy: Callable[..., Harness]) -> None:
    t = deploy(n=6, stake=100 * ETHER)  # exactly minStake each: any slash drops a wallet
    r, rv = t.open_and_elect()
    vote = Vote(AGG, 0b011)
    t.play(r, [vote, vote, vote], submits=[True, True, False], finalize=False)
    receipt = t.send(t.task.functions.openRound(), t.deployer)
    assert [e.round for e in t.events(receipt, "RoundFinalized")] == [r]
    assert [e.wallet for e in t.events(receipt, "Slashed")] == [rv.proposers[2]]
    assert t.events(receipt, "RoundOpened") == []
    assert t.task.functions.eligibleCount().call() == 5
    t.expect_revert(t.task.functions.openRound(), t.deployer, "NotEnoughEligible", 5, 6)


def test_vote_commitment_view_matches_the_documented_encoding(h: Harness) -> None:
    r, rv = h.open_and_elect()
    vote = Vote(AGG, 5, rejected=4, flags=1, score=-7, salt=b"\x01" * 32)
    onchain = h.task.functions.voteCommitment(
        r,
        rv.voters[0],
        vote.aggregate,
        vote.included,
        vote.rejected,
        vote.flags,
        vote.score,
        vote.salt,
    ).call()
    assert onchain == h.commitment(r, rv.voters[0], vote)
    assert onchain != h.commitment(r, rv.voters[1], vote)
    assert onchain != h.commitment(r + 1, rv.voters[0], vote)


def test_no_reveal_marker_is_commit_only(h: Harness) -> None:
    r, _rv = h.open_and_elect()
    h.play(r, [NoReveal(Vote(AGG, 7)), None, None], finalize=False)
    votes = h.round(r).votes
    assert [(v.committed, v.revealed) for v in votes] == [
        (True, False),
        (False, False),
        (False, False),
    ]


def test_elect_roles_gas_does_not_depend_on_the_seed(h: Harness) -> None:
    """eth_estimateGas runs with another prevrandao than the mined block: the gas
    must not depend on the seed, or estimates would run out."""
    r = h.open_round()
    seed_block = h.round(r).seedBlock
    used, seeds, estimates = [], [], []
    for extra in (0, 1, 5):
        snap = h.snapshot()
        h.mine(seed_block + 2 + extra - h.w3.eth.block_number)
        estimates.append(h.task.functions.electRoles(r).estimate_gas({"from": h.deployer}))
        receipt = h.send(h.task.functions.electRoles(r), h.deployer)
        used.append(receipt["gasUsed"])
        seeds.append(h.round(r).seed)
        h.revert_to(snap)
    assert len(set(seeds)) == 3
    assert len(set(used)) == 1, used
    assert all(0 <= e - used[0] <= 5_000 for e in estimates), (estimates, used)
