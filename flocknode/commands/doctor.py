"""``flocknode doctor -c node.toml``: is this node set up to run and earn?

One line per check, PASS or FAIL (or SKIP when a check it needs failed), and
for every failure the command that fixes it. Exit code 0 only when every check
passed. The checks reuse what the node itself runs at start-up: the config
loader, the key and wallet loaders, the chain client and the p2p host.

Gas: a node's worst round sends one role's transactions plus the keeper calls
(open, elect) that any node may win; the figures are gas used as measured by
``bench/gas.py`` (max over its 10/50/100-participant runs), and the fee per gas
is the one the node's sender would offer now (EIP-1559 max fee, or gas price).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import (
    ContractRevert,
    RpcUnavailable,
    WrongChain,
    describe_exception,
)
from flocknode.chain.registry import multiaddr_text
from flocknode.chain.rpc import RetryPolicy
from flocknode.chain.types import ParticipantView, TaskParams
from flocknode.commands.common import format_amount
from flocknode.commands.doctor_probes import (
    dial_any,
    host_port,
    key_fix,
    loose_mode,
    multiaddr_host_port,
    running_status,
    try_bind,
    wallet_fix,
)
from flocknode.config import ENV_PRIVATE_KEY, NodeConfig, load_config
from flocknode.connect import chain_connection, task_client
from flocknode.errors import FlockError
from flocknode.identity import BoxKey, DataDir, PeerKey, load_box_key, load_peer_key
from flocknode.identity.wallet import exposed_mode, load_wallet
from flocknode.learning.settings import TaskSettings
from flocknode.packages import resolve_task_package
from flocknode.status import NodeStatus

# Gas used (bench/gas.py, max over 10/50/100 participants, 5 proposers + 5 voters).
GAS_COMMIT_VOTE = 88_363
GAS_REVEAL_VOTE = 136_214
GAS_SUBMIT_UPDATE = 112_282
GAS_OPEN_ROUND = 510_867  # openRound that first finalizes the previous round
GAS_ELECT_ROLES = 738_463  # at 100 eligible participants (draw over block sums)
GAS_PER_ROUND = max(GAS_COMMIT_VOTE + GAS_REVEAL_VOTE, GAS_SUBMIT_UPDATE) + (
    GAS_OPEN_ROUND + GAS_ELECT_ROLES
)
MAX_DEFAULT_ROUNDS = 100
ETHER = 10**18


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "PASS", "FAIL", "SKIP"
    detail: str
    fix: str = ""


@dataclass
class _State:
    cfg: NodeConfig | None = None
    layout: DataDir | None = None
    peer_key: PeerKey | None = None
    box_key: BoxKey | None = None
    account: LocalAccount | None = None
    conn: ChainConnection | None = None
    client: TaskClient | None = None
    params: TaskParams | None = None
    me: ParticipantView | None = None
    running: NodeStatus | None = None  # the status file of a running node
    settings: TaskSettings | None = None  # once the settings check passed
    done: dict[str, bool] = field(default_factory=dict)


class Failed(Exception):
    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class Doctor:
    def __init__(
        self,
        config: str | Path,
        rounds: int | None = None,
        peer_timeout: float = 15.0,
        rpc_attempts: int = 2,
    ) -> None:
        self.config = str(config)
        self.rounds = rounds
        self.peer_timeout = peer_timeout
        self.rpc_attempts = rpc_attempts
        self.s = _State()

    def checks(self) -> list[tuple[str, str, tuple[str, ...], Callable[[], str]]]:
        """(name, what it checks, the checks it needs, the check)."""
        return [
            ("config", "config valid", (), self.check_config),
            ("keys", "keys readable, safe permissions", ("config",), self.check_keys),
            ("rpc", "RPC reachable, chain id", ("keys",), self.check_rpc),
            ("task", "task contract present", ("rpc",), self.check_task),
            ("settings", "task settings match", ("task",), self.check_settings),
            ("data", "your data readable by the task", ("settings",), self.check_data),
            ("stake", "wallet registered and staked", ("task",), self.check_stake),
            ("gas", "gas for the next rounds", ("task",), self.check_gas),
            ("listen", "listen addresses bindable", ("config",), self.check_listen),
            ("addresses", "registered addresses match", ("stake",), self.check_addresses),
            ("peers", "a peer reachable", ("stake",), self.check_peers),
        ]

    def run(self, report: Callable[[Check], None] = lambda c: None) -> list[Check]:
        out = []
        for name, _, needs, fn in self.checks():
            missing = [n for n in needs if not self.s.done.get(n)]
            if missing:
                c = Check(name, "SKIP", f"needs a passing '{missing[0]}' check")
            else:
                try:
                    c = Check(name, "PASS", fn())
                except Failed as f:
                    c = Check(name, "FAIL", f.detail, f.fix)
                except FlockError as e:
                    c = Check(name, "FAIL", str(e), "see the message")
                except Exception as e:  # a check never ends the doctor
                    c = Check(name, "FAIL", f"unexpected error: {describe_exception(e)}", "")
            self.s.done[name] = c.status == "PASS"
            out.append(c)
            report(c)
        return out

    # -- checks ---------------------------------------------------------------
    def check_config(self) -> str:
        try:
            cfg = load_config(self.config)
            cfg.announce_addrs()
        except FlockError as e:
            raise Failed(
                str(e), f"edit {self.config} (flocknode init writes a commented one)"
            ) from None
        self.s.cfg = cfg
        self.s.layout = DataDir(cfg.data_path)
        self.s.running = running_status(self.s.layout)
        if not cfg.chain.task:
            raise Failed("chain.task is empty", f"set [chain] task in {self.config}")
        return f"{self.config}: chain {cfg.chain.chain_id}, task {cfg.chain.task}"

    def check_keys(self) -> str:
        cfg, layout = self._cfg(), self._layout()
        try:
            self.s.peer_key = load_peer_key(layout.peer_key)
            self.s.box_key = load_box_key(layout.box_key)
        except FlockError as e:
            raise Failed(str(e), key_fix(str(e), layout)) from None
        files = [layout.keys]
        raw_key = bool(os.environ.get(ENV_PRIVATE_KEY))
        if not raw_key:
            files.append(cfg.path(cfg.chain.keystore))
            if cfg.chain.password_file:
                files.append(cfg.path(cfg.chain.password_file))
        for f in files:
            loose = exposed_mode(f) if f.is_file() else loose_mode(f)
            if loose is not None:
                mode = "700" if f.is_dir() else "600"
                raise Failed(
                    f"{f} is accessible by other users (mode {loose:o})", f"chmod {mode} {f}"
                )
        try:
            self.s.account = load_wallet(cfg)
        except FlockError as e:
            raise Failed(str(e), wallet_fix(str(e), cfg)) from None
        where = ENV_PRIVATE_KEY if raw_key else str(cfg.path(cfg.chain.keystore))
        return f"peer {self.s.peer_key.peer_id}, box key, wallet {self.s.account.address} ({where})"

    def check_rpc(self) -> str:
        cfg = self._cfg()
        retry = RetryPolicy(attempts=self.rpc_attempts, request_timeout=10.0)
        conn = chain_connection(cfg, self.s.account, retry=retry)
        try:
            cid = conn.chain_id
            block = conn.rpc.block_number()
        except WrongChain as e:
            raise Failed(
                str(e),
                f"point chain.rpc_url at chain {cfg.chain.chain_id}, or set chain.chain_id "
                f"to the chain you mean",
            ) from None
        except RpcUnavailable as e:
            raise Failed(
                str(e), "start the chain node or fix chain.rpc_url (and your firewall/proxy)"
            ) from None
        self.s.conn = conn
        return f"{cfg.chain.rpc_url} serves chain {cid}, block {block}"

    def check_task(self) -> str:
        cfg, conn = self._cfg(), self._conn()
        try:
            client = task_client(cfg, conn)
            params = client.params()
            current = client.current_round()
        except WrongChain as e:
            raise Failed(
                str(e), "set chain.task to the address that 'flocknode task create' printed"
            ) from None
        self.s.client, self.s.params = client, params
        return f"FlockTask {client.address}: round {current} of {params.total_rounds}"

    def check_settings(self) -> str:
        from flocknode.node import load_task_settings

        cfg, client, params = self._cfg(), self._client(), self._params()
        try:
            settings = load_task_settings(cfg, client, params.config_hash)
        except FlockError as e:
            raise Failed(
                str(e),
                "set [task] settings to the task creator's settings JSON, or empty to use "
                "the copy published on chain",
            ) from None
        self.s.settings = settings
        return f"rule {settings.aggregation.rule}, task {settings.training.task}"

    def check_data(self) -> str:
        from flocknode.node import node_data_sizes

        if self.s.settings is None:
            raise Failed("the task settings are not known", "fix the settings check first")
        cfg, settings = self._cfg(), self.s.settings
        try:  # the task's code, fetched by hash from members as the node would
            package = resolve_task_package(
                cfg, settings, DataDir(cfg.data_path), self._client(), self.peer_timeout
            )
        except FlockError as e:
            raise Failed(
                str(e), f"set [task] package in {self.config} to the task package's directory"
            ) from None
        try:  # read where the node reads it: in the task worker unless isolation is "none"
            d = node_data_sizes(cfg, settings, package)
        except FlockError as e:
            raise Failed(
                str(e), f"fix the file it names, or [data] path in {self.config} (docs/tasks.md)"
            ) from None
        held = f" (task package {settings.training.task_package} checked)" if package else ""
        return (
            f"{cfg.data.path}: {d.train} training and {d.val} validation "
            f"samples for task {settings.training.task}{held}"
        )

    def check_stake(self) -> str:
        cfg, client, params = self._cfg(), self._client(), self._params()
        wallet = self._account().address
        try:
            me = client.participant(wallet)
        except ContractRevert as e:
            if e.name == "NotRegistered":
                raise Failed(
                    f"wallet {wallet} is not registered in task {client.address}",
                    f"flocknode register -c {cfg.source}",
                ) from None
            raise
        self.s.me = me
        if me.stake < params.min_stake:
            short = params.min_stake - me.stake
            raise Failed(
                f"stake {format_amount(me.stake)} is below the task minimum "
                f"{format_amount(params.min_stake)}",
                f"flocknode stake -c {cfg.source} {format_amount(short)}",
            )
        pending = f", {format_amount(me.pending_unstake)} unstaking" if me.pending_unstake else ""
        return (
            f"registered, stake {format_amount(me.stake)} >= minimum "
            f"{format_amount(params.min_stake)}{pending}"
        )

    def check_gas(self) -> str:
        client, params, conn = self._client(), self._params(), self._conn()
        wallet = self._account().address
        remaining = max(1, params.total_rounds - client.current_round())
        rounds = self.rounds if self.rounds is not None else min(remaining, MAX_DEFAULT_ROUNDS)
        fees = conn._sender()._fees()  # the fee rule the node's sender uses
        per_gas = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
        need = rounds * GAS_PER_ROUND * per_gas
        balance = conn.eth_balance(wallet)
        covers = balance // (GAS_PER_ROUND * per_gas) if per_gas else None
        basis = (
            f"{GAS_PER_ROUND:,} gas per round at most, at {per_gas / 1e9:.3g} gwei"
            if per_gas
            else "gas is free on this chain"
        )
        if balance < need:
            raise Failed(
                f"balance {_eth(balance)} ETH is short of {_eth(need)} ETH for {rounds} "
                f"round(s) ({basis})",
                f"send at least {_eth(need - balance)} ETH to {wallet}",
            )
        more = f", enough for about {covers:,} rounds" if covers is not None else ""
        return f"balance {_eth(balance)} ETH covers the next {rounds} round(s) ({basis}){more}"

    def check_listen(self) -> str:
        cfg = self._cfg()
        targets = [(f"p2p {a}", multiaddr_host_port(a)) for a in cfg.p2p.listen]
        if cfg.http.enabled:
            targets.append((f"http {cfg.http.listen}", host_port(cfg.http.listen)))
        running = self.s.running
        bound = []
        for label, hp in targets:
            if hp is None:
                raise Failed(f"{label}: not a TCP address", "use /ip4/ADDR/tcp/PORT")
            err = try_bind(*hp)
            if err is None:
                bound.append(label)
            elif running is not None:
                bound.append(f"{label} (held by the running node)")
            else:
                key = "http.listen" if label.startswith("http") else "p2p.listen"
                raise Failed(
                    f"{label}: cannot bind ({err})",
                    f"stop what uses port {hp[1]} or set {key} to a free port in {cfg.source}",
                )
        return "; ".join(bound)

    def check_addresses(self) -> str:
        cfg, me = self._cfg(), self._me()
        peer_key, box_key = self._peer_key(), self._box_key()
        if me.peer_id != peer_key.peer_id.to_bytes():
            raise Failed(
                "the peer id registered on chain is not this node's keys/peer.key",
                "restore the peer key this wallet registered (keys/peer.key), or register "
                "with another wallet",
            )
        if me.box_public_key != box_key.public_bytes:
            raise Failed(
                "the box key registered on chain is not this node's keys/box.key",
                "restore the box key this wallet registered (keys/box.key)",
            )
        want = cfg.announce_addrs()
        registered = [multiaddr_text(a) for a in me.multiaddrs]
        if not _same_addrs(registered, want):
            raise Failed(
                f"registered {registered}, config announces {want}",
                "start the node (flocknode run updates its registered addresses), or fix "
                f"p2p.announce in {cfg.source}",
            )
        return f"{', '.join(want)} (peer id and box key match)"

    def check_peers(self) -> str:
        running = self.s.running
        if running is not None:
            peers = running.p2p.peers
            if not peers:
                raise Failed(
                    "the running node has no peer connected",
                    "check that other participants are online and that your firewall lets "
                    "libp2p TCP out and in",
                )
            return f"the running node has {len(peers)} peer(s) connected"
        registry = self._client().registry()
        me = self._peer_key().peer_id
        members = [m for m in registry.eligible() if m.peer_id != me]
        if not members:
            raise Failed(
                "no other staked participant is registered in the task",
                "wait until other participants register and stake",
            )
        import trio

        reached, tried = trio.run(dial_any, self._peer_key(), registry, self.peer_timeout)
        if reached is None:
            raise Failed(
                f"none of {len(members)} registered peers answered within "
                f"{self.peer_timeout:.0f} s: {'; '.join(tried)}",
                "check your outbound TCP/firewall, and that other participants are online",
            )
        return f"connected to {reached}"

    # -- state accessors (a check runs only after those it needs passed) -----
    def _cfg(self) -> NodeConfig:
        assert self.s.cfg is not None
        return self.s.cfg

    def _layout(self) -> DataDir:
        assert self.s.layout is not None
        return self.s.layout

    def _account(self) -> LocalAccount:
        assert self.s.account is not None
        return self.s.account

    def _conn(self) -> ChainConnection:
        assert self.s.conn is not None
        return self.s.conn

    def _client(self) -> TaskClient:
        assert self.s.client is not None
        return self.s.client

    def _params(self) -> TaskParams:
        assert self.s.params is not None
        return self.s.params

    def _me(self) -> ParticipantView:
        assert self.s.me is not None
        return self.s.me

    def _peer_key(self) -> PeerKey:
        assert self.s.peer_key is not None
        return self.s.peer_key

    def _box_key(self) -> BoxKey:
        assert self.s.box_key is not None
        return self.s.box_key


def _same_addrs(registered: list[str], want: list[str]) -> bool:
    """Equal, where a configured port 0 (any free port) matches whatever port was bound."""
    if len(registered) != len(want):
        return False
    for got, w in zip(registered, want, strict=True):
        if w.endswith("/tcp/0") and got.rsplit("/", 1)[0] == w.rsplit("/", 1)[0]:
            continue
        if got != w:
            return False
    return True


# -- helpers ------------------------------------------------------------------


def _eth(wei: int) -> str:
    return f"{wei / ETHER:.6g}"


def format_check(c: Check) -> str:
    line = f"{c.status:<5} {c.name:<10} {c.detail}"
    if c.fix:
        line += f"\n{'':<17}fix: {c.fix}"
    return line


def run_doctor(config: str, rounds: int | None, as_json: bool, peer_timeout: float = 15.0) -> int:
    doctor = Doctor(config, rounds=rounds, peer_timeout=peer_timeout)
    if as_json:
        checks = doctor.run()
        ok = all(c.status == "PASS" for c in checks)
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}))
        return 0 if ok else 1
    print(f"flocknode doctor: {config}", flush=True)
    checks = doctor.run(lambda c: print(format_check(c), flush=True))
    failed = [c for c in checks if c.status != "PASS"]
    print(
        "all checks passed" if not failed else f"{len(failed)} of {len(checks)} checks did not pass"
    )
    return 0 if not failed else 1
