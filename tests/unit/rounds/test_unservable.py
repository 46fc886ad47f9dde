"""The "base model unavailable" vote: when a voter casts it, what it holds, and
the colluders' made-up hash (docs/protocol.md "Unservable models").

The wait runs against a stand-in for the round context (chain view, model book,
metrics) on trio's MockClock: only the decision logic is exercised here; the
cluster test tests/integration/rounds/test_cluster_unservable.py runs it live.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import trio
import trio.testing

from flocknode.chain.types import Phase, RoundView
from flocknode.identity.keys import PeerKey
from flocknode.rounds import byzantine, unservable
from flocknode.rounds.byzantine import Behaviour
from flocknode.store.journal import VoteRecord
from tests.unit.rounds.views import make_view

CUTOFF = 30.0
BASE = b"\x42" * 32


@dataclass
class _Chain:
    rounds: dict[int, RoundView]
    global_model_hash: bytes = BASE

    def now(self) -> float:
        return trio.current_time()


@dataclass
class _Models:
    held: set[bytes] = field(default_factory=set)

    def has(self, h: bytes) -> bool:
        return h in self.held


@dataclass
class _Metrics:
    counts: dict[str, int] = field(default_factory=dict)

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


@dataclass
class _Ctx:
    feed: _Chain
    models: _Models = field(default_factory=_Models)
    metrics: _Metrics = field(default_factory=_Metrics)


def _reaches(connected: int, seats: int = 5) -> Any:
    return lambda _v: unservable.Reach(connected, seats)


def _cutoff(_ctx: Any, _v: RoundView) -> float:
    return CUTOFF


async def _news(_ctx: Any, timeout: float) -> None:
    await trio.sleep(timeout)


def _ctx(phase: Phase = Phase.COMMIT) -> tuple[_Ctx, RoundView]:
    view = make_view(7, phase)
    return _Ctx(feed=_Chain(rounds={7: view})), view


async def test_a_voter_without_the_base_model_votes_unavailable_at_the_cutoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctx, view = _ctx()
    got = await unservable.base_model(ctx, view, _cutoff, _news, _reaches(3))  # type: ignore[arg-type]
    assert got is unservable.Missing.UNAVAILABLE
    assert trio.current_time() >= CUTOFF
    assert ctx.metrics.counts == {"votes_base_unavailable": 1}
    vote = unservable.unavailable_vote()
    assert (vote.aggregate_hash, vote.included_bits, vote.rejected_bits) == ("00" * 32, 0, 0)
    assert (vote.flag_bits, vote.score, len(bytes.fromhex(vote.salt))) == (0, 0, 32)


async def test_a_base_model_that_arrives_before_the_cutoff_is_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctx, view = _ctx(Phase.TRAIN)

    async def arrives() -> None:
        await trio.sleep(CUTOFF / 2)
        ctx.models.held.add(BASE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arrives)
        got = await unservable.base_model(ctx, view, _cutoff, _news, _reaches(0))  # type: ignore[arg-type]
    assert got == BASE
    assert CUTOFF / 2 <= trio.current_time() < CUTOFF
    assert ctx.metrics.counts == {}


async def test_a_held_base_model_costs_no_wait(autojump_clock: trio.testing.MockClock) -> None:
    ctx, view = _ctx()
    ctx.models.held.add(BASE)
    got = await unservable.base_model(ctx, view, _cutoff, _news, _reaches(0))  # type: ignore[arg-type]
    assert got == BASE
    assert trio.current_time() == 0


@pytest.mark.parametrize(("connected", "seats"), [(0, 5), (2, 5), (1, 2), (2, 4)])
async def test_a_voter_cut_off_from_most_of_the_round_abstains_at_the_cutoff(
    autojump_clock: trio.testing.MockClock, connected: int, seats: int
) -> None:
    # a minority side of a partition: its "unavailable" says nothing of the model,
    # and a quorum of such votes would get the previous round's winners slashed
    ctx, view = _ctx()
    looked: list[float] = []

    def reach_of(v: RoundView) -> unservable.Reach:
        looked.append(trio.current_time())
        return unservable.Reach(connected, seats)

    got = await unservable.base_model(ctx, view, _cutoff, _news, reach_of)  # type: ignore[arg-type]
    assert got is unservable.Missing.CUT_OFF
    assert looked and min(looked) >= CUTOFF  # judged at the cutoff, not before
    assert ctx.metrics.counts == {"votes_abstained_cut_off": 1}


def test_reach_counts_the_other_seat_holders_connected_long_enough() -> None:
    me, a, b, c, d = (f"0x{i:040x}" for i in range(1, 6))
    peers = {w: PeerKey.generate().peer_id for w in (a, b, c, d)}
    view = dataclasses.replace(make_view(7), proposers=(a, b, me.upper()), voters=(me, c, d, a))
    stable = {peers[a], peers[c]}
    # distinct wallets but its own (whatever the case), each seat holder once
    assert unservable.reach(view, me, peers.get, stable) == unservable.Reach(2, 4)
    assert not unservable.Reach(2, 4).most and unservable.Reach(3, 4).most
    # a seat holder whose peer is unknown (not a member) is never reached
    assert unservable.reach(view, me, {a: peers[a]}.get, set(peers.values())).connected == 1
    # alone in its round there is nobody to ask: the model is unservable to it
    alone = dataclasses.replace(make_view(7), voters=(me,))
    assert unservable.reach(alone, me, peers.get, set()).most


def test_colluders_agree_on_a_made_up_hash_per_round() -> None:
    honest = VoteRecord("ab" * 32, 0b111, 0b100, 0b1, -3, "cd" * 32)
    a = byzantine.collude(Behaviour.UNSERVABLE_HASH, 5, honest)
    b = byzantine.collude(Behaviour.UNSERVABLE_HASH, 5, honest)
    assert (a.aggregate_hash, a.included_bits, a.rejected_bits) == (
        b.aggregate_hash,
        b.included_bits,
        b.rejected_bits,
    )
    assert a.aggregate_hash == unservable.unservable_hash(5).hex() != "00" * 32
    assert unservable.unservable_hash(6) != unservable.unservable_hash(5)
    assert a.score >= 0 and a.salt == honest.salt
    assert byzantine.collude(Behaviour.HONEST, 5, honest) is honest
    assert byzantine.collude(Behaviour.WRONG_HASH, 5, honest) is honest


def test_role_strategies_change_only_their_own_decision() -> None:
    vote = VoteRecord("ab" * 32, 0b1, 0, 0, 7, "cd" * 32)
    update = {"w": torch.ones(2)}
    h = bytes(range(32))
    honest = byzantine.strategy_for(Behaviour.HONEST)
    assert isinstance(honest, byzantine.Honest) and honest.name == "honest"
    assert honest.reveals and not honest.flips_labels
    assert honest.update(update, 1) is update and honest.wraps([1, 2]) == [1, 2]
    assert honest.aggregate_hash(h) == h and honest.vote(5, vote) is vote
    changed = {b: byzantine.strategy_for(b) for b in Behaviour if b is not Behaviour.HONEST}
    assert [b for b, s in changed.items() if not s.reveals] == [Behaviour.NO_REVEAL]
    assert [b for b, s in changed.items() if s.flips_labels] == [Behaviour.LABEL_FLIP]
    assert [b for b, s in changed.items() if s.wraps([1, 2]) != [1, 2]] == [Behaviour.PARTIAL_WRAPS]
    assert [b for b, s in changed.items() if s.aggregate_hash(h) != h] == [Behaviour.WRONG_HASH]
    assert [b for b, s in changed.items() if s.vote(5, vote) != vote] == [Behaviour.UNSERVABLE_HASH]
    assert {
        b for b, s in changed.items() if not torch.equal(s.update(update, 1)["w"], update["w"])
    } == {
        Behaviour.SIGN_FLIP,
        Behaviour.GAUSSIAN_NOISE,
        Behaviour.ZERO_UPDATE,
    }
