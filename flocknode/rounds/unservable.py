"""The "base model unavailable" vote (docs/protocol.md, "Unservable models").

A round's base is the chain's global model. A voter that does not hold it by
its commit cutoff cannot aggregate, and instead of giving up its seat it votes
"base model unavailable": an all-zero aggregate hash and bitmaps, score 0. If
such votes form the winning group, the contract rolls the global model back one
step (to the model the unservable one replaced, which honest nodes still hold)
and slashes the winners of the round that adopted the unservable model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from flocknode.chain.types import Phase, RoundView
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.snapshot import ChainFeed
from flocknode.store.journal import VoteRecord

log = logging.getLogger(__name__)

UNAVAILABLE_HASH = bytes(32)
RETRY_SECONDS = 0.5


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
) -> bytes | None:
    """The base model's hash once this node holds it (the engine keeps fetching it),
    or None when the round's commit cutoff (``cutoff``, on the chain's clock) passes
    first; ``news`` waits for gossip or a new chain view."""
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
            ctx.metrics.inc("votes_base_unavailable")
            log.warning(
                "base model not held by the commit cutoff round=%d model=%s: voting unavailable",
                r,
                h.hex()[:12] if h else "?",
            )
            return None
        if not waited:
            log.info("waiting for the base model round=%d", r)
            waited = True
        await news(ctx, RETRY_SECONDS)


def unservable_hash(round_number: int) -> bytes:
    """The made-up aggregate hash every ``unservable_hash`` cheater reveals in a round
    (``byzantine.collude``): derived from the round alone, so colluders agree
    without talking."""
    return hashlib.sha256(b"flocknode/unservable/" + round_number.to_bytes(8, "big")).digest()
