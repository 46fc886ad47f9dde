"""The voter's decisions (docs/protocol.md, "Behaviour of the node", Voter), free of I/O.

Two machines, each mapping what the voter knows now to the one next thing to
do; ``flocknode.rounds.voter`` performs the actions.

``decide`` runs the vote: decide (collect, aggregate, score), commit, reveal.
- a vote is decided only while the commit phase can still be reached (train
  or commit phase), and once: a journaled vote is committed and revealed as it
  is, never decided again;
- the vote and its salt are journaled before ``commitVote`` is sent, and
  ``committed``/``revealed`` after their transactions, so a restart at any point
  commits or reveals exactly what was journaled (what the chain already shows
  is journaled without a second transaction);
- a vote decided while the train phase is still open (no seat could be
  fetched) waits for the commit phase; one decided after it is given up;
- a journaled commit or reveal counts only once a view of the chain shows it
  while its phase lasts: a view read after the transaction that does not show
  it means a chain reorganisation removed it, and it is sent again (an
  "Already..." answer is success, so a stale view costs one refused estimate);
  a reorganisation that moved the phase back is waited out (docs/protocol.md,
  "Chain reorganisations and confirmations");
- a refused commit gives the vote up once a view read after the refusal
  does not show the commit either (it costs the voter the round's pay, not
  its stake: a commit on chain is revealed, however its resend was
  refused); a refused reveal never does while the reveal phase lasts: it is
  sent again at the next view read after the refusal, as a committed voter
  that does not reveal is slashed and a reorganisation can refuse a reveal the
  chain takes one block later. Past the reveal deadline of the latest view
  (the chain's clock) a refusal ends it: the feed stops reading a round once
  the next one opens, so that view may never show the phase end.

``decide_seat`` collects one proposer's update (docs/protocol.md, "Threats
and defences"):
- a seat whose proposer is not a registered member, or that submitted nothing
  by the commit phase, is left out;
- a seat whose size claim is not the exact envelope size is left out *and*
  marked wrong-size (the vote includes and rejects it) without being fetched;
- ciphertext is fetched while proposers still train; wraps are tried only
  once the train phase closed, each at most once (the proposer's, then relays
  from the round's other voters);
- collection ends at the collection deadline or when the phase moves past
  commit, whatever has arrived by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from flocknode.chain.types import Phase
from flocknode.rounds.outcomes import Done, GiveUp

RETRY_SECONDS = 0.5
DECIDE_PHASES = (Phase.TRAIN, Phase.COMMIT)
W = TypeVar("W")


@dataclass(frozen=True)
class VoterFacts:
    phase: Phase  # the round's phase in the latest chain view
    decided: bool  # the journal holds this round's vote
    committed: bool  # journaled: commitVote went through
    revealed: bool  # journaled: revealVote went through
    chain_committed: bool  # the chain shows this seat's commitment
    chain_revealed: bool  # the chain shows this seat's reveal
    withhold_reveal: bool = False  # a test behaviour: commit, never reveal
    commit_refused: str = ""  # commitVote reverted for another reason than "Already..."
    reveal_refused: str = ""  # revealVote reverted for another reason than "Already..."
    fresh: bool = False  # the view was read after this run's last commit or reveal returned
    reveal_over: bool = False  # the chain's clock is past the view's reveal deadline


@dataclass(frozen=True)
class Decide:
    """Collect the seats, aggregate, score; journal the vote (with its salt)."""


@dataclass(frozen=True)
class Commit:
    """Send ``commitVote`` for the journaled vote; journal ``committed``."""


@dataclass(frozen=True)
class Reveal:
    """Send ``revealVote`` for the journaled vote; journal ``revealed``."""


@dataclass(frozen=True)
class Record:
    """Record what the chain already shows (no transaction): ``committed`` or ``revealed``."""

    field: str


@dataclass(frozen=True)
class WaitView:
    """Wait for the next view of the chain (the journal is ahead of the view)."""


@dataclass(frozen=True)
class WaitPhase:
    """Wait until the round's phase is no longer ``phase``."""

    phase: Phase


VoterAction = Decide | Commit | Reveal | Record | WaitView | WaitPhase | GiveUp | Done


def decide(f: VoterFacts) -> VoterAction:
    if f.phase is Phase.SEEDING:
        # a role starts in a role phase: a reorganisation removed the election,
        # which is sent again (docs/protocol.md, "Chain reorganisations and confirmations")
        return WaitPhase(Phase.SEEDING)
    if not f.decided:
        if f.phase not in DECIDE_PHASES:
            return GiveUp(f"missed the commit phase (phase={f.phase.label})")
        return Decide()
    if not f.committed:
        if f.chain_committed:
            return Record("committed")
        if f.phase is Phase.TRAIN:
            return WaitPhase(Phase.TRAIN)
        if f.phase is not Phase.COMMIT:
            return GiveUp(f"vote ready after the commit phase (phase={f.phase.label})")
        if f.commit_refused:
            if not f.fresh:
                return WaitView()  # judged against a view read before the refusal
            return GiveUp(f"commitVote refused: {f.commit_refused}")
        return Commit()
    if f.phase in DECIDE_PHASES and not f.chain_committed:
        # journaled, not on chain: a view behind the journal, or a reorganisation
        if f.phase is Phase.COMMIT and f.commit_refused and f.fresh:
            return GiveUp(f"commitVote refused: {f.commit_refused}")
        if f.phase is Phase.COMMIT and f.fresh:
            return Commit()
        return WaitView() if f.phase is Phase.COMMIT else WaitPhase(f.phase)
    if f.revealed:
        if f.chain_revealed or f.phase not in (*DECIDE_PHASES, Phase.REVEAL):
            return Done()
        if f.phase is Phase.REVEAL:
            if f.reveal_refused and f.reveal_over:
                return GiveUp(f"revealVote refused past the reveal deadline: {f.reveal_refused}")
            return Reveal() if f.fresh else WaitView()
        return WaitPhase(f.phase)  # a reorganisation took the round back before reveal
    if f.withhold_reveal:
        return GiveUp("byzantine no_reveal: not revealing")
    if f.phase in DECIDE_PHASES:
        return WaitPhase(f.phase)
    if f.chain_revealed:
        return Record("revealed")
    if f.phase is not Phase.REVEAL:
        return GiveUp(f"missed the reveal phase (phase={f.phase.label})")
    if not f.chain_committed:
        # journaled, not on chain: a reorganisation removed the commit, which the
        # node's sender broadcasts again; a reveal now would be refused, and
        # giving up then would leave the commit, once mined again, unrevealed
        return WaitView()
    if f.reveal_refused and f.reveal_over:
        return GiveUp(f"revealVote refused past the reveal deadline: {f.reveal_refused}")
    if f.reveal_refused and not f.fresh:
        return WaitView()  # judged against a view read before the refusal
    return Reveal()


@dataclass(frozen=True)
class SeatFacts(Generic[W]):
    phase: Phase
    now: float  # the chain's clock
    deadline: float  # the collection deadline on the chain's clock (inf in the train phase)
    member: bool  # the seat's proposer is a registered member
    submitted: bool  # the chain shows the seat's update
    claimed_size: int  # the size the proposer claimed on chain
    expected_size: int  # the exact envelope size of an update of the base model's shapes
    blob_held: bool  # the ciphertext is in the content store
    fetch_failed: bool  # the last fetch failed and nothing new arrived since
    untried: tuple[W, ...]  # key wraps for the blob not tried yet, the proposer's first
    opened: bool = False


@dataclass(frozen=True)
class LeaveOut:
    """Final: the seat is not in the vote's inputs (``wrong_size``: included and rejected)."""

    reason: str
    wrong_size: bool = False


@dataclass(frozen=True)
class Stop:
    """Collection is over (deadline or phase): keep whatever the seat has."""


@dataclass(frozen=True)
class Fetch:
    """Fetch the ciphertext, cancelled at the collection deadline."""


@dataclass(frozen=True)
class Open(Generic[W]):
    """Try ``wrap`` on the held ciphertext; on success relay the key to the other voters."""

    wrap: W


@dataclass(frozen=True)
class WaitNews:
    """Wait for new gossip or a new chain view, at most until ``until`` (chain clock)."""

    until: float


SeatAction = LeaveOut | Stop | Fetch | Open[W] | WaitNews


def decide_seat(f: SeatFacts[W]) -> SeatAction[W]:
    if not f.member:
        return LeaveOut("proposer_not_member")
    if f.opened or f.phase not in DECIDE_PHASES or f.now >= f.deadline:
        return Stop()
    if f.phase is Phase.COMMIT and not f.submitted:
        return LeaveOut("not_submitted")
    if f.submitted and f.claimed_size != f.expected_size:
        return LeaveOut("wrong_size", wrong_size=True)
    if f.submitted and not f.blob_held and not f.fetch_failed:
        return Fetch()
    if f.blob_held and f.phase is Phase.COMMIT and f.untried:
        return Open(f.untried[0])
    return WaitNews(f.now + RETRY_SECONDS)
