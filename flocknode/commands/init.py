"""``flocknode init``: a data dir with the peer and box keys and a commented node.toml."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flocknode.config import ENV_PASSWORD, LOCAL_CHAIN_ID, NodeConfig, load_config, to_toml
from flocknode.errors import ConfigError, KeyFileError
from flocknode.fsutil import atomic_write_text
from flocknode.identity import DataDir, load_or_create_box_key, load_or_create_peer_key
from flocknode.identity.wallet import create_keystore, exposed_mode

HEADER = """\
# flocknode node configuration.
# Order of precedence: defaults < this file < FLOCKNODE_<SECTION>_<KEY> env vars < flags.
# Relative paths are relative to this file's directory. Unknown keys are errors.
"""

# Comment lines written above each setting of node.toml (``to_toml``).
COMMENTS = {
    "data_dir": "\n# Keys (keys/), the content store (store/) and the round journal (journal/).",
    "chain.rpc_url": (
        "# JSON-RPC endpoint of the chain that hosts the task, and its chain id\n"
        "# (31337 = a local anvil chain; the node checks the RPC reports the same id)."
    ),
    "chain.task": "# The FlockTask contract of this node ('flocknode task create' prints it).",
    "chain.keystore": (
        "# The wallet: an encrypted v3 keystore, with its password in a file (mode 0600)\n"
        "# or in the FLOCKNODE_WALLET_PASSWORD environment variable. A raw private key is\n"
        "# never read from this file; FLOCKNODE_PRIVATE_KEY works on a local chain only."
    ),
    "chain.confirmations": (
        "# Blocks on top of a transaction before the node counts it as done; a few on\n"
        "# chains that reorganise (a dropped transaction is broadcast again either way)."
    ),
    "p2p.listen": "# Where libp2p listens (TCP). Open this port to other participants.",
    "p2p.announce": (
        "# Addresses registered on chain for others to dial; empty = the listen addresses\n"
        "# with a concrete IP (set your public IP or DNS name here behind NAT)."
    ),
    "p2p.bootstrap": (
        "# Extra peers to dial at start (multiaddrs with /p2p/<peer id>); the task's\n"
        "# on-chain registry is the main source of peers."
    ),
    "data.path": (
        "# Your private data: the files the task's code reads (a CSV file or directory for\n"
        "# digits-mlp, one folder per class for digits-cnn; docs/tasks.md). Required."
    ),
    "data.test_path": (
        "# Testers only: a held-out set the node reports test accuracy on, never votes with."
    ),
    "task.settings": (
        "# The task's training and aggregation settings (canonical JSON, as printed by\n"
        "# 'flocknode task create --settings-out'). Empty: use the copy published on\n"
        "# chain. Either way the node checks them against the task's configHash and\n"
        "# refuses to start, naming the setting, if they differ."
    ),
    "task.base_model": (
        "# Tasks that start from a base model (lm-lora): your copy of it, a local Hugging\n"
        "# Face model directory. The node checks its hash against the task's settings."
    ),
    "task.package": (
        "# The task's code package if you have it (a directory, .py, .whl or package\n"
        "# archive; docs/tasks.md). It must hash to the settings' task_package. Empty:\n"
        "# the node fetches the package by its hash from other members."
    ),
    "store.keep_rounds": (
        "# History kept in store/ and journal/: the blobs, models and journal records of\n"
        "# the last keep_rounds finished rounds (at least 2; 0 keeps everything). The\n"
        "# current global model and anything an unfinished round needs always stay."
    ),
    "http": "# Status page, /metrics, /healthz and /readyz. Loopback by default.",
    "log.level": "# debug, info, warning, error",
    "log.format": "# text (key=value) or json",
    "log.modules": (
        '# per-logger levels, e.g. modules = { libp2p = "info", "flocknode.rounds" = "debug" }'
    ),
}


def render_config(cfg: NodeConfig) -> str:
    """node.toml for ``cfg``: every setting, commented for a person."""
    return to_toml(cfg, COMMENTS, HEADER)


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
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> InitResult:
    """Keys and a node.toml in ``data_dir``.

    ``settings``: further config values by section (``{"data": {"node_index": 2}}``),
    validated by the config model like the flags.
    """
    flags = {"rpc_url": rpc_url, "chain_id": chain_id, "task": task}
    pw_rel = ""
    if password_file is not None:
        pw_rel = os.path.relpath(Path(password_file).resolve(), Path(data_dir).resolve())
    layers: dict[str, Any] = {
        "chain": {**flags, "password_file": pw_rel},
        "p2p": {"listen": [f"/ip4/0.0.0.0/tcp/{port}"]},
    }
    for section, values in (settings or {}).items():
        layers[section] = {**layers.get(section, {}), **values}
    cfg = load_config(  # check every value before anything is written
        overrides=layers,
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
    atomic_write_text(layout.config, render_config(cfg), mode=0o600)
    written = load_config(layout.config, environ={})
    assert written.model_dump() == cfg.model_dump(), "node.toml does not read back as written"
    cfg = load_config(layout.config)  # with the environment, as the node will read it
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
