"""The vote commitment is computed by the node, never by the RPC endpoint.

An endpoint that computed it would learn the vote and its salt before the
reveal, and could answer a wrong commitment (the voter is slashed at reveal).
"""

from __future__ import annotations

import random

import pytest
import trio
from eth_utils import keccak, to_checksum_address

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import AsyncTaskClient, TaskClient
from flocknode.chain.types import Phase
from tests.integration.chain.chain_helpers import connect, deploy, mine
from tests.integration.chain.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def test_finding8_local_commitment_equals_the_contracts_view(chain: AnvilChain) -> None:
    task = deploy(chain)
    client = task.owner
    view = client._c.functions.voteCommitment  # the contract's own computation
    rng = random.Random(8)
    edge = [0, 1, 2**256 - 1]
    for i in range(60):
        args = (
            rng.choice([1, 2, rng.randrange(2**256)]),
            to_checksum_address(rng.randbytes(20)),
            rng.randbytes(32),
            rng.choice([*edge, rng.randrange(2**256)]),
            rng.choice([*edge, rng.randrange(2**256)]),
            rng.choice([*edge, rng.randrange(2**256)]),
            rng.choice([-(2**63), -1, 0, 2**63 - 1, rng.randrange(-(2**63), 2**63)]),
            rng.randbytes(32),
        )
        want = bytes(view(*args).call())
        assert client.vote_commitment(*args) == want, (i, args)
    # the voter passes a lower-case wallet as often as a checksummed one
    args = (3, client.wallet.lower(), b"\x01" * 32, 7, 0, 0, -5, b"\x02" * 32)
    assert client.vote_commitment(*args) == bytes(view(3, client.wallet, *args[2:]).call())


def test_finding8_salt_never_sent_to_rpc(chain: AnvilChain, proxy: TcpProxy) -> None:
    """A voter's commit and reveal through a recording proxy: the salt (and the
    commitment's preimage) is in no request before the reveal transaction."""
    task = deploy(chain)
    members = [task.join(i, 1000) for i in range(1, 7)]
    owner = task.owner
    owner.open_round()
    view = owner.get_round(1)
    mine(chain, max(0, view.seed_block + 2 - owner.conn.rpc.block_number()))
    owner.elect_roles(1)
    view = owner.get_round(1)
    for seat, w in enumerate(view.proposers):
        m = next(m for m in members if m.wallet == w)
        m.client.submit_update(1, keccak(b"u%d" % seat), b"\xb0" * 32, 100)
    assert owner.phase(1) is Phase.COMMIT

    voter_wallet = view.voters[0]
    index = next(m.index for m in members if m.wallet == voter_wallet)
    voter = AsyncTaskClient(TaskClient(connect(chain, index, url=proxy.url), task.address))
    salt = bytes(random.Random(88).randbytes(32))
    agg = keccak(b"aggregate")

    async def commit() -> None:  # what rounds/voter.py does to commit
        c = await voter.vote_commitment(1, voter_wallet, agg, 0b111, 0, 0, 42, salt)
        await voter.commit_vote(1, c)

    trio.run(commit)
    before_reveal = list(proxy.faults.seen)
    assert any(b"eth_sendRawTransaction" in r for r in before_reveal)  # the commit went out
    for request in before_reveal:
        body = request.lower()
        assert salt.hex().encode() not in body and salt not in request
    assert owner.get_round(1).votes[0].committed

    for w in view.voters[1:]:  # the others commit too, so the reveal phase begins
        m = next(m for m in members if m.wallet == w)
        m.client.commit_vote(1, m.client.vote_commitment(1, w, agg, 0b111, 0, 0, 1, b"\x01" * 32))
    assert owner.phase(1) is Phase.REVEAL

    async def reveal() -> None:
        await voter.reveal_vote(1, agg, 0b111, 0, 0, 42, salt)

    trio.run(reveal)
    assert owner.get_round(1).votes[0].revealed  # the local commitment was the right one
    # the recorder does see the salt once it is meant to be public
    assert any(salt.hex().encode() in r.lower() for r in proxy.faults.seen[len(before_reveal) :])
