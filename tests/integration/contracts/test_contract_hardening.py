"""FlockTask defences of issue 10 on a real anvil: the acceptance rule that one
winner cannot veto (finding 9), low-order box keys refused at registration
(finding 2), eviction of registrations that hold no stake (finding 7), and the
"base model unavailable" vote that rolls back an unservable model (finding 6).

Base deployment: 3 proposers, 3 voters, quorum 6666, stake 200 each, reward 10
per round (half to proposers), slash 10%, idle slash 1%, pool 100, 8 wallets.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_utils import keccak, to_checksum_address
from nacl.exceptions import RuntimeError as NaclRuntimeError
from nacl.public import Box, PrivateKey, PublicKey

from flocknode.chain.draw import elect
from tests.fixtures.contracts import ETHER, Harness, Vote

pytestmark = pytest.mark.integration

STAKE = 200 * ETHER
SLASH = STAKE * 1000 // 10_000
INITIAL = b"\x33" * 32
GOOD = b"\xa1" * 32
NEXT = b"\xa2" * 32
FAKE = b"\xf1" * 32
FAKE2 = b"\xf2" * 32
UNAVAILABLE = Vote(b"\x00" * 32, 0)
EVICTION_GRACE = 600

P = 2**255 - 19
LOW_ORDER = [
    0,
    1,
    int.from_bytes(
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
    ),
    int.from_bytes(
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
    ),
    P - 1,
    P,
    P + 1,
]
# every encoding X25519 reads as one of them: the top bit is ignored
LOW_ORDER_KEYS = [(u | top).to_bytes(32, "little") for u in LOW_ORDER for top in (0, 1 << 255)]


def slashes(h: Harness, receipt: object) -> dict[str, tuple[int, int, str]]:
    return {e.wallet: (e.round, e.amount, e.reason) for e in h.events(receipt, "Slashed")}


def rewards(h: Harness, receipt: object) -> dict[str, int]:
    return {e.wallet: e.amount for e in h.events(receipt, "Rewarded")}


def model(h: Harness) -> tuple[bytes, int]:
    return h.task.functions.globalModelHash().call(), h.task.functions.globalModelRound().call()


def assert_solvent(h: Harness) -> None:
    views = h.task.functions.participants(0, 1000).call()
    owed = (
        sum(v.stake + v.pendingUnstake + v.rewards for v in views)
        + h.task.functions.rewardPool().call()
    )
    assert h.token.functions.balanceOf(h.task.address).call() >= owed


def adopt(h: Harness, aggregate: bytes, winners: int = 3) -> tuple[int, object]:
    """One round whose first ``winners`` voters adopt ``aggregate`` (the rest idle)."""
    r, rv = h.open_and_elect()
    votes = [Vote(aggregate, 0b111, score=1) if j < winners else None for j in range(3)]
    h.play(r, votes)
    assert model(h) == (aggregate, r)
    return r, rv


# ------------------------------------------------------------------ finding 9


def test_finding9_one_winner_cannot_veto(h: Harness) -> None:
    # two winners (the third voter idle): one scores the aggregate below zero
    r, _rv = h.open_and_elect()
    receipt = h.play(r, [Vote(GOOD, 0b111, score=-5), Vote(GOOD, 0b111, score=7), None])
    (fin,) = h.events(receipt, "RoundFinalized")
    assert fin.accepted, "one winner of two vetoed an aggregate the other found good"
    assert model(h) == (GOOD, r)


def test_acceptance_needs_half_the_winners_scores_non_negative(h: Harness) -> None:
    r, _ = h.open_and_elect()
    h.play(r, [Vote(GOOD, 0b111, score=-5), Vote(GOOD, 0b111, score=-1), None])
    assert not h.round(r).accepted  # both winners below zero
    r, _ = h.open_and_elect()
    h.play(r, [Vote(NEXT, 0b111, score=s) for s in (-1, -1, 5)])
    assert not h.round(r).accepted  # odd count: as before, the middle score decides
    r, _ = h.open_and_elect()
    h.play(r, [Vote(NEXT, 0b111, score=s) for s in (-1, 0, 5)])
    assert h.round(r).accepted


# ------------------------------------------------------------------ finding 2


@pytest.mark.parametrize("key", LOW_ORDER_KEYS, ids=lambda k: k.hex()[:8] + ".." + k.hex()[-4:])
def test_finding2_low_order_box_keys_are_refused_on_chain(
    h: Harness, accounts: tuple[str, ...], key: bytes
) -> None:
    # what the list is for: nobody can seal a key wrap to such a key
    with pytest.raises(NaclRuntimeError):
        Box(PrivateKey.generate(), PublicKey(key))
    wallet = accounts[12]
    p = h.make_participant(wallet)
    h.expect_revert(
        h.task.functions.register(p.peer_id, key, p.multiaddrs, p.peer_sig), wallet, "BadBoxKey"
    )


def test_an_ordinary_box_key_still_registers(h: Harness, accounts: tuple[str, ...]) -> None:
    wallet = accounts[12]
    p = h.make_participant(wallet)
    p.box_key = bytes(PrivateKey.generate().public_key)
    h.register(p)
    assert h.task.functions.participant(wallet).call().boxPublicKey == p.box_key


# ------------------------------------------------------------------ finding 7


def squatters(h: Harness, count: int, tag: bytes = b"squat") -> list[str]:
    wallets = []
    for i in range(count):
        wallet = to_checksum_address(keccak(tag + bytes([i]))[:20])
        h.impersonate(wallet)
        h.register(h.make_participant(wallet))
        wallets.append(wallet)
    return wallets


def test_finding7_squatters_cannot_keep_honest_out(
    deploy: Callable[..., Harness], accounts: tuple[str, ...]
) -> None:
    # 5 staked members; 3 junk registrations fill the registry to its maximum of 8
    t = deploy(n=5, maxParticipants=8)
    junk = squatters(t, 3)
    assert t.task.functions.participantCount().call() == 8
    honest = accounts[12]
    p = t.make_participant(honest)
    # a fresh registration has time to stake before it can be evicted
    t.expect_revert(
        t.task.functions.register(p.peer_id, p.box_key, p.multiaddrs, p.peer_sig),
        honest,
        "TaskFull",
    )
    t.advance(EVICTION_GRACE)
    receipt = t.register(p)
    (ev,) = t.events(receipt, "Evicted")
    assert (ev.wallet, ev.by, ev.refunded) == (junk[0], honest, 0)
    assert t.task.functions.participantCount().call() == 8
    view = t.task.functions.participant(honest).call()
    assert view.registeredAt == 5  # the evicted squatter's place in the order
    t.expect_revert(t.task.functions.participant(junk[0]), t.deployer, "NotRegistered", junk[0])
    t.fund(honest, STAKE)
    t.send(t.task.functions.stake(STAKE), honest)
    # the newcomer cannot be evicted right away by the next squatter...
    late = squatters(t, 1, tag=b"late")
    assert t.task.functions.participant(honest).call().stake == STAKE
    assert t.task.functions.isEligible(honest).call()
    assert late[0] in [v.wallet for v in t.task.functions.participants(0, 8).call()]
    # ... and is elected: 6 eligible for 6 seats
    _r, rv = t.open_and_elect()
    assert honest in rv.proposers + rv.voters
    # the draw mirror reads the eligible list in registration order and agrees
    proposers, voters = elect(rv.seed, rv.eligible, rv.eligibleStakes, 3, 3)
    assert (proposers, voters) == (list(rv.proposers), list(rv.voters))
    assert rv.eligible[5] == honest


def test_eviction_keeps_tokens_and_spares_stakers_and_elected(
    deploy: Callable[..., Harness], accounts: tuple[str, ...]
) -> None:
    t = deploy(n=6, maxParticipants=8, totalRounds=10)
    # a squatter with a stake below the minimum, and one without any
    small = accounts[12]
    t.fund(small, 5 * ETHER)
    t.register(t.make_participant(small))
    t.send(t.task.functions.stake(5 * ETHER), small)
    squatters(t, 1)
    t.advance(EVICTION_GRACE)
    # a member of round 1 unstakes everything: it stays until that round is finalized
    r, rv = t.open_and_elect()
    member = rv.voters[0]
    t.send(t.task.functions.requestUnstake(STAKE), member)
    newcomers = [accounts[13], accounts[14], accounts[15]]
    ps = [t.make_participant(w) for w in newcomers]
    # first eviction: the squatter with 5 tokens, which become claimable
    receipt = t.register(ps[0])
    (ev,) = t.events(receipt, "Evicted")
    assert (ev.wallet, ev.refunded) == (small, 5 * ETHER)
    before = t.token.functions.balanceOf(small).call()
    t.send(t.task.functions.claimRewards(), small)
    assert t.token.functions.balanceOf(small).call() == before + 5 * ETHER
    t.fund(newcomers[0], STAKE)
    t.send(t.task.functions.stake(STAKE), newcomers[0])
    t.register(ps[1])  # then the unstaked junk
    # the elected member (unfinalized round) and the stakers are spared
    t.expect_revert(
        t.task.functions.register(ps[2].peer_id, ps[2].box_key, ps[2].multiaddrs, ps[2].peer_sig),
        newcomers[2],
        "TaskFull",
    )
    t.play(r, [Vote(GOOD, 0b111, score=1)] * 3)
    # round 1's winners stay until a later round is finalized: the next round's
    # voters may still find round 1's model unservable
    r2 = t.open_round()
    assert t.stake_of(member) == 0 and member in rv.voters
    t.expect_revert(
        t.task.functions.register(ps[2].peer_id, ps[2].box_key, ps[2].multiaddrs, ps[2].peer_sig),
        newcomers[2],
        "TaskFull",
    )
    t.elect(r2)
    t.play(r2, [Vote(NEXT, 0b111, score=1)] * 3)
    # now the member that unstaked is evicted; its pending unstake becomes claimable
    receipt = t.register(ps[2])
    (ev,) = t.events(receipt, "Evicted")
    assert (ev.wallet, ev.refunded) == (member, STAKE)
    assert t.task.functions.participantCount().call() == 8
    assert_solvent(t)


# ------------------------------------------------------------------ finding 6


def test_finding6_unservable_model_rolls_back_and_its_winners_are_slashed(h: Harness) -> None:
    # round 1 adopts a real model; in round 2 two colluding voter seats adopt a
    # hash nobody holds (the third, honest voter included the same seats)
    r1, _ = adopt(h, GOOD)
    r2, rv2 = h.open_and_elect()
    h.play(r2, [Vote(FAKE, 0b111, score=1), Vote(FAKE, 0b111, score=1), Vote(NEXT, 0b011)])
    assert model(h) == (FAKE, r2)
    colluders = rv2.voters[:2]
    # round 3: nobody can train on FAKE; the voters vote "base model unavailable"
    r3, rv3 = h.open_and_elect()
    pool = h.task.functions.rewardPool().call()
    receipt = h.play(r3, [UNAVAILABLE] * 3, submits=[False] * 3)
    (fin,) = h.events(receipt, "RoundFinalized")
    assert (fin.accepted, fin.winningHash, fin.globalModelHash) == (False, b"\x00" * 32, GOOD)
    (back,) = h.events(receipt, "ModelRolledBack")
    assert (back.round, back.fromRound, back.toRound, back.globalModelHash) == (r3, r2, r1, GOOD)
    assert model(h) == (GOOD, r1)
    assert h.round(r3).globalModelHashAfter == GOOD
    # the winners of round 2 are slashed (on their round-2 stake, at round 3's
    # settlement); round 3's proposers are not idle-slashed
    assert slashes(h, receipt) == {w: (r3, SLASH, "unservable model") for w in colluders}
    # round 3's voters are paid for agreeing, as in any round with a winner
    assert rewards(h, receipt) == {w: 5 * ETHER // 3 for w in rv3.voters}
    assert h.task.functions.rewardPool().call() == pool - 3 * (5 * ETHER // 3) + 2 * SLASH
    # rounds continue from the model before the unservable one
    r4, _ = adopt(h, NEXT)
    assert h.round(r4).globalModelHashAfter == NEXT
    assert_solvent(h)


def test_finding6_chained_unservable_models_roll_back_one_step_per_round(
    deploy: Callable[..., Harness],
) -> None:
    t = deploy(n=8, totalRounds=10)
    r1, _ = adopt(t, GOOD)
    r2, _ = adopt(t, FAKE, winners=2)
    r3, _ = adopt(t, FAKE2, winners=2)  # colluders win again, on top of FAKE
    r4, _ = t.open_and_elect()
    receipt = t.play(r4, [UNAVAILABLE] * 3, submits=[False] * 3)
    assert model(t) == (FAKE, r2)
    (back,) = t.events(receipt, "ModelRolledBack")
    assert (back.fromRound, back.toRound) == (r3, r2)
    assert set(slashes(t, receipt)) == set(t.round(r3).voters[:2])
    r5, _ = t.open_and_elect()
    receipt = t.play(r5, [UNAVAILABLE] * 3, submits=[False] * 3)
    assert model(t) == (GOOD, r1)
    (back,) = t.events(receipt, "ModelRolledBack")
    assert (back.fromRound, back.toRound) == (r2, r1)
    assert set(slashes(t, receipt)) == set(t.round(r2).voters[:2])
    assert_solvent(t)


def test_finding6_the_initial_model_is_never_rolled_back(h: Harness) -> None:
    r, rv = h.open_and_elect()
    receipt = h.play(r, [UNAVAILABLE] * 3, submits=[False] * 3)
    assert model(h) == (INITIAL, 0)
    assert h.events(receipt, "ModelRolledBack") == []
    # every node builds the initial model: proposers that did not train are idle
    assert {w: s[2] for w, s in slashes(h, receipt).items()} == {
        w: "idle: no update submitted" for w in rv.proposers
    }


def test_finding6_a_minority_of_unavailable_votes_changes_nothing(h: Harness) -> None:
    r1, _ = adopt(h, GOOD)
    r2, rv2 = h.open_and_elect()
    receipt = h.play(r2, [Vote(NEXT, 0b111, score=1), UNAVAILABLE, Vote(NEXT, 0b111, score=1)])
    assert model(h) == (NEXT, r2)
    assert h.events(receipt, "ModelRolledBack") == []
    assert rv2.voters[1] not in slashes(h, receipt)  # could not fetch: not a liar
    assert r1 < r2


def test_finding6_winners_cannot_withdraw_while_their_model_can_be_challenged(
    h: Harness,
) -> None:
    r1, rv1 = adopt(h, GOOD)
    winner = rv1.voters[0]
    h.send(h.task.functions.requestUnstake(STAKE), winner)
    h.expect_revert(h.task.functions.withdraw(), winner, "ModelUnderChallenge", r1)
    r2, rv2 = h.open_and_elect()
    h.play(r2, [Vote(NEXT, 0b111, score=-1)] * 3)  # rejected: the model stays
    assert model(h) == (GOOD, r1)
    assert winner not in rv2.proposers + rv2.voters  # its stake left before round 2
    h.send(h.task.functions.withdraw(), winner)
