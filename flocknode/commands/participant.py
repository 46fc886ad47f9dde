"""Wallet actions of a node's participant: register, stake, unstake, withdraw, claim."""

from __future__ import annotations

from flocknode.chain.client import TaskClient, TxResult
from flocknode.commands.common import format_amount, progress, report_tx
from flocknode.config import NodeConfig
from flocknode.errors import FlockError
from flocknode.identity import DataDir, load_box_key, load_peer_key


def register(client: TaskClient, cfg: NodeConfig) -> TxResult:
    layout = DataDir(cfg.data_path)
    peer = load_peer_key(layout.peer_key)
    box = load_box_key(layout.box_key)
    addrs = cfg.announce_addrs()
    progress(f"registering wallet {client.wallet} as peer {peer.peer_id} at {', '.join(addrs)}")
    res = client.register_node(peer, box, addrs)
    report_tx("register", res)
    return res


def stake(client: TaskClient, amount: int) -> TxResult:
    have = client.token().balance_of(client.wallet)
    if have < amount:
        raise FlockError(
            f"wallet {client.wallet} holds {format_amount(have)} tokens; "
            f"staking {format_amount(amount)} needs more"
        )
    progress(f"staking {format_amount(amount)} tokens from {client.wallet} ...")
    res = client.stake(amount)
    report_tx("stake", res)
    progress("  the stake counts from the next round that opens")
    return res


def unstake(client: TaskClient, amount: int) -> TxResult:
    progress(f"requesting to unstake {format_amount(amount)} tokens ...")
    res = client.request_unstake(amount)
    report_tx("requestUnstake", res)
    progress("  withdraw once every round this wallet was elected in is finalized")
    return res


def withdraw(client: TaskClient) -> TxResult:
    progress(f"withdrawing unstaked tokens to {client.wallet} ...")
    res = client.withdraw()
    report_tx("withdraw", res)
    return res


def claim(client: TaskClient) -> TxResult:
    progress(f"claiming rewards to {client.wallet} ...")
    res = client.claim_rewards()
    report_tx("claimRewards", res)
    return res
