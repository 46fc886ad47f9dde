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


def _cmd_run(args: argparse.Namespace) -> int:
    from flocknode.config import load_config
    from flocknode.logs import setup_logging
    from flocknode.node import run_node

    overrides = {"log": {"format": args.log_format}} if args.log_format else None
    cfg = load_config(args.config, overrides=overrides, flag_names={"log.format": "--log-format"})
    setup_logging(cfg.log.level, cfg.log.format)
    return run_node(cfg)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="flocknode",
        description="Peer-to-peer node for decentralized federated learning (FL Alliance).",
    )
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
    s.add_argument("--log-format", choices=["text", "json"], help="overrides log.format")
    s.set_defaults(handler=_cmd_run)

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
        return handler(args)
    except FlockError as e:
        print(f"flocknode: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("flocknode: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
