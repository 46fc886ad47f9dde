"""The voter's seat collection: size claims, the collection deadline, relayed key wraps.

Real crypto, content store, inbox, membership and chain view; the network is
not involved (blobs are placed in the voters' stores as a fetch would, and the
gossip publisher records what it is given). The chain clock follows trio's
clock so a MockClock drives deadlines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import trio
import trio.testing
from libp2p.peer.id import ID
from nacl.public import PublicKey

from flocknode.aggregation import AggregationSettings, aggregate
from flocknode.aggregation.core import WEIGHTS, ModelFlat, layout_of
from flocknode.chain.registry import Member, Registry
from flocknode.chain.types import Phase, RoundView, UpdateView, VoteView
from flocknode.crypto import seal_update
from flocknode.crypto.envelope import unwrap_key, wrap_key
from flocknode.identity import BoxKey, PeerKey
from flocknode.learning import Learner
from flocknode.learning.models import initial_state, load_model_factory
from flocknode.learning.settings import TaskSettings
from flocknode.p2p.gossip import Received
from flocknode.p2p.messages import KeyWraps, WireKeyWrap
from flocknode.rounds import voter
from flocknode.rounds.byzantine import Behaviour, Honest, tamper_update, tamper_wraps
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.snapshot import ChainFeed
from flocknode.rounds.update_form import update_blob_size, update_form
from flocknode.store import ContentStore
from flocknode.store.journal import Journal
from flocknode.store.spill import SpillDir
from tests.unit.rounds.views import make_view

R = 5
COMMIT_SECONDS = 20


class TrioChainView(ChainFeed):
    """The chain clock is trio's clock (deadlines below are in it): the snapshots
    published here are of block time 0 read at time 0."""

    def put_round(self, view: RoundView) -> None:
        self.publish(self.latest.with_round(view))

    def put_model(self, model_hash: bytes) -> None:
        self.publish(dataclasses.replace(self.latest, global_model_hash=model_hash))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def publish(self, msg: Any) -> None:
        self.sent.append(msg)


@dataclasses.dataclass
class Node:
    wallet: str
    peer: ID
    box: BoxKey
    ctx: Any


def _model() -> dict[str, torch.Tensor]:
    return initial_state(load_model_factory("flocknode.learning.models:digits_mlp"), 0)


def _node(tmp: Path, name: str, chain: TrioChainView, membership: ChainMembership) -> Node:
    box = BoxKey.generate()
    ctx = SimpleNamespace(
        feed=chain,
        membership=membership,
        inbox=Inbox(box.public_bytes),
        store=ContentStore(tmp / name),
        spill=SpillDir(tmp / f"{name}-spill"),
        box_key=box,
        metrics=RoundMetrics(),
        gossip=Recorder(),
        params=SimpleNamespace(commit_seconds=COMMIT_SECONDS),
        behaviour=Honest(),
        p2p=None,
    )
    return Node(name, PeerKey.generate().peer_id, box, ctx)


def _cluster(tmp: Path, voters: int) -> tuple[Node, list[Node], TrioChainView]:
    chain = TrioChainView()
    membership = ChainMembership()
    prop = _node(tmp, "0xa0", chain, membership)
    vs = [_node(tmp, f"0xb{i}", chain, membership) for i in range(voters)]
    members = tuple(
        Member(n.wallet, n.peer, n.box.public_bytes, (), 100, True) for n in [prop, *vs]
    )
    membership.update_registry(Registry(members, 0))
    return prop, vs, chain


def _round(
    chain: TrioChainView,
    prop: Node,
    vs: list[Node],
    phase: Phase,
    up: UpdateView,
    commit_end: float,
) -> None:
    chain.put_round(
        dataclasses.replace(
            make_view(R, phase),
            proposers=(prop.wallet,),
            voters=tuple(v.wallet for v in vs),
            updates=(up,),
            commit_end=int(commit_end),
        )
    )


def _shapes(m: dict[str, torch.Tensor]) -> voter.Opening:
    """What a dense update of ``m``'s layout must be."""
    form = update_form(m, AggregationSettings())
    return voter.Opening(form, layout_of(m), form.blob_size)


def test_finding4_envelope_size_is_exact_for_the_model_shapes(tmp_path: Path) -> None:
    box = BoxKey.generate()
    big = {"a": torch.randn(300_000), "b": torch.randn(7, 3)}  # > 1 MiB: two chunks
    for m in (_model(), big):
        store = ContentStore(tmp_path / str(len(m)))
        with store.writer() as w:
            sealed = seal_update(m, w, sender=box.private, recipients=[box.public])
            w.commit()
        assert update_blob_size(m) == sealed.size


def test_finding4_oversized_size_claim_rejects_the_seat_without_fetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prop, (v,), chain = _cluster(tmp_path, 1)
    base = _model()
    size = update_blob_size(base)

    async def no_fetch(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a seat with a wrong size claim was fetched")

    monkeypatch.setattr(voter, "fetch", no_fetch)

    async def main() -> None:
        for claim in (2 << 30, size + 1, size - 1):
            up = UpdateView(True, b"\x01" * 32, b"\x02" * 32, claim)
            _round(chain, prop, [v], Phase.TRAIN, up, trio.current_time() + 100)
            s = voter.SeatInput(0, prop.wallet)
            await voter._collect_seat(v.ctx, R, s, _shapes(base))
            assert s.wrong_size and s.update is None and s.failed == "wrong_size"

    trio.run(main)
    assert v.ctx.metrics.counters["seat_wrong_size"] == 3


def test_finding4_stalled_blob_fetch_ends_at_the_collection_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prop, (v,), chain = _cluster(tmp_path, 1)
    base = _model()
    size = update_blob_size(base)
    started: list[float] = []

    async def dribble(*args: Any, **kwargs: Any) -> None:
        started.append(trio.current_time())
        await trio.sleep_forever()  # a proposer sending one byte now and then

    monkeypatch.setattr(voter, "fetch", dribble)

    async def main() -> None:
        up = UpdateView(True, b"\x01" * 32, b"\x02" * 32, size)
        # the fetch starts in the train phase (no deadline yet) ...
        _round(chain, prop, [v], Phase.TRAIN, up, 0)
        s = voter.SeatInput(0, prop.wallet)
        commit_end = trio.current_time() + 10 + COMMIT_SECONDS
        deadline = commit_end - max(4.0, 0.4 * COMMIT_SECONDS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(voter._collect_seat, v.ctx, R, s, _shapes(base))
            await trio.sleep(10)
            # ... and is still running when the commit phase begins
            _round(chain, prop, [v], Phase.COMMIT, up, commit_end)
            with trio.fail_after(COMMIT_SECONDS):
                while s.update is None and nursery.child_tasks:
                    await trio.sleep(0.1)
        assert trio.current_time() <= deadline + voter.RETRY_SECONDS + 0.2
        assert s.update is None and started

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_finding9_a_relayed_key_opens_a_seat_the_proposer_did_not_wrap_for(
    tmp_path: Path,
) -> None:
    prop, (a, b, c), chain = _cluster(tmp_path, 3)
    update = {k: torch.full_like(t, 0.01) for k, t in _model().items()}
    with a.ctx.store.writer() as w:
        sealed = seal_update(
            update,
            w,
            sender=prop.box.private,
            recipients=[PublicKey(x.box.public_bytes) for x in (a, b, c)],
        )
        w.commit()
    blob = a.ctx.store.read_bytes(sealed.blob_id)
    for n in (b, c):  # every voter holds the blob, as after its fetch
        with n.ctx.store.writer() as w:
            w.write(blob)
            assert w.commit() == sealed.blob_id
    rows = [[wr.recipient.hex(), wr.sealed.hex()] for wr in sealed.wraps]
    published = tamper_wraps(Behaviour.PARTIAL_WRAPS, rows)
    assert published == rows[:1]  # the wrap for voter a only
    proposer_msg = KeyWraps(
        R,
        sealed.blob_id,
        tuple(WireKeyWrap(bytes.fromhex(x), bytes.fromhex(y)) for x, y in published),
    )
    up = UpdateView(True, sealed.update_hash, sealed.blob_id, sealed.size)

    async def collect(n: Node) -> voter.SeatInput:
        s = voter.SeatInput(0, prop.wallet)
        with trio.move_on_after(5):
            await voter._collect_seat(n.ctx, R, s, _shapes(update))
        return s

    async def main() -> None:
        _round(chain, prop, [a, b, c], Phase.COMMIT, up, trio.current_time() + 100)
        for n in (a, b, c):
            n.ctx.inbox.on_message(Received(prop.peer, proposer_msg))
        sa = await collect(a)
        assert sa.update is not None, sa.failed
        (relay,) = a.ctx.gossip.sent  # one message: the key for b and c
        assert isinstance(relay, KeyWraps) and relay.blob_id == sealed.blob_id
        assert {w.recipient for w in relay.wraps} == {b.box.public_bytes, c.box.public_bytes}
        for n in (b, c):
            n.ctx.inbox.on_message(Received(a.peer, relay))
            s = await collect(n)
            assert s.update is not None, s.failed
            layout = layout_of(update)
            n = layout.sizes[WEIGHTS]
            sent = ModelFlat(update, layout, "sent").read(WEIGHTS, 0, n)
            assert np.array_equal(s.update.read(WEIGHTS, 0, n), sent)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_dense_update_with_another_dtype_is_left_out_not_aggregated(tmp_path: Path) -> None:
    """In a model with a counter (mixed dtypes), int32 in a float32 entry has the
    same blob size and shapes; without the dtype check every voter's aggregation
    raised, and no honest vote was cast."""
    prop, (a,), chain = _cluster(tmp_path, 1)
    base = {**_model(), "bn.num_batches_tracked": torch.tensor(3)}
    name = "0.weight"
    update = {k: torch.zeros_like(t) for k, t in base.items()}
    update[name] = torch.ones(base[name].shape, dtype=torch.int32)
    with a.ctx.store.writer() as w:
        sealed = seal_update(
            update, w, sender=prop.box.private, recipients=[PublicKey(a.box.public_bytes)]
        )
        w.commit()
    assert sealed.size == update_blob_size(base)
    up = UpdateView(True, sealed.update_hash, sealed.blob_id, sealed.size)
    wraps = KeyWraps(
        R, sealed.blob_id, tuple(WireKeyWrap(x.recipient, x.sealed) for x in sealed.wraps)
    )

    async def main() -> None:
        _round(chain, prop, [a], Phase.COMMIT, up, trio.current_time() + 30)
        a.ctx.inbox.on_message(Received(prop.peer, wraps))
        s = voter.SeatInput(0, prop.wallet)
        await voter._collect_seat(a.ctx, R, s, _shapes(base))  # ends at the deadline
        assert s.update is None
        assert s.failed.startswith("envelope: not an update of the model") and name in s.failed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_relays_from_non_voters_and_bad_relays_are_not_used(tmp_path: Path) -> None:
    prop, (a, b), chain = _cluster(tmp_path, 2)
    update = {k: torch.full_like(t, 0.02) for k, t in _model().items()}
    with b.ctx.store.writer() as w:
        sealed = seal_update(
            update,
            w,
            sender=prop.box.private,
            recipients=[PublicKey(a.box.public_bytes)],
        )
        w.commit()
    outsider = _node(tmp_path, "0xc9", chain, a.ctx.membership)  # not a voter of the round
    up = UpdateView(True, sealed.update_hash, sealed.blob_id, sealed.size)
    true_key = unwrap_key(sealed.wraps[0], a.box.private, PublicKey(prop.box.public_bytes))
    good = wrap_key(true_key, outsider.box.private, PublicKey(b.box.public_bytes))
    bad = wrap_key(b"\x07" * 32, a.box.private, PublicKey(b.box.public_bytes))  # a lying voter

    async def main() -> None:
        _round(chain, prop, [a, b], Phase.COMMIT, up, trio.current_time() + 30)
        b.ctx.inbox.on_message(
            Received(a.peer, KeyWraps(R, sealed.blob_id, (WireKeyWrap(bad.recipient, bad.sealed),)))
        )
        b.ctx.inbox.on_message(
            Received(
                outsider.peer,
                KeyWraps(R, sealed.blob_id, (WireKeyWrap(good.recipient, good.sealed),)),
            )
        )
        s = voter.SeatInput(0, prop.wallet)
        await voter._collect_seat(b.ctx, R, s, _shapes(update))  # ends at the deadline
        assert s.update is None and s.failed.startswith("envelope")
        assert b.ctx.gossip.sent == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_zero_update_behaviour_sends_zeros() -> None:
    m = _model()
    z = tamper_update(Behaviour.ZERO_UPDATE, m, 1)
    assert set(z) == set(m) and all(not z[k].any() and z[k].shape == m[k].shape for k in m)


def test_finding4_wrong_size_seat_is_included_and_rejected_in_the_vote(tmp_path: Path) -> None:
    """The whole decision: seat 0 claims a wrong size, seat 1 sends zeros, seat 2 works.

    A real learner (digits), model book and store; seat 0 is never fetched, seats
    1 and 2 are opened from the voter's store. Every voter derives the same bits.
    """
    chain = TrioChainView()
    membership = ChainMembership()
    props = [_node(tmp_path, f"0xa{i}", chain, membership) for i in range(3)]
    v = _node(tmp_path, "0xb0", chain, membership)
    members = tuple(
        Member(n.wallet, n.peer, n.box.public_bytes, (), 100, True) for n in [*props, v]
    )
    membership.update_registry(Registry(members, 0))
    settings = TaskSettings()
    learner = Learner.from_settings(settings.training, 0, 5)
    base = learner.initial_state()
    v.ctx.models = ModelBook(v.ctx.store, None)
    chain.put_model(v.ctx.models.put(base))
    v.ctx.learner = learner
    v.ctx.settings = settings
    trained = learner.train(base, seed=3).update
    ups: list[UpdateView] = [UpdateView(True, b"\x01" * 32, b"\x02" * 32, 2 << 30)]
    for p, update in (
        (props[1], {k: torch.zeros_like(t) for k, t in base.items()}),
        (props[2], trained),
    ):
        with v.ctx.store.writer() as w:
            sealed = seal_update(
                update, w, sender=p.box.private, recipients=[PublicKey(v.box.public_bytes)]
            )
            w.commit()
        ups.append(UpdateView(True, sealed.update_hash, sealed.blob_id, sealed.size))
        v.ctx.inbox.on_message(
            Received(
                p.peer,
                KeyWraps(R, sealed.blob_id, (WireKeyWrap(*dataclasses.astuple(sealed.wraps[0])),)),
            )
        )

    async def main() -> Any:
        chain.put_round(
            dataclasses.replace(
                make_view(R, Phase.COMMIT),
                proposers=tuple(p.wallet for p in props),
                voters=(v.wallet,),
                updates=tuple(ups),
                commit_end=int(trio.current_time() + 100),
            )
        )
        return await voter._decide(v.ctx, chain.rounds[R], 0)

    decided = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert decided is not None
    vote = decided[0]
    assert vote.included_bits == 0b111  # the wrong-size seat counts as included ...
    assert vote.rejected_bits == 0b001  # ... and rejected; the zero update is "no work":
    assert vote.flag_bits & 0b010  # flagged (not paid), not rejected (not slashed)
    expected = aggregate(base, [trained], settings.aggregation, seats=[2]).model
    agg_hash = bytes.fromhex(vote.aggregate_hash)
    # stored, not cached: the voter's memory holds the new model only while scoring it
    assert v.ctx.models.store.has(agg_hash) and agg_hash not in v.ctx.models._cache
    assert v.ctx.models.load(agg_hash).keys() == expected.keys()
    assert vote.aggregate_hash == v.ctx.models.put(expected).hex()


class VoteClient:
    """Records the voter's commit and reveal (the chain's side is not under test)."""

    def __init__(self) -> None:
        self.committed = trio.Event()
        self.commits: list[bytes] = []
        self.reveals: list[bytes] = []

    async def vote_commitment(self, r: int, wallet: str, h: bytes, *rest: Any) -> bytes:
        return h

    async def commit_vote(self, r: int, commitment: bytes) -> None:
        self.commits.append(commitment)
        self.committed.set()

    async def reveal_vote(self, r: int, h: bytes, *rest: Any) -> None:
        self.reveals.append(h)


def _lone_voter(tmp: Path, chain: TrioChainView) -> tuple[Node, VoteClient]:
    """The task's only member, elected voter; a journal, and a client that records
    its commit and reveal. Its models and learner are the test's to set."""
    membership = ChainMembership()
    v = _node(tmp, "0xb0", chain, membership)
    membership.update_registry(
        Registry((Member(v.wallet, v.peer, v.box.public_bytes, (), 100, True),), 0)
    )
    v.ctx.settings = TaskSettings()
    v.ctx.journal = Journal(tmp / "journal")
    v.ctx.client = client = VoteClient()
    v.ctx.wallet = v.wallet
    return v, client


def _lone_round(
    chain: TrioChainView, v: Node, phase: Phase, commit_end: float, **more: Any
) -> None:
    """Round R with ``v`` as its voter and one proposer that is not a member (its
    seat cannot be fetched)."""
    chain.put_round(
        dataclasses.replace(
            make_view(R, phase),
            proposers=("0x00000000000000000000000000000000000000aa",),
            voters=(v.wallet,),
            updates=(UpdateView(False, bytes(32), bytes(32), 0),),
            commit_end=int(commit_end),
            **more,
        )
    )


def test_a_vote_decided_in_the_train_phase_is_committed_once_the_commit_phase_opens(
    tmp_path: Path,
) -> None:
    """No seat can be fetched (the only proposer is not a member), so the voter has
    decided while the train phase is still open: it commits once the commit phase
    opens and reveals in the reveal phase, instead of leaving its seat idle."""
    chain = TrioChainView()
    v, client = _lone_voter(tmp_path, chain)
    learner = Learner.from_settings(v.ctx.settings.training, 0, 5)
    v.ctx.models = ModelBook(v.ctx.store, None)
    chain.put_model(v.ctx.models.put(learner.initial_state()))
    v.ctx.learner = learner
    no_vote = VoteView(False, False, bytes(32), bytes(32), 0, 0, 0, 0)
    committed = dataclasses.replace(no_vote, committed=True)

    def set_phase(phase: Phase, commit_end: float) -> None:
        votes = (committed if client.commits else no_vote,)
        _lone_round(chain, v, phase, commit_end, votes=votes)

    async def main() -> None:
        # the real clock: aggregation and scoring run in worker threads, and a
        # MockClock would jump past any deadline while they do
        commit_end = trio.current_time() + 600
        set_phase(Phase.TRAIN, commit_end)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(voter.run_voter, v.ctx, chain.rounds[R], 0)
                while v.ctx.journal.get(R).vote is None:  # decided and journaled
                    await trio.sleep(0.05)
                # the voter journals its vote and checks the phase with no await in
                # between: by now it either waits for the commit phase or gave up
                assert client.commits == []
                set_phase(Phase.COMMIT, commit_end)
                await client.committed.wait()
                set_phase(Phase.REVEAL, commit_end)
                # a revealed vote counts once a view shows it or the phase moved on
                # (docs/protocol.md, "Chain reorganisations and confirmations")
                while not client.reveals:
                    await trio.sleep(0.05)
                set_phase(Phase.FINALIZED, commit_end)

    trio.run(main)
    rec = Journal(tmp_path / "journal").get(R)
    assert rec.committed and rec.revealed and rec.vote is not None
    assert client.reveals == [bytes.fromhex(rec.vote.aggregate_hash)]


class _CountingLearner:
    """The learner, counting the evaluations the voter asks for."""

    def __init__(self, learner: Learner) -> None:
        self.learner, self.evaluations = learner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.learner, name)

    async def evaluate_async(self, state: Any, split: Any = "val") -> Any:
        self.evaluations += 1
        return await self.learner.evaluate_async(state, split)


@pytest.mark.parametrize("then", [Phase.FINALIZED, Phase.REVEAL, Phase.SEEDING])
def test_a_voter_stops_deciding_once_the_commit_phase_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: Phase
) -> None:
    """The round moves past the commit phase while the voter decides (a slow
    voter, a large model): it gives up before aggregating and scoring, which
    could no longer be committed, and journals no vote. A view back in the
    seeding phase (a reorganisation) is not the end of the round: it decides."""
    chain = TrioChainView()
    v, client = _lone_voter(tmp_path, chain)
    learner = _CountingLearner(Learner.from_settings(v.ctx.settings.training, 0, 5))
    v.ctx.learner = learner
    aggregated: list[int] = []

    def set_phase(phase: Phase, commit_end: float) -> None:
        _lone_round(chain, v, phase, commit_end)

    class LateBook(ModelBook):
        async def load_async(self, model_hash: bytes) -> dict[str, torch.Tensor]:
            # the voter has its base model: the round moves on while it works on the vote
            set_phase(then, trio.current_time() + 600)
            return await super().load_async(model_hash)

    v.ctx.models = LateBook(v.ctx.store, None)
    chain.put_model(v.ctx.models.put(learner.initial_state()))

    def counted_aggregate(*args: Any, **kwargs: Any) -> Any:
        aggregated.append(1)
        return aggregate(*args, **kwargs)

    async def main() -> None:
        set_phase(Phase.TRAIN, trio.current_time() + 600)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(voter.run_voter, v.ctx, chain.rounds[R], 0)
                if then is Phase.SEEDING:
                    while v.ctx.journal.get(R).vote is None:  # decided and journaled
                        await trio.sleep(0.05)
                    set_phase(Phase.FINALIZED, trio.current_time() + 600)  # ends the run

    monkeypatch.setattr(voter, "aggregate", counted_aggregate)
    trio.run(main)
    vote = Journal(tmp_path / "journal").get(R).vote
    if then is Phase.SEEDING:
        assert aggregated == [1] and learner.evaluations == 2 and vote is not None
    else:
        assert aggregated == [] and learner.evaluations == 0 and vote is None
    assert client.commits == []
