"""Helpers for the chain-client tests: deploy and join through the client itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_account import Account

from flocknode.chain.anvil import AnvilChain, rpc_request
from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.deploy import deploy_task, deploy_token
from flocknode.chain.rpc import RetryPolicy
from flocknode.chain.token import TokenClient
from flocknode.chain.types import TaskParams
from flocknode.identity import BoxKey, PeerKey

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.02, max_delay=0.2, request_timeout=5.0)


def connect(chain: AnvilChain, index: int, url: str | None = None, **kw: Any) -> ChainConnection:
    """A connection with dev account ``index`` as the wallet."""
    account = Account.from_key(chain.private_keys[index])
    kw.setdefault("retry", FAST_RETRY)
    return ChainConnection(url or chain.rpc_url, account, expected_chain_id=chain.chain_id, **kw)


def mine(chain: AnvilChain, blocks: int = 1) -> None:
    rpc_request(chain.rpc_url, "anvil_mine", [hex(blocks)])


def advance(chain: AnvilChain, seconds: int) -> None:
    rpc_request(chain.rpc_url, "evm_increaseTime", [seconds])
    mine(chain)


def block_number(chain: AnvilChain) -> int:
    return int(str(rpc_request(chain.rpc_url, "eth_blockNumber")), 16)


@dataclass
class Member:
    index: int
    client: TaskClient
    peer_key: PeerKey = field(repr=False)
    box_key: BoxKey = field(repr=False)

    @property
    def wallet(self) -> str:
        return self.client.wallet


@dataclass
class Deployed:
    chain: AnvilChain
    owner: TaskClient  # dev account 0: deployer and token minter
    token: TokenClient
    params: TaskParams

    @property
    def address(self) -> str:
        return self.owner.address

    def client(self, index: int) -> TaskClient:
        return TaskClient(connect(self.chain, index), self.address)

    def join(self, index: int, stake: int, multiaddr: str | None = None) -> Member:
        """Mint, register with fresh keys and stake for dev account ``index``."""
        client = self.client(index)
        self.token.mint(client.wallet, stake)
        peer, box = PeerKey.generate(), BoxKey.generate()
        client.register_node(peer, box, [multiaddr or f"/ip4/127.0.0.1/tcp/{4000 + index}"])
        if stake:
            client.stake(stake)
        return Member(index, client, peer, box)


def deploy(chain: AnvilChain, **overrides: Any) -> Deployed:
    conn = connect(chain, 0)
    token = deploy_token(conn)
    values: dict[str, Any] = {
        "token": token.address,
        "model_spec_hash": b"\x11" * 32,
        "config_hash": b"\x22" * 32,
        "initial_model_hash": b"\x33" * 32,
        "total_rounds": 20,
        "min_stake": 100,
        "train_seconds": 60,
        "commit_seconds": 20,
        "reveal_seconds": 20,
        "reward_per_round": 1000,
    }
    values.update(overrides)
    params = TaskParams(**values)
    task = deploy_task(conn, params)
    return Deployed(chain, task, token, params)
