"""finalizeRound on a real anvil: one vote per seat, quorum edges, the
acceptance rule (half the winners' scores >= 0), rewards arithmetic and every
slash of docs/protocol.md, step 8.

Base deployment: 3 proposers, 3 voters, quorum 6666, stake 200 each, reward 10
per round (half to proposers), slash 10%, idle slash 1%, pool 100.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fixtures.contracts import ETHER, FINALIZED, Harness, NoReveal, Vote

pytestmark = pytest.mark.integration

AGG = b"\xa1" * 32
OTHER = b"\xb2" * 32
THIRD = b"\xc3" * 32
STAKE = 200 * ETHER
SLASH = STAKE * 1000 // 10_000
IDLE = STAKE * 100 // 10_000
INITIAL = b"\x33" * 32


def rewards(h: Harness, receipt: object) -> dict[str, int]:
    return {e.wallet: e.amount for e in h.events(receipt, "Rewarded")}


def slashes(h: Harness, receipt: object) -> dict[str, tuple[int, str]]:
    return {e.wallet: (e.amount, e.reason) for e in h.events(receipt, "Slashed")}


def assert_solvent(h: Harness) -> None:
    """Every token the task holds is someone's stake, unstake, reward, or the pool."""
    views = h.task.functions.participants(0, 1000).call()
    owed = (
        sum(v.stake + v.pendingUnstake + v.rewards for v in views)
        + h.task.functions.rewardPool().call()
    )
    assert h.token.functions.balanceOf(h.task.address).call() == owed


def test_unanimous_accepted_round_pays_everyone(h: Harness) -> None:
    r, rv = h.open_and_elect()
    pool = h.task.functions.rewardPool().call()
    receipt = h.play(r, [Vote(AGG, 0b111, score=s) for s in (3, 1, 2)])
    each = 5 * ETHER // 3
    assert rewards(h, receipt) == {w: each for w in rv.voters + rv.proposers}
    assert slashes(h, receipt) == {}
    (fin,) = h.events(receipt, "RoundFinalized")
    assert (fin.round, fin.accepted, fin.winningHash, fin.globalModelHash) == (r, True, AGG, AGG)
    rd = h.round(r)
    assert (rd.phase, rd.finalized, rd.accepted) == (FINALIZED, True, True)
    assert (rd.winningHash, rd.winningIncludedBits, rd.globalModelHashAfter) == (AGG, 0b111, AGG)
    assert h.task.functions.globalModelHash().call() == AGG
    assert h.task.functions.globalModelRound().call() == r
    assert h.task.functions.rewardPool().call() == pool - 6 * each
    for w in rv.voters + rv.proposers:
        assert h.task.functions.participant(w).call().rewards == each
    assert_solvent(h)


def test_two_of_three_pass_and_a_dissenter_with_other_inputs_is_neither_paid_nor_slashed(
    h: Harness,
) -> None:
    r, rv = h.open_and_elect()
    receipt = h.play(r, [Vote(AGG, 0b111), Vote(OTHER, 0b011), Vote(AGG, 0b111)])
    paid = rewards(h, receipt)
    assert paid[rv.voters[0]] == paid[rv.voters[2]] == 5 * ETHER // 2
    assert rv.voters[1] not in paid
    assert slashes(h, receipt) == {}
    assert h.round(r).accepted
    assert_solvent(h)


def test_one_of_three_is_no_winner(h: Harness) -> None:
    r, _rv = h.open_and_elect()
    pool = h.task.functions.rewardPool().call()
    receipt = h.play(r, [Vote(AGG, 0b111), Vote(OTHER, 0b011), Vote(THIRD, 0b101)])
    assert rewards(h, receipt) == {}
    assert slashes(h, receipt) == {}
    (fin,) = h.events(receipt, "RoundFinalized")
    assert (fin.accepted, fin.winningHash, fin.globalModelHash) == (False, b"\x00" * 32, INITIAL)
    assert h.task.functions.globalModelHash().call() == INITIAL
    assert h.task.functions.globalModelRound().call() == 0
    assert h.task.functions.rewardPool().call() == pool


def test_quorum_bps_is_applied_exactly(deploy: Callable[..., Harness]) -> None:
    strict = deploy(n=6, quorumBps=6667)  # 2 * 10000 < 6667 * 3
    r, _ = strict.open_and_elect()
    receipt = strict.play(r, [Vote(AGG, 7), Vote(AGG, 7), Vote(OTHER, 3)])
    assert strict.events(receipt, "RoundFinalized")[0].winningHash == b"\x00" * 32


@pytest.mark.parametrize(("agreeing", "wins"), [(4, True), (3, False)])
def test_quorum_with_five_voters(deploy: Callable[..., Harness], agreeing: int, wins: bool) -> None:
    t = deploy(n=8, votersPerRound=5)
    r, _rv = t.open_and_elect()
    votes = [Vote(AGG, 7)] * agreeing + [
        Vote(bytes([0xE0 + j]) * 32, 3) for j in range(5 - agreeing)
    ]
    receipt = t.play(r, votes)
    (fin,) = t.events(receipt, "RoundFinalized")
    assert fin.accepted is wins
    assert len(rewards(t, receipt)) == (agreeing + 3 if wins else 0)


@pytest.mark.parametrize(
    ("scores", "accepted"),
    [
        ((-1, 5, None), True),  # two winners: one of them cannot veto
        ((-1, -5, None), False),
        ((0, 5, None), True),
        ((-5, 0, 7), True),
        ((-5, -1, 7), False),
        ((7, -5, -1), False),
    ],
)
def test_half_the_winners_scores_decide(
    h: Harness, scores: tuple[int | None, ...], accepted: bool
) -> None:
    r, rv = h.open_and_elect()
    votes = [Vote(AGG, 7, score=s) if s is not None else Vote(OTHER, 1, score=100) for s in scores]
    receipt = h.play(r, votes)
    (fin,) = h.events(receipt, "RoundFinalized")
    assert fin.accepted is accepted
    assert fin.winningHash == AGG
    assert fin.globalModelHash == (AGG if accepted else INITIAL)
    paid = rewards(h, receipt)
    winners = [v for v, s in zip(rv.voters, scores, strict=True) if s is not None]
    # voters are paid for agreeing whatever the score; proposers only if accepted
    assert {w: paid[w] for w in winners} == {w: 5 * ETHER // len(winners) for w in winners}
    assert all((p in paid) is accepted for p in rv.proposers)


def test_proposer_share_skips_excluded_rejected_and_flagged(h: Harness) -> None:
    r, rv = h.open_and_elect()
    p0, p1, p2 = rv.proposers
    votes = [
        Vote(AGG, 0b111, rejected=0b010, flags=0b001),
        Vote(AGG, 0b111, rejected=0b010, flags=0b101),
        Vote(AGG, 0b111, rejected=0b010, flags=0b000),
    ]
    receipt = h.play(r, votes)
    paid = rewards(h, receipt)
    # p0 flagged by 2 of 3 winners (a quorum); p1 norm-rejected; p2 flagged by 1 only
    assert p0 not in paid and p1 not in paid
    assert paid[p2] == 5 * ETHER
    assert slashes(h, receipt) == {p1: (SLASH, "update rejected by norm check")}
    assert h.stake_of(p1) == STAKE - SLASH
    assert h.task.functions.participant(p1).call().slashed == SLASH
    assert_solvent(h)


def test_not_included_proposer_gets_nothing_and_no_slash(h: Harness) -> None:
    r, rv = h.open_and_elect()
    receipt = h.play(r, [Vote(AGG, 0b011)] * 3)
    paid = rewards(h, receipt)
    assert rv.proposers[2] not in paid
    assert paid[rv.proposers[0]] == paid[rv.proposers[1]] == 5 * ETHER // 2
    assert slashes(h, receipt) == {}


def test_every_slash_and_where_the_tokens_go(h: Harness) -> None:
    r, rv = h.open_and_elect()
    p0, p1, p2 = rv.proposers
    v0, v1, v2 = rv.voters
    pool = h.task.functions.rewardPool().call()
    # p2 idle; v0 and v1 win with 0b011 (p1 rejected); v2 committed and never revealed
    receipt = h.play(
        r,
        [
            Vote(AGG, 0b011, rejected=0b010),
            Vote(AGG, 0b011, rejected=0b010),
            NoReveal(Vote(AGG, 0b011)),
        ],
        submits=[True, True, False],
    )
    assert slashes(h, receipt) == {
        p1: (SLASH, "update rejected by norm check"),
        p2: (IDLE, "idle: no update submitted"),
        v2: (SLASH, "vote committed but not revealed"),
    }
    paid = rewards(h, receipt)
    assert paid == {v0: 5 * ETHER // 2, v1: 5 * ETHER // 2, p0: 5 * ETHER}
    # slashed tokens go to the pool after this round's rewards were paid
    assert h.task.functions.rewardPool().call() == pool - 10 * ETHER + 2 * SLASH + IDLE
    assert_solvent(h)


@pytest.mark.parametrize(
    "liar",
    [Vote(OTHER, 0b111), Vote(AGG, 0b111, rejected=0b100)],
    ids=["other-hash", "other-rejected-bits"],
)
def test_same_inputs_different_answer_is_slashed(h: Harness, liar: Vote) -> None:
    r, rv = h.open_and_elect()
    receipt = h.play(r, [Vote(AGG, 0b111), liar, Vote(AGG, 0b111)])
    assert slashes(h, receipt) == {
        rv.voters[1]: (SLASH, "different aggregate from the same inputs")
    }
    assert rv.voters[1] not in rewards(h, receipt)


def test_idle_voter_is_slashed_at_the_idle_rate(h: Harness) -> None:
    r, rv = h.open_and_elect()
    receipt = h.play(r, [Vote(AGG, 7), None, Vote(AGG, 7)])
    assert slashes(h, receipt) == {rv.voters[1]: (IDLE, "idle: no vote committed")}
    assert h.round(r).accepted  # 2 of 3 elected seats still make the quorum


def test_no_reveals_finalizes_without_winner(h: Harness) -> None:
    r, rv = h.open_and_elect()
    pool = h.task.functions.rewardPool().call()
    receipt = h.play(r, [NoReveal(Vote(AGG, 7))] * 3)
    assert slashes(h, receipt) == {v: (SLASH, "vote committed but not revealed") for v in rv.voters}
    assert rewards(h, receipt) == {}
    assert not h.round(r).accepted
    assert h.task.functions.rewardPool().call() == pool + 3 * SLASH


def test_nobody_acting_slashes_every_elected_party_at_the_idle_rate(h: Harness) -> None:
    r, rv = h.open_and_elect()
    receipt = h.play(r, [None, None, None], submits=[False, False, False])
    got = slashes(h, receipt)
    assert {w: a for w, (a, _) in got.items()} == {w: IDLE for w in rv.proposers + rv.voters}
    assert_solvent(h)


def test_empty_pool_never_blocks_finalize(deploy: Callable[..., Harness]) -> None:
    t = deploy(n=6, pool=0)
    r, _rv = t.open_and_elect()
    receipt = t.play(r, [Vote(AGG, 7), Vote(AGG, 7), None])
    assert rewards(t, receipt) == {}
    assert t.round(r).accepted
    assert t.task.functions.rewardPool().call() == IDLE  # only the idle slash
    assert_solvent(t)


def test_small_pool_pays_what_it_has(deploy: Callable[..., Harness]) -> None:
    t = deploy(n=6, pool=3 * ETHER)
    r, rv = t.open_and_elect()
    receipt = t.play(r, [Vote(AGG, 7)] * 3)
    paid = rewards(t, receipt)
    assert all(paid[w] == ETHER // 2 for w in rv.voters + rv.proposers)
    assert t.task.functions.rewardPool().call() == 0
    assert_solvent(t)


def test_slash_uses_the_round_stake_and_reaches_pending_unstake(h: Harness) -> None:
    r, rv = h.open_and_elect()
    v0, v1, _ = rv.voters
    h.fund(v0, 800 * ETHER)
    h.send(h.task.functions.stake(800 * ETHER), v0)  # counts from the next round only
    h.send(h.task.functions.requestUnstake(STAKE), v1)  # leaves nothing active
    receipt = h.play(r, [NoReveal(Vote(AGG, 7)), NoReveal(Vote(AGG, 7)), Vote(AGG, 7)])
    got = slashes(h, receipt)
    assert got[v0][0] == SLASH  # 10% of the 200 counted in round r, not of 1000
    assert got[v1][0] == SLASH
    assert h.stake_of(v0) == 1000 * ETHER - SLASH
    v1_view = h.task.functions.participant(v1).call()
    assert (v1_view.stake, v1_view.pendingUnstake) == (0, STAKE - SLASH)
    assert_solvent(h)
