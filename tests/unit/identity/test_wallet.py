"""Wallet loading: keystore + password, raw key only from env on a local chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from flocknode.config import load_config
from flocknode.errors import ConfigError, KeyFileError
from flocknode.identity.wallet import load_wallet

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def make_keystore(path: Path, password: str) -> str:
    acct = Account.from_key(KEY)
    # a cheap scrypt work factor keeps the test fast; the CLI uses the default
    path.write_text(json.dumps(Account.encrypt(acct.key, password, iterations=2)))
    return str(acct.address)


def cfg_for(tmp_path: Path, extra: str = "", chain_id: int = 31337):  # type: ignore[no-untyped-def]
    p = tmp_path / "node.toml"
    p.write_text(f'[chain]\nchain_id = {chain_id}\nkeystore = "w.json"\n{extra}')
    return load_config(p, environ={})


def test_keystore_with_password_file_and_env(tmp_path: Path) -> None:
    addr = make_keystore(tmp_path / "w.json", "pw-123456")
    (tmp_path / "pw").write_text("pw-123456\n")
    (tmp_path / "pw").chmod(0o600)
    assert load_wallet(cfg_for(tmp_path, 'password_file = "pw"\n'), environ={}).address == addr
    env = {"FLOCKNODE_WALLET_PASSWORD": "pw-123456"}
    assert load_wallet(cfg_for(tmp_path), environ=env).address == addr


def test_wrong_password_missing_and_malformed_keystore(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    with pytest.raises(KeyFileError, match=r"w\.json: chain\.keystore: keystore file not found"):
        load_wallet(cfg, environ={"FLOCKNODE_WALLET_PASSWORD": "x"})
    (tmp_path / "w.json").write_text("{not json")
    with pytest.raises(KeyFileError, match="not an encrypted keystore"):
        load_wallet(cfg, environ={"FLOCKNODE_WALLET_PASSWORD": "x"})
    make_keystore(tmp_path / "w.json", "right-pw")
    with pytest.raises(ConfigError, match=r"chain\.password_file: wrong password"):
        load_wallet(cfg, environ={"FLOCKNODE_WALLET_PASSWORD": "wrong"})
    with pytest.raises(ConfigError, match="no wallet password"):
        load_wallet(cfg, environ={})
    cfg = cfg_for(tmp_path, 'password_file = "missing-pw"\n')
    with pytest.raises(ConfigError, match=r"chain\.password_file: cannot read"):
        load_wallet(cfg, environ={})


def test_raw_key_only_from_env_and_only_on_a_local_chain(tmp_path: Path) -> None:
    env = {"FLOCKNODE_PRIVATE_KEY": KEY}
    acct = load_wallet(cfg_for(tmp_path), environ=env)
    assert acct.address == Account.from_key(KEY).address
    with pytest.raises(ConfigError, match="only on a local chain") as ei:
        load_wallet(cfg_for(tmp_path, chain_id=1), environ=env)
    assert KEY[2:] not in str(ei.value)
    with pytest.raises(ConfigError, match="not a valid hex private key") as ei:
        load_wallet(cfg_for(tmp_path), environ={"FLOCKNODE_PRIVATE_KEY": "0xnothex"})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_password_file_permissions_refused_like_key_files(tmp_path: Path, mode: int) -> None:
    """A password file that group or others can access is refused in one line naming it."""
    make_keystore(tmp_path / "w.json", "pw-123456")
    pw = tmp_path / "pw"
    pw.write_text("pw-123456\n")
    pw.chmod(mode)
    cfg = cfg_for(tmp_path, 'password_file = "pw"\n')
    with pytest.raises(KeyFileError) as ei:
        load_wallet(cfg, environ={})
    assert str(ei.value) == (
        f"{pw}: chain.password_file: password file is accessible by other users "
        f"(mode {mode:o}); run: chmod 600 {pw}"
    )
    assert "\n" not in str(ei.value) and "pw-123456" not in str(ei.value)
    pw.chmod(0o600)
    assert load_wallet(cfg, environ={}).address == Account.from_key(KEY).address
    pw.chmod(0o400)
    assert load_wallet(cfg, environ={}).address == Account.from_key(KEY).address


def test_password_file_permissions_systemd_credential_is_exempt(tmp_path: Path) -> None:
    """systemd grants the unit's user read access to a credential with an ACL, whose
    mask shows in the group bits: a file under $CREDENTIALS_DIRECTORY is accepted."""
    make_keystore(tmp_path / "w.json", "pw-123456")
    creds = tmp_path / "creds"
    creds.mkdir()
    pw = creds / "wallet-password"
    pw.write_text("pw-123456\n")
    pw.chmod(0o440)
    cfg = cfg_for(tmp_path, f'password_file = "{pw}"\n')
    with pytest.raises(KeyFileError, match="accessible by other users"):
        load_wallet(cfg, environ={})
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert load_wallet(cfg, environ=env).address == Account.from_key(KEY).address
    outside = tmp_path / "pw"
    outside.write_text("pw-123456\n")
    outside.chmod(0o644)
    cfg = cfg_for(tmp_path, 'password_file = "pw"\n')
    with pytest.raises(KeyFileError, match="accessible by other users"):
        load_wallet(cfg, environ=env)
