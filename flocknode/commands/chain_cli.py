"""Argument parsing for the chain commands: task create, register, stake, ..., status."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from flocknode.chain.types import TaskParams
from flocknode.config import LOCAL_CHAIN_ID, NodeConfig, load_config
from flocknode.errors import ConfigError

# TaskParams fields that are flags of `task create` (the rest are computed).
_COMPUTED = {"token", "model_spec_hash", "config_hash", "initial_model_hash"}
_TOKEN_FIELDS = {"min_stake", "reward_per_round"}  # given in tokens, stored in base units
# Settings with a flag of their own (--task-package takes a path, not the hash).
_OWN_FLAGS = {("training", "task_package")}
_PARAM_DEFAULTS = {"total_rounds": 10, "min_stake": 10 * 10**18, "reward_per_round": 10**18}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="the node's node.toml")


def _load(args: argparse.Namespace) -> NodeConfig:
    return load_config(args.config)


def _client(args: argparse.Namespace) -> Any:
    from flocknode.connect import connect

    return connect(_load(args))


def _cmd_register(args: argparse.Namespace) -> int:
    from flocknode.commands import participant
    from flocknode.connect import connect

    cfg = _load(args)
    participant.register(connect(cfg), cfg)
    return 0


def _cmd_stake(args: argparse.Namespace) -> int:
    from flocknode.commands import participant
    from flocknode.commands.common import parse_amount

    participant.stake(_client(args), parse_amount(args.amount, "AMOUNT"))
    return 0


def _cmd_unstake(args: argparse.Namespace) -> int:
    from flocknode.commands import participant
    from flocknode.commands.common import parse_amount

    participant.unstake(_client(args), parse_amount(args.amount, "AMOUNT"))
    return 0


def _cmd_withdraw(args: argparse.Namespace) -> int:
    from flocknode.commands import participant

    participant.withdraw(_client(args))
    return 0


def _cmd_claim(args: argparse.Namespace) -> int:
    from flocknode.commands import participant

    participant.claim(_client(args))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from flocknode.commands.status import collect_status, format_status, node_snapshot
    from flocknode.connect import connect
    from flocknode.datadir import DataDir
    from flocknode.identity.wallet import load_wallet

    cfg = _load(args)
    wallet = load_wallet(cfg).address
    standing = collect_status(connect(cfg, account=None), wallet)
    node = node_snapshot(DataDir(cfg.data_path).status_file)
    print(json.dumps(standing.to_json(node)) if args.json else format_status(standing, node))
    return 0


def _cmd_task_create(args: argparse.Namespace) -> int:
    from flocknode.commands.common import parse_amount
    from flocknode.commands.task_create import (
        Funding,
        TaskPlan,
        create_task,
        creator_package,
        format_amount,
        with_package,
    )
    from flocknode.connect import chain_connection
    from flocknode.datadir import DataDir
    from flocknode.fsutil import atomic_write_bytes

    chain: dict[str, Any] = {"rpc_url": args.rpc, "chain_id": args.chain_id}
    if args.keystore:
        chain["keystore"] = str(Path(args.keystore).resolve())
    if args.password_file:
        chain["password_file"] = str(Path(args.password_file).resolve())
    cfg = load_config(
        args.config,
        overrides={"chain": {k: v for k, v in chain.items() if v is not None}},
        flag_names={"chain.rpc_url": "--rpc", "chain.chain_id": "--chain-id"},
    )
    params: dict[str, int] = {}
    for f in dataclasses.fields(TaskParams):
        if f.name in _COMPUTED:
            continue
        v = getattr(args, f"param_{f.name}")
        if v is None:
            default: Any = _PARAM_DEFAULTS.get(f.name, f.default)
            params[f.name] = int(default)
        elif f.name in _TOKEN_FIELDS:
            params[f.name] = parse_amount(v, _flag(f.name))
        else:
            params[f.name] = v
    base_model = args.base_model or (cfg.path(cfg.task.base_model) if cfg.task.base_model else "")
    settings = _task_settings(args, Path(base_model) if base_model else None)
    package = None
    if args.task_package is not None:
        package = creator_package(args.task_package)
        settings = with_package(settings, package)
        if package is not None and args.package_out:
            atomic_write_bytes(Path(args.package_out), package.archive)
    fund = [
        Funding(w, parse_amount(args.fund_tokens, "--fund-tokens"), int(args.fund_eth * 10**18))
        for w in args.fund
    ]
    plan = TaskPlan(
        params=params,
        settings=settings,
        token=args.token,
        fund=fund,
        reward_pool=parse_amount(args.reward_pool, "--reward-pool"),
        settings_out=Path(args.settings_out) if args.settings_out else None,
        base_model=Path(base_model) if base_model else None,
        package=package,
        package_cache=DataDir(cfg.data_path).packages if args.config else None,
    )
    created = create_task(chain_connection(cfg), plan)
    if args.json:
        print(json.dumps(created.to_json()))
    else:
        print(f"token        {created.token}")
        print(f"task         {created.task}")
        print(f"config hash  0x{created.config_hash.hex()}")
        print(f"init model   0x{created.initial_model_hash.hex()}")
        if created.task_package:
            print(
                f"package      {created.task_package}  ({created.package_files} files, "
                f"{created.package_bytes} bytes)"
            )
        print(f"settings     {created.settings_json.decode()}")
        if plan.reward_pool:
            print(f"reward pool  {format_amount(plan.reward_pool)}")
    return 0


def _task_settings(args: argparse.Namespace, base_model: Path | None = None) -> Any:
    from flocknode.aggregation.settings import AggregationSettings, SettingsError
    from flocknode.learning.base_model import dir_hash
    from flocknode.learning.settings import TaskSettings, TrainingSettings

    base: dict[str, Any] = {}
    if args.settings:
        try:
            base = json.loads(Path(args.settings).read_text())
        except (OSError, ValueError) as e:
            msg = f"cannot read settings JSON: {e}"
            raise ConfigError(args.settings, "--settings", msg) from None
    for section, cls in (("training", TrainingSettings), ("aggregation", AggregationSettings)):
        for f in dataclasses.fields(cls):
            if (section, f.name) in _OWN_FLAGS:
                continue
            v = getattr(args, f"{section}_{f.name}")
            if v is not None:
                base.setdefault(section, {})[f.name] = v
    if args.flag_threshold_ppm is not None:
        base["flag_threshold_ppm"] = args.flag_threshold_ppm
    if base_model is not None and not base.get("training", {}).get("base_model_hash"):
        base.setdefault("training", {})["base_model_hash"] = dir_hash(base_model)
    try:
        return TaskSettings.from_dict(base)
    except SettingsError as e:
        raise ConfigError("task settings", e.name, e.message) from None


def _add_task_create(sub: Any) -> None:
    from flocknode.aggregation.settings import AggregationSettings
    from flocknode.learning.package import BUILTIN
    from flocknode.learning.settings import TrainingSettings

    p = sub.add_parser(
        "create",
        help="deploy a token and a FlockTask",
        description="Deploy FlockToken (or use --token) and a FlockTask. The deployer's wallet is "
        "a keystore (--keystore, -c) or FLOCKNODE_PRIVATE_KEY on a local chain.",
    )
    p.add_argument("--rpc", help="chain JSON-RPC URL (default http://127.0.0.1:8545)")
    p.add_argument("--chain-id", type=int, help=f"chain id (default {LOCAL_CHAIN_ID})")
    p.add_argument("-c", "--config", help="take the RPC and the deployer wallet from a node.toml")
    p.add_argument("--keystore", help="deployer's encrypted keystore")
    p.add_argument("--password-file", help="its password (else FLOCKNODE_WALLET_PASSWORD)")
    p.add_argument("--token", help="use this existing FlockToken instead of deploying one")
    g = p.add_argument_group("task parameters (on chain)")
    for f in dataclasses.fields(TaskParams):
        if f.name in _COMPUTED:
            continue
        unit = " (tokens)" if f.name in _TOKEN_FIELDS else ""
        default = _PARAM_DEFAULTS.get(f.name, f.default)
        if f.name in _TOKEN_FIELDS:
            from flocknode.commands.common import format_amount

            default = format_amount(int(str(default)))
        g.add_argument(
            _flag(f.name),
            dest=f"param_{f.name}",
            metavar="N",
            type=str if f.name in _TOKEN_FIELDS else int,
            help=f"default {default}{unit}",
        )
    g = p.add_argument_group("training and aggregation settings (hashed into configHash)")
    g.add_argument("--settings", help="a JSON file of settings (flags override it)")
    g.add_argument(
        "--task-package",
        metavar="PATH|NAME",
        help="the task's code: a directory, .py, .whl or package archive, an importable "
        f"package's name, or '{BUILTIN}' (its hash goes into the settings)",
    )
    g.add_argument("--package-out", metavar="FILE", help="also write the package archive here")
    for section, cls in (("training", TrainingSettings), ("aggregation", AggregationSettings)):
        for f in dataclasses.fields(cls):
            if (section, f.name) in _OWN_FLAGS:
                continue
            typ: Any = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
            g.add_argument(
                _flag(f.name),
                dest=f"{section}_{f.name}",
                type=typ,
                metavar="V",
                help=f"default: the task's own ({f.default} unless the task sets it)",
            )
    g.add_argument("--flag-threshold-ppm", type=int, help="default: the task's own")
    g.add_argument(
        "--base-model",
        metavar="DIR",
        help="the task's base model directory (lm-lora; default [task] base_model of -c): "
        "its hash fills --base-model-hash",
    )
    g = p.add_argument_group("local chains")
    g.add_argument("--fund", action="append", default=[], metavar="ADDR", help="mint to and fund")
    g.add_argument("--fund-tokens", default="1000", help="tokens minted per --fund wallet")
    g.add_argument("--fund-eth", type=float, default=10.0, help="ETH sent per --fund wallet")
    g.add_argument("--reward-pool", default="0", help="tokens put in the reward pool")
    p.add_argument("--settings-out", help="write the canonical settings JSON here (publish it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_task_create)


def register(sub: Any) -> None:
    t = sub.add_parser("task", help="create tasks")
    tsub = t.add_subparsers(dest="task_command", required=True, metavar="SUBCOMMAND")
    _add_task_create(tsub)

    p = sub.add_parser("register", help="register this node's wallet, peer id and box key")
    _add_config(p)
    p.set_defaults(handler=_cmd_register)

    p = sub.add_parser("stake", help="stake tokens (counts from the next round)")
    _add_config(p)
    p.add_argument("amount", metavar="AMOUNT", help="tokens, e.g. 100 or 12.5")
    p.set_defaults(handler=_cmd_stake)

    p = sub.add_parser("unstake", help="request to unstake tokens")
    _add_config(p)
    p.add_argument("amount", metavar="AMOUNT", help="tokens")
    p.set_defaults(handler=_cmd_unstake)

    p = sub.add_parser("withdraw", help="withdraw unstaked tokens")
    _add_config(p)
    p.set_defaults(handler=_cmd_withdraw)

    p = sub.add_parser("claim", help="claim accrued rewards")
    _add_config(p)
    p.set_defaults(handler=_cmd_claim)

    p = sub.add_parser("status", help="this node's round, role, stake and rewards")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_status)
