"""From a node config to a connected task client: the one path every command,
``doctor``, the cluster and the node itself take.

    config -> wallet (``load_wallet``) -> ChainConnection -> TaskClient (checked)

``connect`` does the whole path; ``chain_connection`` and ``task_client`` are
its two steps, for a caller that reports each one separately (``doctor``) or
has no task yet (``task create``).
"""

from __future__ import annotations

from typing import Literal

from eth_account.signers.local import LocalAccount

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.rpc import RetryPolicy
from flocknode.config import NodeConfig
from flocknode.errors import ConfigError
from flocknode.identity.wallet import load_wallet
from flocknode.rounds.metrics import MeteredConnection, TxStats

# ``account`` default: the wallet the config names (keystore, or the raw key on a local chain).
FROM_CONFIG: Literal["config"] = "config"


def chain_connection(
    cfg: NodeConfig,
    account: LocalAccount | Literal["config"] | None = FROM_CONFIG,
    *,
    retry: RetryPolicy | None = None,
    tx_stats: TxStats | None = None,
) -> ChainConnection:
    """A connection to the config's chain that checks the chain id on first use.

    ``account``: who signs (the config's wallet by default, None for reads only).
    ``tx_stats``: time and count every transaction (the running node).
    """
    signer = load_wallet(cfg) if isinstance(account, str) else account
    if tx_stats is not None:
        return MeteredConnection(
            cfg.chain.rpc_url,
            signer,
            expected_chain_id=cfg.chain.chain_id,
            retry=retry,
            confirmations=cfg.chain.confirmations,
            tx_stats=tx_stats,
        )
    return ChainConnection(
        cfg.chain.rpc_url,
        signer,
        expected_chain_id=cfg.chain.chain_id,
        retry=retry,
        confirmations=cfg.chain.confirmations,
    )


def _task_address(cfg: NodeConfig) -> str:
    if not cfg.chain.task:
        raise ConfigError(cfg.source, "chain.task", "no task address set")
    return cfg.chain.task


def task_client(cfg: NodeConfig, conn: ChainConnection) -> TaskClient:
    """The client of the config's task, checked: the chain id matches and the task exists."""
    client = TaskClient(conn, _task_address(cfg))
    client.check()
    return client


def connect(
    cfg: NodeConfig,
    account: LocalAccount | Literal["config"] | None = FROM_CONFIG,
    *,
    retry: RetryPolicy | None = None,
    tx_stats: TxStats | None = None,
) -> TaskClient:
    """The checked task client for a node config (see ``chain_connection``)."""
    _task_address(cfg)  # a config without a task fails before the wallet is unlocked
    return task_client(cfg, chain_connection(cfg, account, retry=retry, tx_stats=tx_stats))
