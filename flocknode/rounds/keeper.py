"""Keeping the task alive: open, elect and finalize rounds when they are due.

Anyone may make these calls and every node does; racing nodes are normal. The
decision is a pure function of the chain's state, and a call another node got
in first (its revert says so) is dropped quietly.
"""

from __future__ import annotations

from typing import NamedTuple

from flocknode.chain.types import Phase, RoundView, TaskParams

# Reverts that only mean "somebody else already did it" or "not yet".
BENIGN_REVERTS = frozenset(
    {
        "AlreadyElected",
        "AlreadyFinalized",
        "RoundStillOpen",
        "WrongPhase",
        "SeedNotReady",
        "TaskComplete",
        "NoSuchRound",
    }
)


class KeeperCall(NamedTuple):
    action: str  # "open" (finalizing the due round first) or "elect"
    round: int


def keeper_call(
    current: int, view: RoundView | None, params: TaskParams, block: int
) -> KeeperCall | None:
    """The keeper transaction due now, if any."""
    if current == 0 or view is None:
        return KeeperCall("open", current + 1) if params.total_rounds > 0 else None
    if view.phase is Phase.FINALIZABLE:
        # openRound finalizes the due round first (and only finalizes after the last
        # round): one transaction instead of two, one poll interval saved per round.
        return KeeperCall("open", current + 1)
    if view.phase in (Phase.FINALIZED, Phase.VOIDED):
        if view.phase is Phase.FINALIZED and current >= params.total_rounds:
            return None  # the task is complete
        return KeeperCall("open", current + 1)
    # A transaction sent now lands in block ``block + 1`` at the earliest.
    if view.phase is Phase.SEEDING and block + 1 >= view.seed_block + 2:
        return KeeperCall("elect", current)
    return None
