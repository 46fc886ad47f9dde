"""Transactions: fee modes, and a tx that reverts only when mined still gets its sentence."""

from __future__ import annotations

import threading
import time

import pytest
from eth_account import Account
from hexbytes import HexBytes

from flocknode.chain.anvil import AnvilChain, AnvilOptions, rpc_request, run_anvil
from flocknode.chain.client import TxResult
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import ContractRevert
from tests.integration.chain.chain_helpers import FAST_RETRY, connect, deploy, mine

pytestmark = pytest.mark.integration


def test_dynamic_fees_on_a_london_chain(chain: AnvilChain) -> None:
    conn = connect(chain, 5)
    to = Account.create().address
    r = conn.send_eth(to, 12_345)
    assert conn.eth_balance(to) == 12_345
    tx = conn.rpc.w3.eth.get_transaction(HexBytes(r.tx_hash))
    base = int(conn.rpc.get_block(r.block_number)["baseFeePerGas"])
    assert tx["type"] == 2 and int(tx["maxFeePerGas"]) >= base


def test_legacy_gas_price_on_a_pre_london_chain() -> None:
    with run_anvil(AnvilOptions(extra_args=("--hardfork", "berlin"))) as old:
        account = Account.from_key(old.private_keys[0])
        conn = ChainConnection(old.rpc_url, account, retry=FAST_RETRY)
        to = Account.create().address
        r = conn.send_eth(to, 777)
        tx = conn.rpc.w3.eth.get_transaction(HexBytes(r.tx_hash))
        assert tx["type"] == 0 and int(tx["gasPrice"]) > 0
        assert conn.eth_balance(to) == 777


def test_a_revert_that_happens_only_in_the_block_is_explained(chain: AnvilChain) -> None:
    """Two nodes elect the same round; both estimates pass; the second loses in the block."""
    task = deploy(chain)
    members = [task.join(i, 500) for i in range(1, 7)]
    task.owner.open_round()
    seed_block = task.owner.get_round(1).seed_block
    mine(chain, seed_block + 2 - task.owner.conn.rpc.block_number())
    results: dict[int, TxResult | Exception] = {}

    def elect(i: int) -> None:
        try:
            results[i] = members[i].client.elect_roles(1)
        except Exception as exc:
            results[i] = exc

    rpc_request(chain.rpc_url, "evm_setAutomine", [False])
    threads = [threading.Thread(target=elect, args=(i,)) for i in (0, 1)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = rpc_request(chain.rpc_url, "txpool_status")
            assert isinstance(status, dict)
            if int(status["pending"], 16) == 2:
                break
            time.sleep(0.02)
        rpc_request(chain.rpc_url, "evm_mine")
        for t in threads:
            t.join(timeout=10)
    finally:
        rpc_request(chain.rpc_url, "evm_setAutomine", [True])
    won = [r for r in results.values() if isinstance(r, TxResult)]
    lost = [r for r in results.values() if isinstance(r, ContractRevert)]
    assert len(won) == 1 and len(lost) == 1, results
    assert str(lost[0]) == "the roles of round 1 are already elected"
