"""The role runner settles the journal of rounds that ended while the node was down
(docs/protocol.md, "Local state"): a vote whose ``revealVote`` went through just
before a stop, with the node back only after the round ended, is journaled as
revealed from the chain, without a transaction; a vote the chain does not show
revealed stays as journaled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing

from flocknode.chain.types import Phase
from flocknode.rounds.roles import RoleRunner
from tests.unit.rounds.roles_env import (
    NO_VOTE,
    VOTE,
    R,
    Role,
    TrioChainView,
    membership_of,
    peer,
)
from tests.unit.rounds.views import make_view


@pytest.mark.parametrize(
    ("chain_revealed", "current"),
    [(True, R + 1), (True, R), (False, R + 1)],
    ids=["revealed, next round open", "revealed, round still current", "not revealed"],
)
async def test_a_vote_revealed_before_a_stop_is_journaled_after_its_round_ended(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    chain_revealed: bool,
    current: int,
) -> None:
    proposer, me = peer(1), peer(0x100)
    feed = TrioChainView()
    node = Role(tmp_path, me, feed, membership_of(proposer, me))
    node.journal.update(R, role="voter", seat=0, vote=VOTE, committed=True)
    vote = dataclasses.replace(NO_VOTE, committed=True, revealed=chain_revealed)
    ended = dataclasses.replace(
        make_view(R, Phase.FINALIZED), proposers=(proposer.wallet,), voters=(me.wallet,)
    )
    ended = dataclasses.replace(ended, votes=(vote,))
    node.client.views[R] = ended
    views = {R: ended}
    if current > R:  # the next round is open and does not seat this node
        views[current] = dataclasses.replace(
            make_view(current, Phase.TRAIN), proposers=(proposer.wallet,), voters=("0x" + "9" * 40,)
        )
    feed.publish(dataclasses.replace(feed.latest, current=current, rounds=views))
    runner = RoleRunner(node)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        with trio.fail_after(60):
            while not node.client.named("get_round"):
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        runner.stop()
    rec = node.journal.get(R)
    assert (rec.vote, rec.committed, rec.revealed) == (VOTE, True, chain_revealed)
    assert not node.client.named("commit_vote") and not node.client.named("reveal_vote")
    assert node.metrics.total("engine_errors") == 0
