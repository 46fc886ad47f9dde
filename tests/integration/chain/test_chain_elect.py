"""electRoles lands in the first block the protocol allows (seedBlock + 2).

The keeper sends it when the latest block is seedBlock + 1; its gas is
estimated against the pending block, where it is valid (against "latest" it
reverted SeedNotReady and the election slipped one block).
"""

from __future__ import annotations

import pytest

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.errors import ContractRevert
from flocknode.chain.types import Phase
from tests.integration.chain.chain_helpers import deploy, mine

pytestmark = pytest.mark.integration


def test_elect_is_mined_in_the_first_allowed_block(chain: AnvilChain) -> None:
    task = deploy(chain)
    members = [task.join(i, 500) for i in range(1, 7)]
    owner = task.owner
    owner.open_round()
    seed_block = owner.get_round(1).seed_block
    mine(chain, max(0, seed_block - owner.conn.rpc.block_number()))
    assert owner.conn.rpc.block_number() == seed_block
    with pytest.raises(ContractRevert) as err:  # two blocks early: still refused
        members[0].client.elect_roles(1)
    assert err.value.name == "SeedNotReady"
    assert str(err.value) == f"the seed for round 1 is not ready until block {seed_block + 2}"
    assert owner.phase(1) is Phase.SEEDING

    mine(chain, 1)  # latest = seedBlock + 1: the next block is the first allowed one
    result = members[1].client.elect_roles(1)
    assert result.block_number == seed_block + 2
    view = owner.get_round(1)
    assert view.phase is Phase.TRAIN and view.elected_at > 0
