"""The role runner: runs this node's proposer or voter path when it holds a seat.

On every published snapshot whose current round is in a role phase (train,
commit, reveal) and seats this node, it starts the seat's path once: after the
node holds the round's global model (the model keeper fetches it meanwhile),
and again while the phase is open if it raised (``retry.run_with_retries``;
the paths resume from the journal).

On its first snapshot it also settles the journal of recent rounds whose role
phases ended while the node was down: a vote journaled but not recorded as
revealed is recorded from the chain (``run_voter`` on the round's final view),
so a node stopped between ``revealVote`` and its journal write, and back only
after the round ended, still has a journal that says what the chain says.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

from flocknode.chain.types import Phase, RoundView
from flocknode.rounds.context import RoleDeps
from flocknode.rounds.proposer import run_proposer
from flocknode.rounds.retry import RetryPolicy, run_with_retries
from flocknode.rounds.service import SnapshotService, limited_log
from flocknode.rounds.snapshot import ChainSnapshot
from flocknode.rounds.voter import run_voter
from flocknode.rounds.windows import VIEWS_KEPT_BEHIND

log = logging.getLogger(__name__)

ROLE_PHASES = (Phase.TRAIN, Phase.COMMIT, Phase.REVEAL)
ROLE_RETRY = RetryPolicy()

RolePath = Callable[[RoleDeps, RoundView, int], Awaitable[None]]


def model_needed_until(role: str, view: RoundView) -> float:
    """The chain time after which a role of ``view`` can no longer use the global
    model: a proposer trains in the train phase, a voter aggregates until the
    commit deadline."""
    end = view.train_end if role == "proposer" else view.commit_end
    return float(end) if end else math.inf


class RoleRunner(SnapshotService):
    name = "roles"

    def __init__(
        self,
        deps: RoleDeps,
        *,
        proposer: RolePath = run_proposer,
        voter: RolePath = run_voter,
        retry: RetryPolicy = ROLE_RETRY,
    ) -> None:
        super().__init__(deps.metrics, deps.feed)
        self.deps = deps
        self.paths = {"proposer": proposer, "voter": voter}
        self.retry = retry
        self._started: set[tuple[int, str]] = set()  # (round, role) paths started
        self._settled = False  # the journal of ended rounds was checked against the chain

    def on_snapshot(self, snapshot: ChainSnapshot) -> None:
        if not self._settled:
            self._settled = True
            self._settle_ended_votes(snapshot)
        view = snapshot.view
        if view is None or view.phase not in ROLE_PHASES:
            return
        role = view.role_of(self.deps.wallet)
        if role is None:
            return
        name, seat = role
        key = (view.round, name)
        if key in self._started:
            return
        self._started = {k for k in self._started if k[0] >= view.round - VIEWS_KEPT_BEHIND}
        self._started.add(key)
        self.metrics.role(view.round, name, seat)
        log.info("elected round=%d role=%s seat=%d", view.round, name, seat)
        self.spawn(self._role, name, view, seat, where="role")

    def _settle_ended_votes(self, snapshot: ChainSnapshot) -> None:
        """Check each recent journaled vote not recorded as revealed against the
        chain, for rounds whose role phases are over (the current round's open
        role is ``on_snapshot``'s)."""
        current = snapshot.view
        for r, rec in self.deps.journal.records().items():
            if rec.role != "voter" or rec.vote is None or rec.revealed:
                continue
            if r < snapshot.current - VIEWS_KEPT_BEHIND or r > snapshot.current:
                continue
            if current is not None and r == current.round and current.phase in ROLE_PHASES:
                continue
            self.spawn(self._settle_vote, r, rec.seat, where="settle_vote")

    async def _settle_vote(self, r: int, seat: int) -> None:
        view = await self.deps.client.get_round(r)
        if view.phase in ROLE_PHASES:
            return  # still open: the role path takes it when the snapshot shows it
        await self.paths["voter"](self.deps, view, seat)

    def _open_until(self, view: RoundView) -> float:
        """The chain time a role of ``view.round`` can still act until (-inf: over)."""
        v = self.feed.rounds.get(view.round, view)
        if v.phase not in ROLE_PHASES:
            return -math.inf
        return float(v.reveal_end) if v.reveal_end else math.inf

    async def _role(self, name: str, view: RoundView, seat: int) -> None:
        """Run the role once the base model is held; again while its phase is open if it raised."""
        deps, feed, r = self.deps, self.feed, view.round
        path = self.paths[name]
        if not await self._wait_for_model(name, view):
            self.metrics.inc("role_no_model")
            log.warning("round %d: %s without the global model until its phase closed", r, name)
            return

        async def step() -> None:
            await path(deps, feed.rounds.get(r, view), seat)

        def failed(e: Exception, failures: int) -> None:
            self.metrics.inc("role_errors")
            limited_log.warning(
                "role", "round %d: %s failed (attempt %d), retrying: %r", r, name, failures, e
            )

        done = await run_with_retries(
            step,
            deadline=lambda: self._open_until(view),
            now=feed.now,
            on_error=failed,
            policy=self.retry,
        )
        if not done:
            self.metrics.inc("role_given_up")
            log.warning("round %d: %s given up: its phase closed or retries ran out", r, name)

    async def _wait_for_model(self, name: str, view: RoundView) -> bool:
        """True once the node holds the global model the role works from (the
        model keeper fetches it meanwhile), False if the phase that needs it
        closed first. A role whose work is already journaled needs no model. A
        voter starts at once: without the model by its commit cutoff it still
        votes "base model unavailable" (``unservable.base_model``)."""
        deps, feed = self.deps, self.feed
        if name == "voter":
            return True
        if deps.journal.get(view.round).blob_id:
            return True
        while not deps.models.has(feed.global_model_hash):
            v = feed.rounds.get(view.round, view)
            if v.phase not in ROLE_PHASES or feed.now() >= model_needed_until(name, v):
                return False
            await feed.changed()
        return True
