"""The draw is stake-proportional, never repeats a wallet, never picks an outsider.

Statistics run on the Python mirror (the integration tests prove it equal to
the contract) with a fixed list of seeds, so every run sees the same numbers:
the bounds are chi-square critical values at p = 0.001 and a check shows they
reject a draw that ignores stake.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

from eth_utils import keccak
from scipy.stats import chi2

from flocknode.chain.draw import draw_seats, elect

ALPHA = 0.001


def _seeds(tag: bytes, n: int) -> list[bytes]:
    return [keccak(tag + i.to_bytes(4, "big")) for i in range(n)]


def _chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def _seat_distributions(stakes: list[int], seats: int) -> list[list[Fraction]]:
    """Exact P(seat k = participant j) of weighted sampling without replacement."""
    n = len(stakes)
    dist = [[Fraction(0)] * n for _ in range(seats)]
    for order in itertools.permutations(range(n), seats):
        p = Fraction(1)
        left = sum(stakes)
        for j in order:
            p *= Fraction(stakes[j], left)
            left -= stakes[j]
        for k, j in enumerate(order):
            dist[k][j] += p
    return dist


STAKES = [1, 1, 2, 3, 5, 8, 13, 40, 100, 27]  # tiny, equal and large stakes


def test_first_seat_frequency_is_proportional_to_stake() -> None:
    draws = 20_000
    counts = [0] * len(STAKES)
    for seed in _seeds(b"first-seat", draws):
        counts[draw_seats(seed, STAKES, 1)[0]] += 1
    total = sum(STAKES)
    expected = [draws * s / total for s in STAKES]
    stat = _chi_square(counts, expected)
    assert stat < chi2.ppf(1 - ALPHA, len(STAKES) - 1), (stat, counts)


def test_the_bound_rejects_a_draw_that_ignores_stake() -> None:
    """The same test on a stake-blind draw must fail, or the bound has no teeth."""
    draws = 20_000
    counts = [0] * len(STAKES)
    for seed in _seeds(b"first-seat", draws):
        counts[draw_seats(seed, [1] * len(STAKES), 1)[0]] += 1
    total = sum(STAKES)
    expected = [draws * s / total for s in STAKES]
    assert _chi_square(counts, expected) > chi2.ppf(1 - ALPHA, len(STAKES) - 1)


def test_every_seat_follows_weighted_sampling_without_replacement() -> None:
    stakes = [1, 1, 2, 5, 10, 20]
    seats = 3
    draws = 8_000
    exact = _seat_distributions(stakes, seats)
    counts = [[0] * len(stakes) for _ in range(seats)]
    for seed in _seeds(b"all-seats", draws):
        for k, j in enumerate(draw_seats(seed, stakes, seats)):
            counts[k][j] += 1
    for k in range(seats):
        expected = [draws * float(p) for p in exact[k]]
        stat = _chi_square(counts[k], expected)
        assert stat < chi2.ppf(1 - ALPHA, len(stakes) - 1), (k, stat, counts[k])


def test_never_twice_never_an_outsider_never_a_zero_stake() -> None:
    population = [f"0x{i:040x}" for i in range(1, 41)]
    eligible = population[::2]  # the other half is not in the snapshot
    stakes = [0 if i % 5 == 0 else (i * 7919) % 1000 + 1 for i in range(len(eligible))]
    zero = {eligible[i].lower() for i, s in enumerate(stakes) if s == 0}
    allowed = {a.lower() for a in eligible} - zero
    seen: set[str] = set()
    for seed in _seeds(b"membership", 1_500):
        proposers, voters = elect(seed, eligible, stakes, 5, 7)
        picked = [a.lower() for a in proposers + voters]
        assert len(picked) == 12
        assert len(set(picked)) == 12
        assert set(picked) <= allowed
        seen.update(picked)
    # Every staked eligible wallet gets a seat at some point.
    assert seen == allowed
