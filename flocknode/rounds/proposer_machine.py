"""The proposer's decisions (docs/protocol.md, "Behaviour of the node", Proposer), free of I/O.

``decide`` maps what the proposer knows now (its journal record, the round's
phase on chain, the time on the chain's clock, what it published last) to the
one next thing to do. ``flocknode.rounds.proposer`` performs the actions.

What holds:
- a proposer trains only in the train phase, and only once: an update sealed
  and journaled is submitted and announced as it is, never trained again;
- the update is journaled before ``submitUpdate`` is sent, and ``submitted``
  is journaled after it, so a restart resubmits (``AlreadySubmitted`` is
  success) and never submits a different update;
- key wraps are released only once the train phase has closed (commit or
  reveal phase), so no voter can open an update while proposers still train;
- a journaled submission counts only while a view of the chain read after it
  shows it: one that does not, in the train phase, means a chain
  reorganisation removed it, and it is sent again (docs/protocol.md, "Chain
  reorganisations and confirmations");
- the announcement (and later the wraps) is repeated every
  ``REANNOUNCE_SECONDS`` while the phase lasts, and at once when it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from flocknode.chain.types import Phase
from flocknode.rounds.outcomes import Done, GiveUp

REANNOUNCE_SECONDS = 2.0
RELEASE_PHASES = (Phase.COMMIT, Phase.REVEAL)


@dataclass(frozen=True)
class ProposerFacts:
    phase: Phase  # the round's phase in the latest chain view
    now: float  # the chain's clock
    sealed: bool  # the journal names an update blob the content store holds
    submitted: bool  # journaled: submitUpdate went through (or was already on chain)
    base_held: bool  # the round's base (the global model) is held
    recipients: tuple[bytes, ...]  # box keys of the round's registered voters, unique
    refused: str = ""  # submitUpdate reverted for a reason other than AlreadySubmitted
    published_phase: Phase | None = None  # the phase of the last publish, if any
    published_at: float = 0.0  # the chain time of the last publish
    chain_submitted: bool = False  # the chain shows the seat's update
    fresh: bool = False  # the view was read after this run's last submitUpdate returned


@dataclass(frozen=True)
class Train:
    """Train on the base model, seal for ``recipients``, journal the result."""

    recipients: tuple[bytes, ...]


@dataclass(frozen=True)
class Submit:
    """Send ``submitUpdate`` for the journaled update; journal ``submitted``."""


@dataclass(frozen=True)
class Publish:
    """Gossip the announcement; with ``wraps`` the key wraps first (then journal ``wraps_sent``)."""

    wraps: bool


@dataclass(frozen=True)
class Wait:
    """Wait for the next chain view, at most until ``until`` on the chain's clock."""

    until: float


Action = Train | Submit | Publish | Wait | GiveUp | Done


def decide(f: ProposerFacts) -> Action:
    if f.phase is Phase.SEEDING:
        # a role starts in a role phase: a reorganisation removed the election,
        # which is sent again (docs/protocol.md, "Chain reorganisations and confirmations")
        return Wait(f.now + REANNOUNCE_SECONDS)
    if not f.sealed:
        if f.phase is not Phase.TRAIN:
            return GiveUp(f"missed the train phase (phase={f.phase.label})")
        if not f.base_held:
            return GiveUp("cannot train: global model not held")
        if not f.recipients:
            return GiveUp("no voter to seal for")
        return Train(f.recipients)
    if f.refused:
        return GiveUp(f"submitUpdate refused: {f.refused}")
    if not f.submitted:
        return Submit()
    if f.phase is Phase.TRAIN and not f.chain_submitted and f.fresh:
        return Submit()  # a reorganisation removed it (AlreadySubmitted is success)
    if f.phase is not Phase.TRAIN and f.phase not in RELEASE_PHASES:
        return Done()
    if f.published_phase is f.phase and f.now < f.published_at + REANNOUNCE_SECONDS:
        return Wait(f.published_at + REANNOUNCE_SECONDS)
    return Publish(wraps=f.phase in RELEASE_PHASES)
