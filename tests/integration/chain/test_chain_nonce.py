"""One wallet, many trio tasks: consecutive nonces, and a resync when the chain disagrees."""

from __future__ import annotations

import pytest
import trio
from hexbytes import HexBytes

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import AsyncTaskClient, TaskClient, TxResult
from tests.integration.chain.chain_helpers import Deployed, connect, deploy

pytestmark = pytest.mark.integration

TASKS, SENDS = 8, 5


@pytest.fixture(scope="module")
def task(chain: AnvilChain) -> Deployed:
    return deploy(chain)


async def test_concurrent_sends_use_consecutive_nonces(task: Deployed) -> None:
    member = task.join(2, 200)
    sync = member.client
    w3 = sync.conn.rpc.w3
    start = sync.conn.rpc.transaction_count(sync.wallet)
    refreshes = sync.conn.sender.nonce_refreshes if sync.conn.sender else -1
    client = AsyncTaskClient(sync)
    results: list[TxResult] = []

    async def sender(k: int) -> None:
        for j in range(SENDS):
            port = 10_000 + k * SENDS + j
            results.append(await client.update_multiaddrs([f"/ip4/127.0.0.1/tcp/{port}"]))

    async with trio.open_nursery() as nursery:
        for k in range(TASKS):
            nursery.start_soon(sender, k)

    assert len(results) == TASKS * SENDS
    nonces = sorted(w3.eth.get_transaction(HexBytes(r.tx_hash))["nonce"] for r in results)
    assert nonces == list(range(start, start + TASKS * SENDS))
    assert sync.conn.rpc.transaction_count(sync.wallet) == start + TASKS * SENDS
    assert sync.conn.sender is not None
    assert sync.conn.sender.nonce_refreshes == refreshes  # never had to ask the chain again


def test_nonce_too_low_resyncs_from_the_chain(task: Deployed, chain: AnvilChain) -> None:
    """Two clients share one key (e.g. a CLI command beside the daemon)."""
    task.join(3, 200)
    a = TaskClient(connect(chain, 3), task.address)
    b = TaskClient(connect(chain, 3), task.address)
    b.update_multiaddrs(["/ip4/127.0.0.1/tcp/1"])  # b now believes the next nonce is n+1
    a.update_multiaddrs(["/ip4/127.0.0.1/tcp/2"])  # a takes n+1 ...
    a.update_multiaddrs(["/ip4/127.0.0.1/tcp/3"])  # ... and n+2
    assert b.conn.sender is not None
    before = b.conn.sender.nonce_refreshes
    b.update_multiaddrs(["/ip4/127.0.0.1/tcp/4"])  # n+1 is "nonce too low": resync, n+3
    assert b.conn.sender.nonce_refreshes == before + 1
    assert b.participant().multiaddrs == (b"/ip4/127.0.0.1/tcp/4",)
