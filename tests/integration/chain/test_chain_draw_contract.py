"""The Python draw equals the contract's: 240 random tables and full elections."""

from __future__ import annotations

import random

import pytest

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import opened_round
from flocknode.chain.draw import DrawError, compute_seed, draw_seats, elect
from flocknode.chain.errors import ContractRevert
from flocknode.chain.events import RolesElected, of_type
from tests.integration.chain.chain_helpers import Deployed, advance, deploy, mine

pytestmark = pytest.mark.integration

TABLES = 240


@pytest.fixture(scope="module")
def task(chain: AnvilChain) -> Deployed:
    return deploy(chain, proposers_per_round=3, voters_per_round=4, min_stake=100)


def _random_table(rng: random.Random) -> tuple[list[int], int]:
    n = rng.randint(1, 100)
    kind = rng.choice(["equal", "tiny", "mixed", "huge", "zeros"])
    if kind == "equal":
        stakes = [rng.choice([1, 7, 10**18])] * n
    elif kind == "tiny":
        stakes = [rng.randint(1, 3) for _ in range(n)]
    elif kind == "mixed":
        pick = [1, 2, rng.randint(1, 10**6), rng.randint(1, 10**24)]
        stakes = [rng.choice(pick) for _ in range(n)]
    elif kind == "huge":
        stakes = [rng.randint(1, 2**200) for _ in range(n)]
    else:  # some zero stakes: never drawn, and too few staked entries must revert alike
        stakes = [rng.choice([0, 0, rng.randint(1, 1000)]) for _ in range(n)]
    seats = rng.randint(0, min(n, 20))
    return stakes, seats


def test_draw_equals_contract_on_random_tables(task: Deployed) -> None:
    rng = random.Random(0xF10C)
    compared = reverted = 0
    for _ in range(TABLES):
        stakes, seats = _random_table(rng)
        seed = rng.randbytes(32)
        try:
            expect: list[int] | None = draw_seats(seed, stakes, seats)
        except DrawError:
            expect = None
        if expect is None:
            with pytest.raises(ContractRevert) as err:
                task.owner.draw_seats(seed, stakes, seats)
            assert err.value.name == "NotEnoughEligible"
            reverted += 1
        else:
            assert task.owner.draw_seats(seed, stakes, seats) == expect, (seed.hex(), stakes, seats)
            compared += 1
    assert compared >= 200
    assert reverted >= 1  # the zero-stake tables also exercise the revert path


def test_full_elections_match_the_mirror(task: Deployed) -> None:
    rng = random.Random(7)
    members = [task.join(i, rng.choice([100, 100, 101, 250, 1000, 5000])) for i in range(1, 13)]
    rpc = task.owner.conn.rpc
    seen: set[str] = set()
    for _ in range(4):
        opened = task.owner.open_round()
        r = opened_round(opened)
        assert r is not None
        view = task.owner.get_round(r)
        mine(task.chain, view.seed_block + 2 - rpc.block_number())
        elected = task.owner.elect_roles(r)
        view = task.owner.get_round(r)

        # The seed from the block data: blockhash(seedBlock) and prevrandao (= mixHash).
        seed_block = rpc.get_block(view.seed_block)
        elect_block = rpc.get_block(elected.block_number)
        prevrandao = int.from_bytes(bytes(elect_block["mixHash"]), "big")
        blockhash = bytes(seed_block["hash"])
        seed = compute_seed(blockhash, prevrandao, task.chain.chain_id, task.address, r)
        assert seed == view.seed

        proposers, voters = elect(view.seed, view.eligible, view.eligible_stakes, 3, 4)
        assert (tuple(proposers), tuple(voters)) == (view.proposers, view.voters)
        (event,) = of_type(elected.events, RolesElected)
        assert event.seed == view.seed
        assert (event.proposers, event.voters) == (view.proposers, view.voters)
        assert set(view.proposers + view.voters) <= set(view.eligible)
        assert len(set(view.proposers + view.voters)) == 7
        seen.update(view.proposers + view.voters)

        # Change stakes for the next round, then let this round run out.
        m = members[rng.randrange(len(members))]
        task.token.mint(m.wallet, 700)
        m.client.stake(700)
        advance(task.chain, 60 + 20 + 20 + 1)
    assert len(seen) >= 8
