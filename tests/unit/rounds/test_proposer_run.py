"""The proposer's executor in virtual time: every phase, every journal crash point.

Training is real (a few steps of the digits model, in a worker thread); the
tests wait on events while it runs, so MockClock does not jump meanwhile.
A crash is an exception out of ``run_proposer`` or a cancelled run; the
restart is a new context over the same journal and store directories.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from nacl.public import PublicKey

from flocknode.aggregation import AggregationSettings
from flocknode.chain.types import Phase
from flocknode.crypto import KeyWrap as EnvelopeWrap
from flocknode.crypto.envelope import open_update, unwrap_key
from flocknode.p2p.messages import KeyWraps, UpdateAnnounce
from flocknode.rounds.proposer import REANNOUNCE_SECONDS, run_proposer
from flocknode.rounds.update_form import send_cap, update_blob_size, update_form
from tests.unit.rounds.roles_env import (
    Peer,
    R,
    Role,
    membership_of,
    revert,
    set_round,
    until,
    world,
)


class NoTraining:
    """A learner that must not be asked to train (the update is journaled already)."""

    async def train_async(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("trained a second time")


def _proposer(tmp_path: Path, voters: int = 3) -> tuple[Role, list[Peer], list[Peer]]:
    ps, vs, chain = world(tmp_path, 1, voters)
    role = Role(tmp_path / "p", ps[0], chain, membership_of(*ps, *vs))
    chain.global_model_hash = role.models.put(role.learner.initial_state())
    return role, ps, vs


async def _until_called(role: Role, name: str) -> None:
    while not role.client.named(name):
        await role.client.called.wait()


async def _until_published(role: Role) -> None:
    while not role.gossip.sent:
        await role.gossip.published.wait()


async def _run_until_submitted(role: Role, ps: list[Peer], vs: list[Peer]) -> None:
    """Run a proposer in the train phase until its update is submitted, then crash it."""
    view = set_round(role.feed, Phase.TRAIN, ps, vs)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, role, view, 0)
        await _until_called(role, "submit_update")
        await trio.sleep(0)
        n.cancel_scope.cancel()


async def _restarted_after_wraps_sent(
    tmp_path: Path,
) -> tuple[Role, Role, list[Peer], list[Peer]]:
    """A proposer crashed after submitting and journaling its wraps as sent, and its restart."""
    role, ps, vs = _proposer(tmp_path)
    await _run_until_submitted(role, ps, vs)
    role.journal.update(R, wraps_sent=True)
    return role, role.restarted(), ps, vs


class RoundRecorder:
    """The learner, recording the round each training was for."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.rounds = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def train_async(self, *args: Any, **kwargs: Any) -> Any:
        self.rounds.append(kwargs.get("round_no"))
        return await self.inner.train_async(*args, **kwargs)


async def test_trains_with_the_rounds_settings(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.learner = recorder = RoundRecorder(role.learner)  # type: ignore[assignment]
    await _run_until_submitted(role, ps, vs)
    assert recorder.rounds == [R]  # its learning rate: TrainingSettings.for_round(R)


async def test_trains_submits_announces_and_releases_wraps_only_after_train(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    view = set_round(role.feed, Phase.TRAIN, ps, vs)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, role, view, 0)
        await _until_called(role, "submit_update")
        await until(lambda: role.gossip.sent)
        t0 = role.gossip.sent[0][0]
        rec = role.journal.get(R)
        assert rec.role == "proposer" and rec.seat == 0 and not rec.wraps_sent
        (call,) = role.client.named("submit_update")
        assert call == (
            R,
            bytes.fromhex(rec.update_hash),
            bytes.fromhex(rec.blob_id),
            rec.blob_size,
        )
        # the exact envelope size every voter expects (docs/protocol.md, step 3)
        assert rec.blob_size == update_blob_size(role.learner.initial_state())
        await trio.sleep(t0 + 5 * REANNOUNCE_SECONDS - 0.5 - trio.current_time())
        # re-announced every REANNOUNCE_SECONDS while the train phase lasts; no wraps yet
        times = [t - t0 for t, msg in role.gossip.sent]
        assert times == pytest.approx([i * REANNOUNCE_SECONDS for i in range(5)])
        assert role.gossip.messages(KeyWraps) == []
        assert role.journal.get(R).submitted
        assert role.journal.get(R).notes["submit_seconds"] >= 0  # for bench/scale.py

        role.gossip.sent.clear()
        set_round(role.feed, Phase.COMMIT, ps, vs)
        await until(lambda: role.journal.get(R).wraps_sent)
        first, second = (msg for _, msg in role.gossip.sent[:2])
        assert isinstance(first, KeyWraps) and isinstance(second, UpdateAnnounce)
        assert role.journal.get(R).wraps_sent
        # each voter opens the content key from its own wrap
        assert {w.recipient for w in first.wraps} == {v.box.public_bytes for v in vs}
        for v in vs:
            (w,) = [w for w in first.wraps if w.recipient == v.box.public_bytes]
            unwrap_key(
                EnvelopeWrap(w.recipient, w.wrapped),
                v.box.private,
                PublicKey(role.me.box.public_bytes),
            )
        set_round(role.feed, Phase.REVEAL, ps, vs)
        await trio.sleep(3)
        assert len(role.gossip.messages(KeyWraps)) >= 3
        set_round(role.feed, Phase.FINALIZED, ps, vs)
    # the run returned by itself once the round was over
    assert len(role.client.named("submit_update")) == 1


@pytest.mark.parametrize("restart_phase", [Phase.TRAIN, Phase.COMMIT], ids=["train", "commit"])
async def test_crash_after_training_before_submit_resubmits_the_same_update(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, restart_phase: Phase
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.client.fail["submit_update"] = ConnectionError("rpc down")
    view = set_round(role.feed, Phase.TRAIN, ps, vs)
    with pytest.raises(ConnectionError):
        await run_proposer(role, view, 0)
    sealed = role.journal.get(R)
    assert sealed.blob_id and not sealed.submitted and role.gossip.sent == []

    again = role.restarted()
    again.learner = NoTraining()  # type: ignore[assignment]
    view = set_round(role.feed, restart_phase, ps, vs)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, again, view, 0)
        await _until_called(again, "submit_update")
        if restart_phase is Phase.COMMIT:
            await until(lambda: again.journal.get(R).wraps_sent)
        await until(lambda: again.gossip.sent)
        set_round(role.feed, Phase.FINALIZED, ps, vs)
    (call,) = again.client.named("submit_update")
    assert call[1:3] == (bytes.fromhex(sealed.update_hash), bytes.fromhex(sealed.blob_id))
    rec = again.journal.get(R)
    assert rec.submitted and rec.wraps_sent == (restart_phase is Phase.COMMIT)


async def test_crash_after_submit_restarts_in_commit_and_releases_wraps_without_resubmitting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    await _run_until_submitted(role, ps, vs)
    assert role.journal.get(R).submitted and not role.journal.get(R).wraps_sent

    again = role.restarted()
    again.learner = NoTraining()  # type: ignore[assignment]
    view = set_round(role.feed, Phase.COMMIT, ps, vs)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, again, view, 0)
        await until(lambda: again.journal.get(R).wraps_sent)
        assert isinstance(again.gossip.sent[0][1], KeyWraps)
        set_round(role.feed, Phase.REVEAL, ps, vs)
        await trio.sleep(0.1)
        set_round(role.feed, Phase.VOIDED, ps, vs)
    assert again.client.calls == []


async def test_restart_after_wraps_sent_publishes_them_again_in_reveal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, again, ps, vs = await _restarted_after_wraps_sent(tmp_path)
    view = set_round(role.feed, Phase.REVEAL, ps, vs)
    with trio.move_on_after(REANNOUNCE_SECONDS + 0.5):
        await run_proposer(again, view, 0)
    assert len(again.gossip.messages(KeyWraps)) == 2 and again.client.calls == []


async def test_already_submitted_counts_as_submitted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.client.fail["submit_update"] = revert("AlreadySubmitted")
    view = set_round(role.feed, Phase.TRAIN, ps, vs)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, role, view, 0)
        await _until_published(role)
        n.cancel_scope.cancel()
    assert role.journal.get(R).submitted
    assert len(role.gossip.messages(UpdateAnnounce)) == 1


async def test_a_refused_submit_gives_up_without_announcing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.client.fail["submit_update"] = revert("WrongPhase")
    view = set_round(role.feed, Phase.TRAIN, ps, vs)
    await run_proposer(role, view, 0)  # returns: given up
    assert not role.journal.get(R).submitted and role.gossip.sent == []


@pytest.mark.parametrize("phase", [Phase.COMMIT, Phase.REVEAL, Phase.FINALIZED], ids=str)
async def test_a_proposer_elected_late_does_not_train(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, phase: Phase
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.learner = NoTraining()  # type: ignore[assignment]
    await run_proposer(role, set_round(role.feed, phase, ps, vs), 0)
    assert role.client.calls == [] and role.gossip.sent == [] and not role.journal.get(R).blob_id


async def test_no_base_model_or_no_registered_voter_gives_up(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.learner = NoTraining()  # type: ignore[assignment]
    held = role.feed.global_model_hash
    role.feed.global_model_hash = b"\x99" * 32
    await run_proposer(role, set_round(role.feed, Phase.TRAIN, ps, vs), 0)
    role.feed.global_model_hash = held
    role.membership = membership_of(*ps)  # no voter has a valid registration
    await run_proposer(role, set_round(role.feed, Phase.TRAIN, ps, vs), 0)
    assert role.client.calls == [] and not role.journal.get(R).blob_id


async def test_a_journaled_blob_missing_from_the_store_is_trained_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, ps, vs = _proposer(tmp_path)
    role.journal.update(R, role="proposer", seat=0, blob_id="ab" * 32, update_hash="cd" * 32)
    view = set_round(role.feed, Phase.TRAIN, ps, vs)
    async with trio.open_nursery() as n:
        n.start_soon(run_proposer, role, view, 0)
        await _until_called(role, "submit_update")
        n.cancel_scope.cancel()
    rec = role.journal.get(R)
    assert rec.blob_id != "ab" * 32 and role.store.has(bytes.fromhex(rec.blob_id))


async def test_gossip_failures_are_counted_and_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # wraps_sent is journaled already: no journal write below, exact timing
    role, again, ps, vs = await _restarted_after_wraps_sent(tmp_path)
    again.gossip.fail = True
    view = set_round(role.feed, Phase.COMMIT, ps, vs)
    with trio.move_on_after(3 * REANNOUNCE_SECONDS - 0.5):
        await run_proposer(again, view, 0)
    assert again.metrics.counters["gossip_publish_failed"] == 6  # wraps + announce, 3 times


async def test_a_phase_that_begins_during_a_publish_is_published_for_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    role, again, ps, vs = await _restarted_after_wraps_sent(tmp_path)

    def reveal_begins(msg: object) -> None:
        if role.feed.rounds[R].phase is Phase.COMMIT:
            set_round(role.feed, Phase.REVEAL, ps, vs)

    again.gossip.deliver = reveal_begins
    view = set_round(role.feed, Phase.COMMIT, ps, vs)
    with trio.move_on_after(REANNOUNCE_SECONDS / 2):
        await run_proposer(again, view, 0)
    assert len(again.gossip.messages(KeyWraps)) == 2  # commit's, then reveal's at once


async def test_a_compressed_task_seals_the_packed_update_and_keeps_the_residual(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """docs/protocol.md, "Compressed updates": the blob has the size every voter
    expects, opens to packed tensors that decode to an update within the send
    cap, and the residual is kept (mode 0600) for the next round."""
    role, ps, vs = _proposer(tmp_path)
    agg = AggregationSettings(compression="topk", topk_bits=2)
    role.settings = dataclasses.replace(role.settings, aggregation=agg)
    await _run_until_submitted(role, ps, vs)
    state = role.learner.initial_state()
    rec = role.journal.get(R)
    assert rec.blob_size == update_blob_size(state, agg) < update_blob_size(state) / 50
    residual = tmp_path / "p" / "residual" / f"{R}.flct"
    assert residual.stat().st_mode & 0o777 == 0o600
    assert role.residuals.load(R + 1) is not None and role.residuals.load(R) is None

    form = update_form(state, agg)
    recipient, sealed = rec.notes["wraps"][0]
    voter = next(v for v in vs if v.box.public_bytes.hex() == recipient)
    with role.store.open(bytes.fromhex(rec.blob_id)) as f:
        opened = open_update(
            f,
            EnvelopeWrap(bytes.fromhex(recipient), bytes.fromhex(sealed)),
            recipient=voter.box.private,
            sender=PublicKey(role.me.box.public_bytes),
            update_hash=bytes.fromhex(rec.update_hash),
            expected_shapes=form.shapes,
        )
    update = form.dense(opened)
    norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in update.values()))
    cap = send_cap(role.settings, R, state)
    assert cap is not None and 0 < norm <= cap * (1 + 1e-6)
