"""The role draw of docs/protocol.md, step 2, mirrored bit for bit from ``FlockTask``.

``electRoles`` fixes ``seed = keccak256(abi.encode(blockhash(seedBlock),
block.prevrandao, block.chainid, address(this), round))`` and then draws seats
from the eligibility snapshot (registration order, active stakes):

    for seat i = 0 .. P+V-1:
        x = uint256(keccak256(abi.encode(seed, i))) % W   # W = remaining stake
        take the first participant whose running stake sum exceeds x
        remove it (the rest keep their order)

The first P seats are proposers, the rest voters. Everything here is pure: the
same inputs give the contract's ``drawSeats`` result (checked against the
contract over hundreds of random tables in tests/integration/chain).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode
from eth_utils import keccak, to_canonical_address, to_checksum_address

UINT256_MAX = 2**256 - 1


class DrawError(ValueError):
    """Inputs for which the contract's draw reverts (too few participants, no stake)."""


def compute_seed(blockhash: bytes, prevrandao: int, chain_id: int, task: str, round: int) -> bytes:
    """The round seed exactly as ``electRoles`` computes it (32 bytes)."""
    if len(blockhash) != 32:
        raise ValueError("blockhash must be 32 bytes")
    return keccak(
        encode(
            ["bytes32", "uint256", "uint256", "address", "uint256"],
            [bytes(blockhash), prevrandao, chain_id, to_canonical_address(task), round],
        )
    )


def seat_value(seed: bytes, seat: int) -> int:
    """``uint256(keccak256(abi.encode(seed, seat)))``: the random number of one seat."""
    return int.from_bytes(keccak(encode(["bytes32", "uint256"], [seed, seat])), "big")


def draw_seats(seed: bytes, stakes: Sequence[int], seats: int) -> list[int]:
    """Indices into ``stakes`` of the drawn seats, in seat order (no index twice).

    Raises DrawError where the contract reverts: more seats than entries, or no
    stake left to draw from.
    """
    if len(seed) != 32:
        raise ValueError("seed must be 32 bytes")
    if seats < 0:
        raise ValueError("seats must be >= 0")
    if any(s < 0 or s > UINT256_MAX for s in stakes):
        raise ValueError("stakes must be uint256")
    if seats > len(stakes):
        raise DrawError(f"cannot draw {seats} seats from {len(stakes)} participants")
    remaining = list(range(len(stakes)))
    total = sum(stakes)
    if total > UINT256_MAX:
        raise DrawError("total stake overflows uint256")
    chosen: list[int] = []
    for seat in range(seats):
        if total == 0:
            raise DrawError(f"no stake left to draw seat {seat}")
        x = seat_value(seed, seat) % total
        running = 0
        for pos, idx in enumerate(remaining):
            running += stakes[idx]
            if running > x:
                chosen.append(idx)
                total -= stakes[idx]
                del remaining[pos]
                break
        else:  # pragma: no cover - unreachable: x < total = sum of remaining
            raise AssertionError("draw walked past the end")
    return chosen


def elect(
    seed: bytes,
    eligible: Sequence[str],
    stakes: Sequence[int],
    proposers: int,
    voters: int,
) -> tuple[list[str], list[str]]:
    """The round's (proposers, voters) as checksum addresses, in seat order."""
    if len(eligible) != len(stakes):
        raise ValueError("eligible and stakes differ in length")
    if proposers < 0 or voters < 0:
        raise ValueError("role counts must be >= 0")
    picks = draw_seats(seed, stakes, proposers + voters)
    wallets: list[str] = [to_checksum_address(eligible[i]) for i in picks]
    return wallets[:proposers], wallets[proposers:]
