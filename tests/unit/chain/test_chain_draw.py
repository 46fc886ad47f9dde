"""Pure properties of the role-draw mirror (the contract comparison is in integration)."""

from __future__ import annotations

import random

import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from eth_utils import is_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from flocknode.chain.draw import DrawError, compute_seed, draw_seats, elect, seat_value


def _keccak(data: bytes) -> bytes:
    """An independent keccak256 (pycryptodome), not the one draw.py uses."""
    return pycryptodome_keccak.new(digest_bits=256, data=data).digest()


def test_compute_seed_is_keccak_of_the_abi_words() -> None:
    blockhash = bytes(range(32))
    task = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    words = (
        blockhash
        + (123456789).to_bytes(32, "big")
        + (31337).to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(task[2:])
        + (7).to_bytes(32, "big")
    )
    assert compute_seed(blockhash, 123456789, 31337, task, 7) == _keccak(words)


def test_compute_seed_depends_on_every_input() -> None:
    task = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    base = compute_seed(b"\x01" * 32, 5, 31337, task, 1)
    assert compute_seed(b"\x02" * 32, 5, 31337, task, 1) != base
    assert compute_seed(b"\x01" * 32, 6, 31337, task, 1) != base
    assert compute_seed(b"\x01" * 32, 5, 1, task, 1) != base
    assert compute_seed(b"\x01" * 32, 5, 31337, "0x" + "11" * 20, 1) != base
    assert compute_seed(b"\x01" * 32, 5, 31337, task, 2) != base


def test_seat_value_is_keccak_of_seed_and_index() -> None:
    seed = bytes(range(32, 64))
    for i in (0, 1, 19, 2**64):
        expect = int.from_bytes(_keccak(seed + i.to_bytes(32, "big")), "big")
        assert seat_value(seed, i) == expect


def test_equal_unit_stakes_pick_remaining_at_x() -> None:
    """With stakes all 1 the walk lands on position x of the remaining list."""
    seed = _keccak(b"equal stakes")
    n, seats = 13, 9
    remaining = list(range(n))
    expect = []
    for i in range(seats):
        pos = seat_value(seed, i) % len(remaining)
        expect.append(remaining.pop(pos))
    assert draw_seats(seed, [1] * n, seats) == expect


def test_one_heavy_participant_takes_the_first_seat() -> None:
    # Everyone else has stake 0: only index 2 can hold seat 0.
    assert draw_seats(_keccak(b"x"), [0, 0, 5, 0], 1) == [2]


def test_zero_stake_left_reverts_like_the_contract() -> None:
    with pytest.raises(DrawError):
        draw_seats(_keccak(b"x"), [0, 0, 5, 0], 2)
    with pytest.raises(DrawError):
        draw_seats(_keccak(b"x"), [1, 2], 3)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        draw_seats(b"short", [1], 1)
    with pytest.raises(ValueError):
        draw_seats(bytes(32), [-1, 2], 1)
    with pytest.raises(ValueError):
        compute_seed(b"short", 1, 1, "0x" + "00" * 20, 1)
    with pytest.raises(ValueError):
        elect(bytes(32), ["0x" + "11" * 20], [1, 2], 1, 0)


def test_zero_seats_is_empty() -> None:
    assert draw_seats(bytes(32), [], 0) == []


@settings(max_examples=200, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    stakes=st.lists(st.integers(min_value=1, max_value=2**96), min_size=1, max_size=40),
    data=st.data(),
)
def test_draw_is_a_deterministic_set_of_distinct_indices(
    seed: bytes, stakes: list[int], data: st.DataObject
) -> None:
    seats = data.draw(st.integers(min_value=0, max_value=len(stakes)))
    got = draw_seats(seed, stakes, seats)
    assert len(got) == seats
    assert len(set(got)) == seats
    assert all(0 <= i < len(stakes) for i in got)
    assert draw_seats(seed, stakes, seats) == got
    # A prefix of seats is the same draw: seat i never depends on later seats.
    assert draw_seats(seed, stakes, max(0, seats - 1)) == got[: max(0, seats - 1)]


def test_elect_splits_seats_into_proposers_then_voters() -> None:
    rng = random.Random(5)
    wallets = [f"0x{rng.getrandbits(160):040x}" for _ in range(12)]
    stakes = [rng.randint(1, 1000) for _ in wallets]
    seed = _keccak(b"elect")
    proposers, voters = elect(seed, wallets, stakes, 3, 4)
    picks = draw_seats(seed, stakes, 7)
    lower = [w.lower() for w in wallets]
    assert [p.lower() for p in proposers] == [lower[i] for i in picks[:3]]
    assert [v.lower() for v in voters] == [lower[i] for i in picks[3:]]
    assert all(is_checksum_address(a) for a in proposers + voters)
