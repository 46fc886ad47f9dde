"""The voter's decisions, table-driven (docs/protocol.md, "Behaviour of the node";
"Threats and defences")."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

import pytest

from flocknode.chain.types import Phase
from flocknode.rounds import voter_machine as m

F = TypeVar("F", m.VoterFacts, m.SeatFacts[str])
NEW = m.VoterFacts(
    phase=Phase.TRAIN,
    decided=False,
    committed=False,
    revealed=False,
    chain_committed=False,
    chain_revealed=False,
)
DECIDED = dataclasses.replace(NEW, decided=True, phase=Phase.COMMIT)
COMMITTED = dataclasses.replace(DECIDED, committed=True, chain_committed=True)
IN_REVEAL = dataclasses.replace(COMMITTED, phase=Phase.REVEAL)
OVER = (Phase.FINALIZABLE, Phase.FINALIZED, Phase.VOIDED)


def r(f: F, **changes: Any) -> F:
    return dataclasses.replace(f, **changes)


VOTE_CASES: list[tuple[str, m.VoterFacts, m.VoterAction]] = [
    ("decide in train (prefetch)", NEW, m.Decide()),
    ("decide in commit", r(NEW, phase=Phase.COMMIT), m.Decide()),
    *[
        (
            f"missed the commit phase ({p.label})",
            r(NEW, phase=p),
            m.GiveUp(f"missed the commit phase (phase={p.label})"),
        )
        for p in (Phase.REVEAL, *OVER)
    ],
    # crashed after journaling the vote, before commitVote
    ("decided in train: wait for commit", r(DECIDED, phase=Phase.TRAIN), m.WaitPhase(Phase.TRAIN)),
    ("decided: commit", DECIDED, m.Commit()),
    (
        "decided, commit phase over",
        r(DECIDED, phase=Phase.REVEAL),
        m.GiveUp("vote ready after the commit phase (phase=reveal)"),
    ),
    (
        "commit refused, the view read before the refusal",
        r(DECIDED, commit_refused="NotElectedVoter"),
        m.WaitView(),
    ),
    (
        "commit refused, a view read after it",
        r(DECIDED, commit_refused="NotElectedVoter", fresh=True),
        m.GiveUp("commitVote refused: NotElectedVoter"),
    ),
    (
        "commit refused, a view read after it shows the commit (an earlier send)",
        r(DECIDED, phase=Phase.REVEAL, chain_committed=True, commit_refused="x", fresh=True),
        m.Record("committed"),
    ),
    (
        "committed, lost in a reorg, the resend refused on a view before the refusal",
        r(COMMITTED, chain_committed=False, commit_refused="WrongPhase"),
        m.WaitView(),
    ),
    (
        "committed, the resend refused, the rebroadcast commit mined and commit over",
        r(IN_REVEAL, commit_refused="WrongPhase", fresh=True),
        m.Reveal(),
    ),
    # crashed after commitVote went through, before journaling it
    ("chain shows the commit", r(DECIDED, chain_committed=True), m.Record("committed")),
    (
        "chain shows the commit, already in reveal",
        r(DECIDED, phase=Phase.REVEAL, chain_committed=True),
        m.Record("committed"),
    ),
    ("committed: wait for reveal", COMMITTED, m.WaitPhase(Phase.COMMIT)),
    ("committed, journal ahead of the view", r(COMMITTED, chain_committed=False), m.WaitView()),
    # docs/protocol.md, "Chain reorganisations and confirmations"
    (
        "committed, a view read after the commit lacks it: a reorg, commit again",
        r(COMMITTED, chain_committed=False, fresh=True),
        m.Commit(),
    ),
    (
        "committed, lost in a reorg, the resend refused",
        r(COMMITTED, chain_committed=False, fresh=True, commit_refused="CommitClosed"),
        m.GiveUp("commitVote refused: CommitClosed"),
    ),
    (
        "committed, a reorg took the round back to train",
        r(COMMITTED, chain_committed=False, fresh=True, phase=Phase.TRAIN),
        m.WaitPhase(Phase.TRAIN),
    ),
    (
        "revealed, a view read after the reveal lacks it: reveal again",
        r(IN_REVEAL, revealed=True, fresh=True),
        m.Reveal(),
    ),
    (
        "revealed, lost in a reorg, the resend refused: again at the next view",
        r(IN_REVEAL, revealed=True, fresh=True, reveal_refused="WrongPhase"),
        m.Reveal(),
    ),
    (
        "a reveal refused, then a reorg took the round back to commit: commit again",
        r(IN_REVEAL, phase=Phase.COMMIT, chain_committed=False, fresh=True, reveal_refused="x"),
        m.Commit(),
    ),
    *[
        (
            f"a reorg took the election away ({name})",
            r(f, phase=Phase.SEEDING),
            m.WaitPhase(Phase.SEEDING),
        )
        for name, f in (("new", NEW), ("decided", DECIDED), ("committed", COMMITTED))
    ],
    (
        "revealed, a reorg took the round back to commit",
        r(IN_REVEAL, revealed=True, phase=Phase.COMMIT),
        m.WaitPhase(Phase.COMMIT),
    ),
    ("reveal", IN_REVEAL, m.Reveal()),
    # a reorganisation removed the commit: reveal once it is mined again
    ("committed, the chain lost the commit", r(IN_REVEAL, chain_committed=False), m.WaitView()),
    (
        "committed, the chain lost the commit, a reveal was refused",
        r(IN_REVEAL, chain_committed=False, reveal_refused="NotCommitted", fresh=True),
        m.WaitView(),
    ),
    (
        "no_reveal behaviour",
        r(COMMITTED, withhold_reveal=True),
        m.GiveUp("byzantine no_reveal: not revealing"),
    ),
    # crashed after revealVote went through, before journaling it
    ("chain shows the reveal", r(IN_REVEAL, chain_revealed=True), m.Record("revealed")),
    ("revealed and shown", r(IN_REVEAL, revealed=True, chain_revealed=True), m.Done()),
    ("revealed, journal ahead of the view", r(IN_REVEAL, revealed=True), m.WaitView()),
    ("revealed, round over", r(IN_REVEAL, revealed=True, phase=Phase.FINALIZED), m.Done()),
    *[
        (
            f"missed the reveal phase ({p.label})",
            r(COMMITTED, phase=p),
            m.GiveUp(f"missed the reveal phase (phase={p.label})"),
        )
        for p in OVER
    ],
    # a committed voter that does not reveal is slashed: a refused reveal is
    # sent again at each view read after it while the reveal phase lasts
    (
        "reveal refused, the view read before the refusal",
        r(IN_REVEAL, reveal_refused="NotCommitted"),
        m.WaitView(),
    ),
    (
        "reveal refused, a view read after it",
        r(IN_REVEAL, reveal_refused="NotCommitted", fresh=True),
        m.Reveal(),
    ),
    # the feed no longer reads a round once the next opens: its last view may
    # say "reveal" for good, and the chain's clock ends the retries
    *[
        (
            f"reveal refused past the reveal deadline ({name})",
            r(f, reveal_refused="WrongPhase", fresh=True, reveal_over=True),
            m.GiveUp("revealVote refused past the reveal deadline: WrongPhase"),
        )
        for name, f in (("journaled", IN_REVEAL), ("revealed", r(IN_REVEAL, revealed=True)))
    ],
    (
        "past the reveal deadline, nothing refused yet: reveal",
        r(IN_REVEAL, reveal_over=True),
        m.Reveal(),
    ),
]


@pytest.mark.parametrize(
    ("facts", "action"), [c[1:] for c in VOTE_CASES], ids=[c[0] for c in VOTE_CASES]
)
def test_decide(facts: m.VoterFacts, action: m.VoterAction) -> None:
    assert m.decide(facts) == action


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("journal", ["none", "decided", "committed", "revealed"])
def test_a_commit_is_only_sent_in_the_commit_phase_and_a_reveal_only_in_reveal(
    phase: Phase, journal: str
) -> None:
    f = r(
        NEW,
        phase=phase,
        decided=journal != "none",
        committed=journal in ("committed", "revealed"),
        revealed=journal == "revealed",
    )
    a = m.decide(f)
    if isinstance(a, m.Commit):
        assert phase is Phase.COMMIT and f.decided
    if isinstance(a, m.Reveal):
        assert phase is Phase.REVEAL and f.committed
    if isinstance(a, m.Decide):
        assert phase in (Phase.TRAIN, Phase.COMMIT) and not f.decided


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("revealed", [False, True])
@pytest.mark.parametrize("chain_committed", [False, True])
@pytest.mark.parametrize(
    "refused", [("", ""), ("CommitClosed", ""), ("", "WrongPhase"), ("a", "b")]
)
def test_a_committed_voter_never_gives_up_while_the_reveal_phase_lasts(
    fresh: bool, revealed: bool, chain_committed: bool, refused: tuple[str, str]
) -> None:
    f = r(
        IN_REVEAL,
        revealed=revealed,
        chain_committed=chain_committed,
        fresh=fresh,
        commit_refused=refused[0],
        reveal_refused=refused[1],
    )
    assert not isinstance(m.decide(f), m.GiveUp)


SIZE = 1000
W1, W2 = "proposer-wrap", "relay-wrap"
SEAT = m.SeatFacts[str](
    phase=Phase.TRAIN,
    now=10.0,
    deadline=math.inf,
    member=True,
    submitted=False,
    claimed_size=0,
    expected_size=SIZE,
    blob_held=False,
    fetch_failed=False,
    untried=(),
)
SUBMITTED = r(SEAT, submitted=True, claimed_size=SIZE)
HELD = r(SUBMITTED, blob_held=True, phase=Phase.COMMIT, deadline=20.0, untried=(W1, W2))

SEAT_CASES: list[tuple[str, m.SeatFacts[str], m.SeatAction[str]]] = [
    ("not a member", r(SEAT, member=False), m.LeaveOut("proposer_not_member")),
    ("train, nothing submitted yet: wait", SEAT, m.WaitNews(10.0 + m.RETRY_SECONDS)),
    (
        "commit, nothing submitted",
        r(SEAT, phase=Phase.COMMIT, deadline=20.0),
        m.LeaveOut("not_submitted"),
    ),
    *[
        (
            f"claimed size {claim} in {p.label}",
            r(SUBMITTED, claimed_size=claim, phase=p, deadline=20.0),
            m.LeaveOut("wrong_size", wrong_size=True),
        )
        for claim in (2 << 30, SIZE + 1, SIZE - 1, 0)
        for p in (Phase.TRAIN, Phase.COMMIT)
    ],
    ("submitted in train: prefetch", SUBMITTED, m.Fetch()),
    ("fetch failed: wait for news", r(SUBMITTED, fetch_failed=True), m.WaitNews(10.5)),
    (
        "held in train: no wrap is tried yet",
        r(HELD, phase=Phase.TRAIN, deadline=math.inf),
        m.WaitNews(10.5),
    ),
    ("held in commit: the first untried wrap", HELD, m.Open(W1)),
    ("a relay after the proposer's failed", r(HELD, untried=(W2,)), m.Open(W2)),
    ("every wrap tried: wait for a relay", r(HELD, untried=()), m.WaitNews(10.5)),
    ("opened", r(HELD, opened=True), m.Stop()),
    ("collection deadline", r(HELD, now=20.0), m.Stop()),
    ("deadline also stops a fetch", r(HELD, now=20.0, blob_held=False), m.Stop()),
    *[(f"phase {p.label}", r(HELD, phase=p), m.Stop()) for p in (Phase.REVEAL, *OVER)],
]


@pytest.mark.parametrize(
    ("facts", "action"), [c[1:] for c in SEAT_CASES], ids=[c[0] for c in SEAT_CASES]
)
def test_decide_seat(facts: m.SeatFacts[str], action: m.SeatAction[str]) -> None:
    assert m.decide_seat(facts) == action
