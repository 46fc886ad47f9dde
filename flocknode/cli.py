"""Command-line interface: argument parsing only; the work is in flocknode.commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flocknode.errors import FlockError

Handler = Callable[[argparse.Namespace], int]


def _cmd_init(args: argparse.Namespace) -> int:
    from flocknode.commands.init import init_data_dir

    res = init_data_dir(
        Path(args.data_dir),
        rpc_url=args.rpc,
        chain_id=args.chain_id,
        task=args.task or "",
        port=args.port,
        new_wallet=args.new_wallet,
        password_file=Path(args.password_file) if args.password_file else None,
        force=args.force,
    )
    out: dict[str, Any] = {
        "data_dir": str(res.data_dir),
        "config": str(res.config),
        "peer_id": res.peer_id,
        "box_public_key": res.box_public_key,
        "wallet": res.wallet,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"data dir     {res.data_dir}")
        print(f"config       {res.config}  (edit it, then: flocknode doctor -c {res.config})")
        print(f"peer id      {res.peer_id}")
        print(f"box key      {res.box_public_key}")
        if res.wallet:
            print(f"wallet       {res.wallet}  (keystore in keys/wallet.json; fund it with gas)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the CLI's contract for bad input)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _module_levels(args: argparse.Namespace) -> dict[str, str]:
    from flocknode.errors import ConfigError
    from flocknode.logs import parse_module_levels

    try:
        return parse_module_levels(getattr(args, "log_module", None) or [])
    except ValueError as e:
        raise ConfigError("--log-module", "", str(e)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from flocknode.config import load_config
    from flocknode.logs import setup_logging
    from flocknode.node import run_node

    log: dict[str, str] = {}
    if getattr(args, "log_format", None):
        log["format"] = args.log_format
    if getattr(args, "log_level", None):
        log["level"] = args.log_level
    cfg = load_config(
        args.config,
        overrides={"log": log} if log else None,
        flag_names={"log.format": "--log-format", "log.level": "--log-level"},
    )
    modules = {**cfg.log.modules, **_module_levels(args)}
    setup_logging(cfg.log.level, cfg.log.format, modules)
    return run_node(cfg)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from flocknode.commands.doctor import run_doctor

    return run_doctor(args.config, args.rounds, args.json, peer_timeout=args.peer_timeout)


def _add_log_options(p: argparse.ArgumentParser, default: Any) -> None:
    """--log-level/--log-format/--log-module, before or after the command."""
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="log level (run: overrides log.level)",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=default,
        help="key=value text or one JSON object per line (run: overrides log.format)",
    )
    p.add_argument(
        "--log-module",
        action="append",
        metavar="MODULE=LEVEL",
        default=default,
        help="level for one logger and its children, e.g. libp2p=debug (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="flocknode",
        description="Peer-to-peer node for decentralized federated learning (FL Alliance).",
    )
    _add_log_options(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("init", help="create keys and a commented node.toml in a data dir")
    s.add_argument("--data-dir", required=True, help="directory for keys, store and journal")
    s.add_argument("--rpc", default="http://127.0.0.1:8545", help="chain JSON-RPC URL")
    s.add_argument("--chain-id", type=int, default=31337, help="chain id (31337 = local anvil)")
    s.add_argument("--task", help="FlockTask contract address")
    s.add_argument("--port", type=int, default=4001, help="libp2p TCP port to listen on")
    s.add_argument("--new-wallet", action="store_true", help="also create an encrypted keystore")
    s.add_argument("--password-file", help="wallet password file (else FLOCKNODE_WALLET_PASSWORD)")
    s.add_argument("--force", action="store_true", help="rewrite an existing node.toml")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=_cmd_init)

    s = sub.add_parser("run", help="run the node daemon (what a system service runs)")
    s.add_argument("-c", "--config", required=True, help="the node's node.toml")
    _add_log_options(s, argparse.SUPPRESS)
    s.set_defaults(handler=_cmd_run)

    s = sub.add_parser("doctor", help="check that this node can run and earn; the fix for each")
    s.add_argument("-c", "--config", required=True, help="the node's node.toml")
    s.add_argument(
        "--rounds",
        type=int,
        help="rounds the gas balance must cover (default: the task's remaining rounds, "
        "at most 100)",
    )
    s.add_argument(
        "--peer-timeout", type=float, default=15.0, help="seconds to wait for a peer to answer"
    )
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=_cmd_doctor)

    from flocknode.commands import register_chain_commands

    register_chain_commands(sub)
    from flocknode.cluster.commands import register as register_cluster

    register_cluster(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        # run configures logging from its config file; one-shot commands print progress
        # lines and one error line, so their log records are errors only by default
        if handler is not _cmd_run:
            from flocknode.logs import setup_logging

            setup_logging(
                args.log_level or "error", args.log_format or "text", _module_levels(args)
            )
        return handler(args)
    except FlockError as e:
        print(f"flocknode: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("flocknode: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
