"""The voter's executor in virtual time: every phase, every journal crash point,
missed deadlines and late models (docs/protocol.md, "Behaviour of the node";
"Threats and defences"; "Unservable models").

Real journal, store, model book, inbox, membership, crypto, learner and
aggregation; the chain (``RoundSim``), gossip and blob fetches (``Net``) are
in-memory. A crash is an exception out of ``run_voter`` or a cancelled run; a
restart is a new context over the same directories.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from flocknode.chain.types import Phase
from flocknode.p2p.messages import KeyWraps
from flocknode.rounds import voter
from flocknode.rounds.byzantine import Behaviour, strategy_for
from flocknode.rounds.proposer import run_proposer
from flocknode.rounds.unservable import UNAVAILABLE_HASH
from tests.unit.rounds.roles_env import (
    COMMIT_SECONDS,
    VOTE,
    Net,
    Peer,
    R,
    Role,
    RoundSim,
    TrioChainView,
    learner,
    membership_of,
    peer,
    revert,
    until,
)


@dataclasses.dataclass
class World:
    sim: RoundSim
    net: Net
    proposers: list[Role]
    voters: list[Role]
    base_hash: bytes


def _world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proposers: int, voters: int) -> World:
    ps = [peer(i + 1) for i in range(proposers)]
    vs = [peer(0x100 + i) for i in range(voters)]
    chain = TrioChainView()
    membership = membership_of(*ps, *vs)
    sim, net = RoundSim(chain, ps, vs), Net()
    monkeypatch.setattr(voter, "fetch", net.fetch)

    def node(p: Peer) -> Role:
        return net.join(sim.attach(Role(tmp_path / p.wallet, p, chain, membership)))

    w = World(sim, net, [node(p) for p in ps], [node(v) for v in vs], b"")
    base = learner().initial_state()
    for n in [*w.proposers, *w.voters]:
        w.base_hash = n.models.put(base)
    chain.global_model_hash = w.base_hash
    return w


async def _until(cond: Any, chain: Any) -> None:
    """Wait until ``cond()``, looking again at each new chain view or after 0.1 s."""
    while not cond():
        with trio.move_on_after(0.1):
            await chain.changed()


async def _drive(sim: RoundSim, run: Callable[[], Awaitable[None]], phases: list[Phase]) -> None:
    """Run a role and move the round through ``phases``, each once the role has
    nothing left to do in the current phase (it waits for the phase to change)."""
    chain = sim.feed
    assert isinstance(chain, TrioChainView)
    done = trio.Event()

    async def role() -> None:
        await run()
        done.set()

    async with trio.open_nursery() as n:
        n.start_soon(role)
        for phase in phases:
            waits = chain.phase_waits
            await until(lambda w=waits: done.is_set() or chain.phase_waits > w)  # type: ignore[misc]
            if done.is_set():
                return
            sim.to(phase)


async def _one_round(w: World, in_train: Callable[[], Awaitable[None]] | None = None) -> None:
    """One proposer and the voters through a round; ``in_train`` runs once the
    update is submitted, before the commit phase opens."""
    sim = w.sim
    view = sim.to(Phase.TRAIN)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, w.proposers[0], view, 0)
        for seat, v in enumerate(w.voters):
            n.start_soon(voter.run_voter, v, view, seat)
        await _until(lambda: sim.updates[0].submitted, sim.feed)
        if in_train is not None:
            await in_train()
        sim.to(Phase.COMMIT)
        await _until(lambda: all(x.committed for x in sim.votes), sim.feed)
        sim.to(Phase.REVEAL)
        await _until(lambda: all(x.revealed for x in sim.votes), sim.feed)
        sim.to(Phase.FINALIZED)


async def test_one_round_proposer_and_voters_agree_commit_and_reveal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 1, 3)

    async def in_train() -> None:
        await _until(lambda: len(w.net.fetched_at) >= 3, w.sim.feed)  # prefetched while training
        assert all(v.journal.get(R).vote is None for v in w.voters)  # nothing opened yet

    await _one_round(w, in_train)
    votes = [v.journal.get(R) for v in w.voters]
    assert all(rec.committed and rec.revealed for rec in votes)
    hashes = {rec.vote.aggregate_hash for rec in votes if rec.vote}
    assert len(hashes) == 1 and hashes != {w.base_hash.hex()}
    for rec in votes:
        assert rec.vote is not None
        assert (rec.vote.included_bits, rec.vote.rejected_bits) == (1, 0)
    # the timings bench/scale.py reports: fetching, opening, aggregating, scoring, the chain
    for rec in votes:
        timed = ("transfer", "open", "aggregate", "eval", "commit", "reveal")
        assert all(rec.notes[f"{k}_seconds"] >= 0 for k in timed)
    # each voter revealed what it committed
    for v, rec in zip(w.voters, votes, strict=True):
        assert rec.vote is not None
        (commit,) = v.client.named("commit_vote")
        (reveal,) = v.client.named("reveal_vote")
        assert commit[1] == reveal[1] == bytes.fromhex(rec.vote.aggregate_hash)
        assert reveal[-1] == bytes.fromhex(rec.vote.salt)


async def test_the_norm_band_follows_the_rounds_decayed_learning_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # Round R trains at learning_rate x 0.5^(R-1) = 1/64 of it: the voters' band
    # must shrink with it, or the honest update would sit below the norm floor
    # (no work: flagged, unpaid).
    w = _world(tmp_path, monkeypatch, 1, 3)
    t = dataclasses.replace(w.voters[0].settings.training, lr_decay=0.5, lr_min=0.001)
    for n in [*w.proposers, *w.voters]:
        n.settings = dataclasses.replace(n.settings, training=t)
        n.learner = dataclasses.replace(n.learner, settings=dataclasses.replace(t, local_steps=5))
    await _one_round(w)
    for v in w.voters:
        rec = v.journal.get(R).vote
        assert rec is not None
        assert (rec.included_bits, rec.rejected_bits, rec.flag_bits) == (1, 0, 0)


async def test_a_proposer_wrapping_for_one_voter_does_not_split_the_voters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """docs/protocol.md, "Threats and defences": the voter that received the only
    wrap relays the key; every voter includes the seat and they agree."""
    w = _world(tmp_path, monkeypatch, 1, 3)
    sim, (p,) = w.sim, w.proposers
    p.behaviour = strategy_for(Behaviour.PARTIAL_WRAPS)
    view = sim.to(Phase.TRAIN)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, p, view, 0)
        for seat, v in enumerate(w.voters):
            n.start_soon(voter.run_voter, v, view, seat)
        await _until(lambda: sim.updates[0].submitted, sim.feed)
        sim.to(Phase.COMMIT)
        await _until(lambda: all(x.committed for x in sim.votes), sim.feed)
        sim.to(Phase.FINALIZED)
    (wraps, *_) = p.gossip.messages(KeyWraps)
    assert len(wraps.wraps) == 1  # the proposer wrapped for one voter only
    relayed = [v for v in w.voters if v.gossip.messages(KeyWraps)]
    assert len(relayed) >= 1 and relayed[0].metrics.counters["key_relays_published"] >= 1
    votes = [v.journal.get(R).vote for v in w.voters]
    assert all(x is not None and x.included_bits == 1 for x in votes)
    assert len({x.aggregate_hash for x in votes if x}) == 1


@dataclasses.dataclass(frozen=True)
class Restart:
    """A voter restarted with ``journal`` flags over ``chain`` facts, in ``phase``."""

    name: str
    phase: Phase
    journal: dict[str, bool]
    chain: dict[str, bool]
    commits: int  # commitVote transactions the restarted voter sends
    reveals: int
    ends: tuple[bool, bool]  # journaled (committed, revealed) at the end


RESTARTS = [
    Restart("after vote journaled, restarted in commit", Phase.COMMIT, {}, {}, 1, 1, (True, True)),
    Restart("after vote journaled, in train", Phase.TRAIN, {}, {}, 1, 1, (True, True)),
    Restart(
        "after commitVote, before journaling it",
        Phase.COMMIT,
        {},
        {"committed": True},
        0,
        1,
        (True, True),
    ),
    Restart(
        "after commit journaled",
        Phase.COMMIT,
        {"committed": True},
        {"committed": True},
        0,
        1,
        (True, True),
    ),
    Restart(
        "after commit journaled, restarted in reveal",
        Phase.REVEAL,
        {"committed": True},
        {"committed": True},
        0,
        1,
        (True, True),
    ),
    Restart(
        "after revealVote, before journaling it",
        Phase.REVEAL,
        {"committed": True},
        {"committed": True, "revealed": True},
        0,
        0,
        (True, True),
    ),
    Restart(
        "after reveal journaled",
        Phase.FINALIZED,
        {"committed": True, "revealed": True},
        {"committed": True, "revealed": True},
        0,
        0,
        (True, True),
    ),
    Restart("vote journaled, commit phase missed", Phase.REVEAL, {}, {}, 0, 0, (False, False)),
    Restart(
        "committed, reveal phase missed",
        Phase.FINALIZABLE,
        {"committed": True},
        {"committed": True},
        0,
        0,
        (True, False),
    ),
]


@pytest.mark.parametrize("case", RESTARTS, ids=[c.name for c in RESTARTS])
async def test_a_restarted_voter_sends_exactly_what_it_journaled(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    case: Restart,
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    v.journal.update(R, role="voter", seat=0, vote=VOTE, **case.journal)
    sim.votes[0] = dataclasses.replace(sim.votes[0], **case.chain)
    again = sim.attach(v.restarted())
    view = sim.to(case.phase)
    later = [p for p in (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZED) if p > case.phase]
    await _drive(sim, functools.partial(voter.run_voter, again, view, 0), later)
    assert [c[1] for c in again.client.named("commit_vote")] == [
        bytes.fromhex(VOTE.aggregate_hash)
    ] * case.commits
    reveals = again.client.named("reveal_vote")
    assert len(reveals) == case.reveals
    for call in reveals:  # the journaled vote, salt included
        assert call[1:] == (
            bytes.fromhex(VOTE.aggregate_hash),
            VOTE.included_bits,
            VOTE.rejected_bits,
            VOTE.flag_bits,
            VOTE.score,
            bytes.fromhex(VOTE.salt),
        )
    rec = again.journal.get(R)
    assert rec.vote == VOTE and (rec.committed, rec.revealed) == case.ends


async def test_a_failed_commit_raises_and_the_rerun_commits_the_same_vote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    v.journal.update(R, role="voter", seat=0, vote=VOTE)
    v.client.fail["commit_vote"] = ConnectionError("rpc down")
    view = sim.to(Phase.COMMIT)
    with pytest.raises(ConnectionError):  # the engine retries while the phase is open
        await voter.run_voter(v, view, 0)
    assert not v.journal.get(R).committed
    del v.client.fail["commit_vote"]
    async with trio.open_nursery() as n:
        n.start_soon(voter.run_voter, v, view, 0)
        await _until(lambda: sim.votes[0].committed, sim.feed)
        sim.to(Phase.REVEAL)
    assert v.journal.get(R).revealed
    assert v.client.named("commit_vote") == [(R, bytes.fromhex(VOTE.aggregate_hash))]


@pytest.mark.parametrize(
    ("error", "committed", "reveals"),
    [("AlreadyCommitted", True, 1), ("NotElectedVoter", False, 0)],
)
async def test_commit_reverts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    error: str,
    committed: bool,
    reveals: int,
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    v.journal.update(R, role="voter", seat=0, vote=VOTE)
    v.client.fail["commit_vote"] = revert(error)
    if error == "AlreadyCommitted":  # the chain holds the commitment (an earlier send)
        sim.votes[0] = dataclasses.replace(sim.votes[0], committed=True)
    view = sim.to(Phase.COMMIT)
    await _drive(
        sim, functools.partial(voter.run_voter, v, view, 0), [Phase.REVEAL, Phase.FINALIZED]
    )
    assert v.journal.get(R).committed is committed
    assert len(v.client.named("reveal_vote")) == reveals


async def test_a_no_reveal_voter_commits_and_never_reveals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    v.behaviour = strategy_for(Behaviour.NO_REVEAL)
    v.journal.update(R, role="voter", seat=0, vote=VOTE)
    await voter.run_voter(v, sim.to(Phase.COMMIT), 0)  # returns after the commit
    assert len(v.client.named("commit_vote")) == 1 and v.client.named("reveal_vote") == []


@pytest.mark.parametrize("phase", [Phase.REVEAL, Phase.FINALIZED, Phase.VOIDED], ids=str)
async def test_a_voter_elected_after_the_commit_phase_does_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    phase: Phase,
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    v = w.voters[0]
    await voter.run_voter(v, w.sim.to(phase), 0)
    assert v.client.calls == [] and v.journal.get(R).vote is None


async def test_base_model_unavailable_until_the_cutoff_votes_all_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    sim.feed.global_model_hash = b"\x77" * 32  # a model nobody serves
    view = sim.to(Phase.COMMIT)
    async with trio.open_nursery() as n:
        n.start_soon(voter.run_voter, v, view, 0)
        await until(lambda: v.metrics.counters["votes_base_unavailable"])
        # the cutoff is the collection deadline: 40% of the commit phase before its end
        cutoff = view.commit_end - 0.4 * COMMIT_SECONDS
        assert cutoff <= trio.current_time() <= cutoff + voter.RETRY_SECONDS + 0.01
        await _until(lambda: sim.votes[0].committed, sim.feed)
        sim.to(Phase.REVEAL)
    rec = v.journal.get(R)
    assert rec.vote is not None and rec.revealed
    assert rec.vote.aggregate_hash == UNAVAILABLE_HASH.hex()
    assert (rec.vote.included_bits, rec.vote.rejected_bits, rec.vote.score) == (0, 0, 0)
    assert v.metrics.counters["votes_base_unavailable"] == 1


async def test_a_voter_without_the_base_model_cut_off_from_the_round_abstains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # the minority side of a partition: it reaches one of the round's three other
    # seat holders, so it neither votes "unavailable" nor anything else
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    sim.feed.global_model_hash = b"\x77" * 32  # a model it could not fetch
    v.p2p.cut = {p.me.peer for p in w.proposers[1:]}
    view = sim.to(Phase.COMMIT)
    with trio.fail_after(COMMIT_SECONDS):
        await voter.run_voter(v, view, 0)  # returns: the role is over
    cutoff = view.commit_end - 0.4 * COMMIT_SECONDS
    assert trio.current_time() >= cutoff
    assert v.client.calls == [] and v.journal.get(R).vote is None
    assert v.metrics.counters["votes_abstained_cut_off"] == 1
    assert v.metrics.counters["votes_base_unavailable"] == 0


async def test_a_base_model_arriving_before_the_cutoff_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    late = {k: t + 0.5 for k, t in learner().initial_state().items()}
    late_hash = w.proposers[0].models.put(late)
    sim.feed.global_model_hash = late_hash
    async with trio.open_nursery() as n:
        n.start_soon(voter.run_voter, v, sim.to(Phase.COMMIT), 0)
        await trio.sleep(0.5 * COMMIT_SECONDS)  # before the cutoff (0.6 of the phase)
        assert v.journal.get(R).vote is None
        v.models.put(late)  # the engine's model fetch lands
        sim.feed.publish()
        await _until(lambda: sim.votes[0].committed, sim.feed)
        sim.to(Phase.REVEAL)
    rec = v.journal.get(R)
    assert rec.vote is not None and rec.vote.aggregate_hash not in (UNAVAILABLE_HASH.hex(), "")
    # no proposer submitted: the aggregate of nothing is the base itself
    assert rec.vote.aggregate_hash == late_hash.hex() and rec.vote.included_bits == 0


async def test_an_update_that_never_arrives_is_left_out_at_the_collection_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 1, 1)
    sim, (p,), (v,) = w.sim, w.proposers, w.voters
    w.net.down.add(p.me.peer)  # the proposer submits and announces but serves nothing
    view = sim.to(Phase.TRAIN)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, p, view, 0)
        n.start_soon(voter.run_voter, v, view, 0)
        await _until(lambda: sim.updates[0].submitted, sim.feed)
        deadline = sim.to(Phase.COMMIT).commit_end - 0.4 * COMMIT_SECONDS
        await _until(lambda: sim.votes[0].committed, sim.feed)
        sim.to(Phase.REVEAL)
        await _until(lambda: sim.votes[0].revealed, sim.feed)
        sim.to(Phase.FINALIZED)
    rec = v.journal.get(R)
    assert rec.vote is not None and rec.vote.included_bits == 0
    assert rec.vote.aggregate_hash == w.base_hash.hex()
    # fetched again and again while the window was open, until the deadline
    # (40% of the commit phase before its end), then aggregated without the seat
    assert len(w.net.fetched_at) > 100
    assert deadline - 1 <= w.net.fetched_at[-1] < deadline


async def test_a_vote_decided_in_train_waits_for_the_commit_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    w = _world(tmp_path, monkeypatch, 1, 1)
    sim, v = w.sim, w.voters[0]
    # the only proposer's registration is gone: no seat can be fetched at all
    v.membership = membership_of(v.me)
    async with trio.open_nursery() as n:
        n.start_soon(voter.run_voter, v, sim.to(Phase.TRAIN), 0)
        while v.journal.get(R).vote is None:
            await trio.sleep(1)
        await trio.sleep(30)
        assert v.client.calls == []  # decided, and waiting for the commit phase
        sim.to(Phase.COMMIT)
        await _until(lambda: sim.votes[0].committed, sim.feed)
        sim.to(Phase.REVEAL)
    assert v.journal.get(R).revealed


def _committed_voter_with_refused_reveals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[RoundSim, Role, Any, list[float]]:
    """A voter journaled and on chain as committed, in the reveal phase (its deadline
    20 s from now), whose reveals are refused (``WrongPhase``) until the test says
    otherwise; the times of its reveal attempts."""
    w = _world(tmp_path, monkeypatch, 3, 1)
    sim, v = w.sim, w.voters[0]
    v.journal.update(R, role="voter", seat=0, vote=VOTE, committed=True)
    sim.votes[0] = dataclasses.replace(sim.votes[0], committed=True)
    view = sim.to(Phase.REVEAL)
    v.client.fail["reveal_vote"] = revert("WrongPhase")
    attempts: list[float] = []
    send_reveal = v.client.reveal_vote

    async def reveal_vote(*args: Any) -> None:
        attempts.append(trio.current_time())
        await send_reveal(*args)

    monkeypatch.setattr(v.client, "reveal_vote", reveal_vote)
    return sim, v, view, attempts


async def _new_blocks(sim: RoundSim) -> None:
    """A view read each second, as the chain feed reads them."""
    while True:
        await trio.sleep(1)
        sim.feed.publish(dataclasses.replace(sim.feed.latest, read_at=trio.current_time()))


@pytest.mark.parametrize("back_in", [Phase.COMMIT, Phase.REVEAL], ids=lambda p: p.label)
async def test_a_reveal_refused_in_a_reorg_is_sent_again_once_the_commit_is_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    back_in: Phase,
) -> None:
    """A reorganisation removed the commit that ended the commit phase early: the
    reveal, sent on the view before it, is refused. The commit comes back (the
    voter sends it again in the commit phase, or its sender's rebroadcast is
    mined and the reveal phase is back) and the voter reveals: giving up would
    leave a commit on chain unrevealed, which is slashed (docs/protocol.md,
    "Chain reorganisations and confirmations")."""
    sim, v, view, attempts = _committed_voter_with_refused_reveals(tmp_path, monkeypatch)
    new_blocks = functools.partial(_new_blocks, sim)

    with trio.fail_after(120):
        async with trio.open_nursery() as blocks:
            blocks.start_soon(new_blocks)
            async with trio.open_nursery() as n:
                n.start_soon(voter.run_voter, v, view, 0)
                await _until(lambda: len(attempts) == 1, sim.feed)
                del v.client.fail["reveal_vote"]
                sim.votes[0] = dataclasses.replace(sim.votes[0], committed=False)  # the reorg
                sim.to(Phase.COMMIT)
                if back_in is Phase.REVEAL:  # the rebroadcast commit mined: commit ends again
                    await trio.sleep(0.5)
                    sim.votes[0] = dataclasses.replace(sim.votes[0], committed=True)
                    sim.to(Phase.REVEAL)
                else:  # the voter sends its journaled commit again
                    await _until(lambda: sim.votes[0].committed, sim.feed)
                    sim.to(Phase.REVEAL)
            blocks.cancel_scope.cancel()
    assert v.journal.get(R).revealed and sim.votes[0].revealed
    assert len(attempts) == 2


async def test_reveal_retries_end_at_the_reveal_deadline_of_a_view_that_never_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """The feed stops reading a round once the next one opens, so a voter behind a
    faulty RPC may keep a "reveal" view of a round the chain has finalized: its
    refused reveals stop at that view's reveal deadline (the chain's clock)."""
    sim, v, view, attempts = _committed_voter_with_refused_reveals(tmp_path, monkeypatch)
    new_blocks = functools.partial(_new_blocks, sim)

    t0 = trio.current_time()
    with trio.fail_after(120):
        async with trio.open_nursery() as blocks:
            blocks.start_soon(new_blocks)
            await voter.run_voter(v, view, 0)  # returns: given up
            blocks.cancel_scope.cancel()
    assert not v.journal.get(R).revealed
    assert 2 <= len(attempts) <= 25 and attempts[-1] - t0 >= 19


def test_transfer_time_is_the_longest_fetch() -> None:
    seats = [
        voter.SeatInput(0, "a", fetch_started=10.0, fetched_at=14.0),
        voter.SeatInput(1, "b", fetch_started=12.0, fetched_at=17.5),
        voter.SeatInput(2, "c", fetch_started=9.0),  # never arrived: not a transfer
        voter.SeatInput(3, "d"),  # held already, or left out before fetching
    ]
    assert voter.transfer_seconds(seats) == 5.5
    assert voter.transfer_seconds(seats[2:]) == 0.0
