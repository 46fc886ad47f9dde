"""``flocknode status``: this node's standing in its task, read from the chain."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from flocknode.chain.client import TaskClient
from flocknode.chain.errors import ContractRevert
from flocknode.chain.registry import multiaddr_text
from flocknode.commands.common import format_amount
from flocknode.status import NodeStatus, read_status_file

RUNNING_STATUS_AGE = 15.0  # a status file older than this: the node is not running


@dataclass(frozen=True)
class Registration:
    """The wallet's participant record (token amounts in base units)."""

    peer_id: str
    multiaddrs: tuple[str, ...]
    stake: int
    pending_unstake: int
    rewards: int
    slashed: int
    eligible_now: bool
    last_elected_round: int
    min_stake: int  # the task's


@dataclass(frozen=True)
class Standing:
    """A wallet's standing in its task, as the chain says now."""

    task: str
    chain_id: int
    block: int
    wallet: str
    round: int
    total_rounds: int
    phase: str
    role: str | None  # "voter (seat 2)", or None when not elected this round
    global_model_hash: str
    global_model_round: int
    reward_pool: int
    participants: int
    eligible: int
    registration: Registration | None  # None: the wallet is not registered

    def to_json(self, node: NodeStatus | None) -> dict[str, Any]:
        """The ``--json`` document: the standing, the record's fields when
        registered, and the running node's snapshot (null when not running)."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "registration"
        }
        out["registered"] = self.registration is not None
        if self.registration is not None:
            out.update(asdict(self.registration))
            out["multiaddrs"] = list(self.registration.multiaddrs)
        out["node"] = node.to_json() if node is not None else None
        return out


def collect_status(client: TaskClient, wallet: str) -> Standing:
    params = client.params()
    rnd = client.current_round()
    phase, role_text = "none", None
    if rnd:
        view = client.get_round(rnd)
        phase = view.phase.label
        role = view.role_of(wallet)
        role_text = f"{role[0]} (seat {role[1]})" if role else None
    try:
        p = client.participant(wallet)
    except ContractRevert:
        registration = None
    else:
        registration = Registration(
            peer_id=_peer_id_text(p.peer_id),
            multiaddrs=tuple(multiaddr_text(a) for a in p.multiaddrs),
            stake=p.stake,
            pending_unstake=p.pending_unstake,
            rewards=p.rewards,
            slashed=p.slashed,
            eligible_now=client.is_eligible(wallet),
            last_elected_round=p.last_elected_round,
            min_stake=params.min_stake,
        )
    return Standing(
        task=client.address,
        chain_id=client.conn.chain_id,
        block=client.conn.rpc.block_number(),
        wallet=wallet,
        round=rnd,
        total_rounds=params.total_rounds,
        phase=phase,
        role=role_text,
        global_model_hash="0x" + client.global_model_hash().hex(),
        global_model_round=client.global_model_round(),
        reward_pool=client.reward_pool(),
        participants=client.participant_count(),
        eligible=client.eligible_count(),
        registration=registration,
    )


def node_snapshot(path: Path, max_age: float = RUNNING_STATUS_AGE) -> NodeStatus | None:
    """What the running node last wrote to its status file (None if not running)."""
    return read_status_file(path, max_age)


def _peer_id_text(raw: bytes) -> str:
    from libp2p.peer.id import ID

    try:
        return ID(raw).to_base58()
    except Exception:
        return "0x" + raw.hex()


def format_status(s: Standing, node: NodeStatus | None = None) -> str:
    """``s`` from ``collect_status``; ``node`` the running node's snapshot, if any."""
    lines = [
        f"task          {s.task} on chain {s.chain_id} (block {s.block})",
        f"round         {s.round} of {s.total_rounds}, phase {s.phase}",
        f"global model  {s.global_model_hash} (from round {s.global_model_round})",
        f"participants  {s.participants} registered, {s.eligible} eligible",
        f"reward pool   {format_amount(s.reward_pool)}",
        f"wallet        {s.wallet}",
    ]
    if node is not None:
        held = "holds it" if node.model.held else "fetching it"
        lines.append(f"node          running: {len(node.p2p.peers)} peers, global model {held}")
    else:
        lines.append("node          not running (no fresh status file in the data dir)")
    r = s.registration
    if r is None:
        lines.append("registered    no  (run: flocknode register -c node.toml)")
        return "\n".join(lines)
    lines += [
        f"peer id       {r.peer_id}",
        f"addresses     {', '.join(r.multiaddrs)}",
        f"role          {s.role or 'not elected this round'}",
        f"stake         {format_amount(r.stake)} (minimum {format_amount(r.min_stake)}); "
        f"{'eligible' if r.eligible_now else 'NOT eligible'}",
        f"unstaking     {format_amount(r.pending_unstake)}",
        f"rewards       {format_amount(r.rewards)} claimable",
        f"slashed       {format_amount(r.slashed)}",
    ]
    return "\n".join(lines)
