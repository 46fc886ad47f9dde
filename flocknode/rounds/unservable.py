"""The "base model unavailable" vote (docs/protocol.md, "Unservable models").

A round's base is the chain's global model. A voter that does not hold it by
its commit cutoff cannot aggregate, and instead of giving up its seat it votes
"base model unavailable": an all-zero aggregate hash and bitmaps, score 0. If
such votes form the winning group, the contract rolls the global model back one
step (to the model the unservable one replaced, which honest nodes still hold)
and slashes the winners of the round that adopted the unservable model.

A voter that lacks the base model because it cannot reach the others (its
side of a network partition, its own link down) says nothing about whether
the model is servable, and a quorum of such voters would get the honest
winners of the previous round slashed. So a voter votes "unavailable" only
while it reaches most of the round: connected, for ``REACH_SECONDS`` or
longer, to more than half of the round's other seat holders (``reach``).
Otherwise it abstains: it commits nothing and takes the idle slash of a
voter that did not vote, its own loss rather than the winners'.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Protocol, TypeVar

from libp2p.peer.id import ID

from flocknode.chain.types import Phase, RoundView
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.snapshot import ChainFeed
from flocknode.store.journal import VoteRecord

log = logging.getLogger(__name__)

UNAVAILABLE_HASH = bytes(32)
RETRY_SECONDS = 0.5
# A connection counts toward a voter's reach once it has lasted this long: the
# base model is fetched from a connected holder within seconds (the model
# keeper retries every second), so a node that has just reconnected, after a
# partition healed, is not yet evidence that nobody serves the model.
REACH_SECONDS = 10.0


class Missing(enum.Enum):
    """Why ``base_model`` returned no hash."""

    UNAVAILABLE = "unavailable"  # the voter reaches most of the round: vote "unavailable"
    CUT_OFF = "cut_off"  # it does not: abstain


@dataclass(frozen=True)
class Reach:
    """How many of the round's other seat holders (``seats``) the voter has been
    connected to for ``REACH_SECONDS`` or longer (``connected``)."""

    connected: int
    seats: int

    @property
    def most(self) -> bool:
        """More than half of them (true with no other seat holder: nobody to ask)."""
        return self.seats == 0 or 2 * self.connected > self.seats


def reach(
    view: RoundView, wallet: str, peer_of: Callable[[str], ID | None], stable: Collection[ID]
) -> Reach:
    """The voter's reach in ``view``'s round: its other seat holders (distinct
    wallets, proposers and voters) and those among them whose peer is in
    ``stable`` (connected for ``REACH_SECONDS`` or longer)."""
    others = {w.lower() for w in (*view.proposers, *view.voters)} - {wallet.lower()}
    peers = [peer_of(w) for w in others]
    return Reach(sum(1 for p in peers if p is not None and p in stable), len(others))


class BaseModelDeps(Protocol):
    """What ``base_model`` reads."""

    @property
    def feed(self) -> ChainFeed: ...
    @property
    def models(self) -> ModelBook: ...
    @property
    def metrics(self) -> RoundMetrics: ...


D = TypeVar("D", bound=BaseModelDeps)


def unavailable_vote() -> VoteRecord:
    """The vote of a voter without the base model (committed and revealed as any vote)."""
    return VoteRecord(
        aggregate_hash=UNAVAILABLE_HASH.hex(),
        included_bits=0,
        rejected_bits=0,
        flag_bits=0,
        score=0,
        salt=os.urandom(32).hex(),
    )


async def base_model(
    ctx: D,
    view: RoundView,
    cutoff: Callable[[D, RoundView], float],
    news: Callable[[D, float], Awaitable[None]],
    reach_of: Callable[[RoundView], Reach],
) -> bytes | Missing:
    """The base model's hash once this node holds it (the engine keeps fetching it);
    when the round's commit cutoff (``cutoff``, on the chain's clock) passes first,
    ``Missing.UNAVAILABLE`` if the voter reaches most of the round then
    (``reach_of``), else ``Missing.CUT_OFF``; ``news`` waits for gossip or a new
    chain view."""
    r = view.round
    waited = False
    while True:
        h = ctx.feed.global_model_hash
        if h and ctx.models.has(h):
            if waited:
                log.info("base model arrived round=%d model=%s", r, h.hex()[:12])
            return h
        v = ctx.feed.rounds.get(r, view)
        if v.phase not in (Phase.TRAIN, Phase.COMMIT) or ctx.feed.now() >= cutoff(ctx, v):
            seen = reach_of(v)
            model = h.hex()[:12] if h else "?"
            if not seen.most:
                ctx.metrics.inc("votes_abstained_cut_off")
                log.warning(
                    "base model not held by the commit cutoff round=%d model=%s, connected "
                    "to %d of the round's %d other seat holders: abstaining",
                    r,
                    model,
                    seen.connected,
                    seen.seats,
                )
                return Missing.CUT_OFF
            ctx.metrics.inc("votes_base_unavailable")
            log.warning(
                "base model not held by the commit cutoff round=%d model=%s: voting unavailable",
                r,
                model,
            )
            return Missing.UNAVAILABLE
        if not waited:
            log.info("waiting for the base model round=%d", r)
            waited = True
        await news(ctx, RETRY_SECONDS)


def unservable_hash(round_number: int) -> bytes:
    """The made-up aggregate hash every ``unservable_hash`` cheater reveals in a round
    (``byzantine.collude``): derived from the round alone, so colluders agree
    without talking."""
    return hashlib.sha256(b"flocknode/unservable/" + round_number.to_bytes(8, "big")).digest()
