"""RoundView values for the round engine's unit tests."""

from __future__ import annotations

from flocknode.chain.types import Phase, RoundView


def make_view(
    r: int, phase: Phase = Phase.TRAIN, seed_block: int = 10, voters: tuple[str, ...] = ()
) -> RoundView:
    return RoundView(
        round=r,
        phase=phase,
        seed_block=seed_block,
        seed=bytes(32),
        elected_at=0,
        train_end=0,
        commit_end=0,
        reveal_end=0,
        eligible=(),
        eligible_stakes=(),
        proposers=(),
        voters=voters,
        updates=(),
        votes=(),
        finalized=phase is Phase.FINALIZED,
        accepted=False,
        winning_hash=bytes(32),
        winning_included_bits=0,
        global_model_hash_after=bytes(32),
    )
