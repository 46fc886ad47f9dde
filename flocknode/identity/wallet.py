"""The wallet (secp256k1 Ethereum account) that signs the node's transactions.

Loaded from an encrypted v3 keystore with a password from a file or
``FLOCKNODE_WALLET_PASSWORD``. A raw hex key is accepted only from the
``FLOCKNODE_PRIVATE_KEY`` environment variable and only when the config says the
chain is a local one (chain id 31337): nobody puts a mainnet key in a text file
by accident. Errors name the file and the config key; the key never appears in
a message or a log line.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from flocknode.config import ENV_PASSWORD, ENV_PRIVATE_KEY, LOCAL_CHAIN_ID, NodeConfig
from flocknode.errors import ConfigError, KeyFileError
from flocknode.fsutil import atomic_write_text


def create_keystore(path: Path, password: str) -> str:
    """Create a new random wallet encrypted with ``password``; return its address."""
    if Path(path).exists():
        raise KeyFileError(str(path), "", "keystore already exists; refusing to overwrite it")
    acct = Account.create()
    blob = Account.encrypt(acct.key, password)
    atomic_write_text(path, json.dumps(blob), mode=0o600)
    return str(acct.address)


def exposed_mode(path: Path, environ: Mapping[str, str] | None = None) -> int | None:
    """The mode of a secret file that group or others can access, else None.

    A systemd credential (a file under ``$CREDENTIALS_DIRECTORY``) is exempt:
    systemd lets only the unit's user read it, through an ACL whose mask shows
    in the group bits of its mode.
    """
    environ = os.environ if environ is None else environ
    creds = environ.get("CREDENTIALS_DIRECTORY")
    if creds and Path(path).resolve().is_relative_to(Path(creds).resolve()):
        return None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None  # reading it reports the problem
    return mode if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def read_password(cfg: NodeConfig, environ: Mapping[str, str] | None = None) -> str:
    """The wallet password: from ``chain.password_file`` (which, like the key files,
    must not be accessible by other users) or the environment."""
    environ = os.environ if environ is None else environ
    if cfg.chain.password_file:
        pw_path = cfg.path(cfg.chain.password_file)
        loose = exposed_mode(pw_path, environ)
        if loose is not None:
            raise KeyFileError(
                str(pw_path),
                "chain.password_file",
                f"password file is accessible by other users (mode {loose:o}); "
                f"run: chmod 600 {pw_path}",
            )
        try:
            return pw_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ConfigError(
                cfg.source, "chain.password_file", f"cannot read {pw_path}: {e.strerror}"
            ) from None
    if ENV_PASSWORD in environ:
        return environ[ENV_PASSWORD]
    raise ConfigError(
        cfg.source,
        "chain.password_file",
        f"no wallet password: set chain.password_file or {ENV_PASSWORD}",
    )


def load_wallet(cfg: NodeConfig, environ: Mapping[str, str] | None = None) -> LocalAccount:
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_PRIVATE_KEY)
    if raw:
        if cfg.chain.chain_id != LOCAL_CHAIN_ID:
            raise ConfigError(
                ENV_PRIVATE_KEY,
                "chain.chain_id",
                f"a raw private key is accepted only on a local chain (chain id "
                f"{LOCAL_CHAIN_ID}), this config says {cfg.chain.chain_id}; use a keystore",
            )
        try:
            acct: LocalAccount = Account.from_key(raw.strip())
        except Exception:
            raise ConfigError(ENV_PRIVATE_KEY, "", "not a valid hex private key") from None
        return acct
    path = cfg.path(cfg.chain.keystore)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(
            str(path),
            "chain.keystore",
            "keystore file not found (create one with 'flocknode init --new-wallet')",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(str(path), "chain.keystore", f"cannot read keystore: {e}") from None
    try:
        blob = json.loads(text)
        if not isinstance(blob, dict) or "crypto" not in {k.lower() for k in blob}:
            raise ValueError
    except ValueError:
        raise KeyFileError(
            str(path), "chain.keystore", "not an encrypted keystore (v3 JSON)"
        ) from None
    password = read_password(cfg, environ)
    try:
        key = Account.decrypt(blob, password)
    except ValueError as e:
        if "MAC mismatch" in str(e):
            raise ConfigError(
                str(path), "chain.password_file", "wrong password for this keystore"
            ) from None
        raise KeyFileError(str(path), "chain.keystore", "malformed keystore") from None
    except Exception:
        raise KeyFileError(str(path), "chain.keystore", "malformed keystore") from None
    acct = Account.from_key(key)
    return acct
