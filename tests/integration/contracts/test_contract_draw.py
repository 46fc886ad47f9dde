"""The role draw on a real anvil: stake-proportional, never an address twice,
never an ineligible one; drawSeats (the contract's own draw) agrees with the
Python mirror in flocknode/chain/draw.py."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest
from eth_utils import keccak

from flocknode.chain.draw import draw_seats, elect
from tests.fixtures.contracts import ETHER, Harness, Reverted

pytestmark = pytest.mark.integration

# chi-square critical values at p = 0.001 by degrees of freedom
CHI2_CRIT_P001 = {7: 24.322}


def contract_draw(h: Harness, seed: bytes, stakes: list[int], seats: int) -> list[int]:
    return list(h.task.functions.drawSeats(seed, stakes, seats).call())


def test_first_seat_is_stake_proportional(h: Harness) -> None:
    stakes = [k * ETHER for k in range(1, 9)]  # weights 1..8, total 36
    trials = 1200
    counts: Counter[int] = Counter()
    with h.w3.batch_requests() as batch:  # one HTTP request for all the eth_calls
        for t in range(trials):
            batch.add(
                h.task.functions.drawSeats(
                    keccak(b"proportional" + t.to_bytes(4, "big")), stakes, 1
                )
            )
        results = batch.execute()
    assert len(results) == trials
    for result in results:
        (pick,) = result
        counts[int(pick)] += 1
    total = sum(range(1, 9))
    chi2 = sum(
        (counts[i] - trials * (i + 1) / total) ** 2 / (trials * (i + 1) / total) for i in range(8)
    )
    assert chi2 < CHI2_CRIT_P001[7], (chi2, counts)
    # and the heaviest is drawn clearly more often than the lightest
    assert counts[7] > 4 * counts[0]


def test_draw_never_repeats_and_never_takes_zero_stake(h: Harness) -> None:
    rng = random.Random(7)
    for t in range(60):
        n = rng.randint(1, 80)  # several blocks of 16, partial last blocks
        stakes = [rng.choice([0, 0, 1, rng.randint(1, 10**24)]) for _ in range(n)]
        nonzero = sum(1 for s in stakes if s)
        seats = rng.randint(0, nonzero)
        seed = keccak(b"repeat" + t.to_bytes(4, "big"))
        picks = contract_draw(h, seed, stakes, seats)
        assert len(picks) == seats == len(set(picks))
        assert all(stakes[i] > 0 for i in picks)
        assert picks == draw_seats(seed, stakes, seats)


def test_draw_reverts_like_the_mirror(h: Harness) -> None:
    seed = keccak(b"x")
    with pytest.raises(Reverted) as info:
        try:
            contract_draw(h, seed, [1, 2], 3)
        except Exception as exc:
            raise h.decode_revert(exc) from None  # type: ignore[arg-type]
    assert (info.value.name, info.value.args_) == ("NotEnoughEligible", (2, 3))
    with pytest.raises(Reverted) as info:
        try:
            contract_draw(h, seed, [5, 0, 0], 2)
        except Exception as exc:
            raise h.decode_revert(exc) from None  # type: ignore[arg-type]
    assert info.value.name == "NotEnoughEligible"


def test_elected_roles_are_distinct_eligible_and_match_the_mirror(
    deploy: Callable[..., Harness],
) -> None:
    # 10 wallets: two below minStake (100), one never staked
    stakes = [200, 50, 300, 1000, 0, 150, 99, 400, 120, 500]
    t = deploy(n=10, stake=[s * ETHER for s in stakes], totalRounds=20)
    wallets = [v.wallet for v in t.task.functions.participants(0, 100).call()]
    eligible = {w for w, s in zip(wallets, stakes, strict=True) if s >= 100}
    params = t.params()
    seen: Counter[str] = Counter()
    for _ in range(12):
        r = t.open_round()
        snap = t.round(r)
        assert set(snap.eligible) == eligible
        assert snap.eligible == [w for w in wallets if w in eligible]  # registration order
        t.elect(r)
        rv = t.round(r)
        roles = rv.proposers + rv.voters
        assert len(set(roles)) == len(roles) == 6
        assert set(roles) <= eligible
        assert (rv.proposers, rv.voters) == elect(rv.seed, snap.eligible, snap.eligibleStakes, 3, 3)
        seen.update(roles)
        # nobody acts: the round ends by its deadlines (idle slashes keep everyone >= 100 here
        # except the 120-stake wallet after two idle rounds, which the snapshot check tracks)
        t.advance(params.trainSeconds + params.commitSeconds)
        t.finalize(r)
        eligible = {
            v.wallet for v in t.task.functions.participants(0, 100).call() if v.stake >= 100 * ETHER
        }
    assert set(seen) <= {w for w, s in zip(wallets, stakes, strict=True) if s >= 100}
