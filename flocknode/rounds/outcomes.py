"""The two ends both role machines share (``proposer_machine``, ``voter_machine``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GiveUp:
    """Stop working on the round: ``reason`` says why (logged)."""

    reason: str


@dataclass(frozen=True)
class Done:
    """The role's work in the round is over (the proposer's once the reveal phase
    closed, the voter's once its vote is revealed or the chain shows it revealed)."""
