"""``flocknode init``: a data dir with the peer and box keys and a commented node.toml."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flocknode.config import ENV_PASSWORD, LOCAL_CHAIN_ID, load_config
from flocknode.errors import ConfigError, KeyFileError
from flocknode.fsutil import atomic_write_text
from flocknode.identity import DataDir, load_or_create_box_key, load_or_create_peer_key
from flocknode.identity.wallet import create_keystore, exposed_mode

TEMPLATE = """\
# flocknode node configuration.
# Order of precedence: defaults < this file < FLOCKNODE_<SECTION>_<KEY> env vars < flags.
# Relative paths are relative to this file's directory. Unknown keys are errors.

# Keys (keys/), the content store (store/) and the round journal (journal/).
data_dir = "."

[chain]
# JSON-RPC endpoint of the chain that hosts the task, and its chain id
# (31337 = a local anvil chain; the node checks the RPC reports the same id).
rpc_url = "{rpc_url}"
chain_id = {chain_id}
# The FlockTask contract this node participates in (flocknode task create prints it).
task = "{task}"
# The wallet: an encrypted v3 keystore, with its password in a file (mode 0600)
# or in the FLOCKNODE_WALLET_PASSWORD environment variable. A raw private key is
# never read from this file; FLOCKNODE_PRIVATE_KEY works on a local chain only.
keystore = "keys/wallet.json"
password_file = "{password_file}"
# Blocks to wait before acting on a new round (use a few on chains that reorg).
confirmations = 0

[p2p]
# Where libp2p listens (TCP). Open this port to other participants.
listen = ["/ip4/0.0.0.0/tcp/{port}"]
# Addresses registered on chain for others to dial; empty = the listen addresses
# with a concrete IP (set your public IP or DNS name here behind NAT).
announce = []
# Extra peers to dial at start (multiaddrs with /p2p/<peer id>); the task's
# on-chain registry is the main source of peers.
bootstrap = []

[data]
# Your private data: the files the task's code reads (a CSV file or directory for
# digits-mlp, one folder per class for digits-cnn; docs/tasks.md). Required.
path = ""
node_index = 0
num_nodes = 1

[task]
# The task's training and aggregation settings (canonical JSON, as printed by
# 'flocknode task create --settings-out'). Empty: use the copy published on
# chain. Either way the node checks them against the task's configHash and
# refuses to start, naming the setting, if they differ.
settings = ""

[store]
# History kept in store/ and journal/: the blobs, models and journal records of
# the last keep_rounds finished rounds (at least 2; 0 keeps everything). The
# current global model and anything an unfinished round needs always stay.
keep_rounds = 16

[http]
# Status page, /metrics, /healthz and /readyz. Loopback by default.
enabled = true
listen = "127.0.0.1:9100"

[log]
level = "info"      # debug, info, warning, error
format = "text"     # text (key=value) or json
# per-logger levels, e.g. modules = {{ libp2p = "info", "flocknode.rounds" = "debug" }}
modules = {{}}
"""


_FLAG_NAMES = {"chain.rpc_url": "--rpc", "chain.chain_id": "--chain-id", "chain.task": "--task"}


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    config: Path
    peer_id: str
    box_public_key: str
    wallet: str | None


def init_data_dir(
    data_dir: Path,
    rpc_url: str = "http://127.0.0.1:8545",
    chain_id: int = LOCAL_CHAIN_ID,
    task: str = "",
    port: int = 4001,
    new_wallet: bool = False,
    password_file: Path | None = None,
    force: bool = False,
) -> InitResult:
    flags = {"rpc_url": rpc_url, "chain_id": chain_id, "task": task}
    load_config(  # check the flags before anything is written
        overrides={"chain": flags},
        environ={},
        flag_names=_FLAG_NAMES,
    )
    password = _new_wallet_password(password_file) if new_wallet else None
    layout = DataDir(Path(data_dir))
    if layout.config.exists() and not force:
        raise ConfigError(str(layout.config), "", "already exists (use --force to rewrite it)")
    layout.create()
    peer = load_or_create_peer_key(layout.peer_key)
    box = load_or_create_box_key(layout.box_key)
    pw_rel = ""
    if password_file is not None:
        pw_rel = os.path.relpath(Path(password_file).resolve(), layout.root.resolve())
    text = TEMPLATE.format(
        rpc_url=rpc_url, chain_id=chain_id, task=task, password_file=pw_rel, port=port
    )
    atomic_write_text(layout.config, text, mode=0o600)
    cfg = load_config(layout.config)  # the file we wrote must load: catches bad flags
    wallet = None
    if password is not None:
        wallet = create_keystore(cfg.path(cfg.chain.keystore), password)
    return InitResult(
        data_dir=layout.root,
        config=layout.config,
        peer_id=peer.peer_id.to_base58(),
        box_public_key=box.public_bytes.hex(),
        wallet=wallet,
    )


def _new_wallet_password(password_file: Path | None) -> str:
    if password_file is not None:
        loose = exposed_mode(Path(password_file))
        if loose is not None:  # the node would refuse it later: say so now
            raise KeyFileError(
                str(password_file),
                "--password-file",
                f"password file is accessible by other users (mode {loose:o}); "
                f"run: chmod 600 {password_file}",
            )
        try:
            pw = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError(str(password_file), "--password-file", e.strerror or "") from None
    elif ENV_PASSWORD in os.environ:
        pw = os.environ[ENV_PASSWORD]
    else:
        raise ConfigError(
            "--new-wallet", "", f"needs a password: --password-file FILE or {ENV_PASSWORD}"
        )
    if len(pw) < 8:
        raise ConfigError("--new-wallet", "", "the wallet password must have 8 characters or more")
    return pw
