"""Deploy FlockToken and FlockTask (used by ``flocknode task create`` and tests)."""

from __future__ import annotations

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import TransactionFailed
from flocknode.chain.token import TokenClient
from flocknode.chain.txsend import Receipt
from flocknode.chain.types import TaskParams


def deploy_token(conn: ChainConnection) -> TokenClient:
    """Deploy a FlockToken from the connection's wallet (which becomes its minter)."""
    r = conn.transact(conn.factory("FlockToken").constructor(), "deploy FlockToken")
    return TokenClient(conn, _created(r, "FlockToken"))


def deploy_task(conn: ChainConnection, params: TaskParams) -> TaskClient:
    """Deploy a FlockTask; invalid parameters raise a sentence naming the field."""
    ctor = conn.factory("FlockTask").constructor(params.to_abi())
    r = conn.transact(ctor, "deploy FlockTask")
    return TaskClient(conn, _created(r, "FlockTask"))


def _created(r: Receipt, name: str) -> str:
    if not r.contract_address:
        raise TransactionFailed(f"deploying {name} (tx 0x{r.tx_hash.hex()}) created no contract")
    return r.contract_address
