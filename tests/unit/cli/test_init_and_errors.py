"""`flocknode init` and the CLI's contract for bad input: one line, exit code 2."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flocknode.cli import main
from flocknode.config import load_config


def test_init_creates_keys_and_a_loadable_commented_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "node"
    assert main(["init", "--data-dir", str(d), "--json", "--port", "4101"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["peer_id"].startswith("12D3Koo")
    for f in ("keys/peer.key", "keys/box.key", "node.toml"):
        assert (d / f).stat().st_mode & 0o777 == 0o600
    text = (d / "node.toml").read_text()
    assert text.count("\n# ") > 10  # commented for a person
    cfg = load_config(d / "node.toml", environ={})
    assert cfg.p2p.listen == ["/ip4/0.0.0.0/tcp/4101"]
    assert cfg.data_path == d
    # a second init refuses to overwrite
    assert main(["init", "--data-dir", str(d)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_init_new_wallet_needs_a_password_file_others_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOCKNODE_WALLET_PASSWORD", raising=False)
    assert main(["init", "--data-dir", str(tmp_path / "a"), "--new-wallet"]) == 2
    assert "needs a password" in capsys.readouterr().err
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    pw.chmod(0o644)
    assert (
        main(
            ["init", "--data-dir", str(tmp_path / "b"), "--new-wallet", "--password-file", str(pw)]
        )
        == 2
    )
    assert f"password file is accessible by other users (mode 644); run: chmod 600 {pw}" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "b" / "keys" / "wallet.json").exists()
    pw.chmod(0o600)
    rc = main(
        ["init", "--data-dir", str(tmp_path / "b"), "--new-wallet", "--password-file", str(pw)]
    )
    assert rc == 0
    ks = tmp_path / "b" / "keys" / "wallet.json"
    assert ks.stat().st_mode & 0o777 == 0o600
    assert "crypto" in json.loads(ks.read_text())


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLOCKNODE_")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "flocknode.cli", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )


def test_bad_input_is_one_line_and_exit_2_never_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[chain]\nrpc_url = "http://127.0.0.1:8545"\nwallet_key = "0x00"\n')
    cases = [
        (["init", "--data-dir", str(tmp_path / "x"), "--rpc", "not-a-url"], {}, "--rpc"),
        (["init", "--data-dir", str(tmp_path / "y"), "--task", "0xzz"], {}, "--task"),
        (["status", "-c", str(bad)], {}, f"{bad}: chain.wallet_key: unknown key"),
        (["status", "-c", str(tmp_path / "missing.toml")], {}, "config file not found"),
    ]
    # the CLI processes run at once (each spends seconds importing)
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        runs = list(pool.map(lambda c: _run(*c[0], env=c[1]), cases))
    for (argv, _env, fragment), r in zip(cases, runs, strict=True):
        assert r.returncode == 2, (argv, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert fragment in lines[0]
        assert "Traceback" not in r.stderr


def test_init_writes_further_settings_through_the_config_model(tmp_path: Path) -> None:
    from flocknode.commands.init import init_data_dir
    from flocknode.errors import ConfigError

    res = init_data_dir(
        tmp_path / "n",
        port=4102,
        settings={
            "data": {"node_index": 3, "num_nodes": 5},
            "http": {"listen": "127.0.0.1:9200"},
            "p2p": {"listen": ["/ip4/127.0.0.1/tcp/4102"]},
        },
    )
    cfg = load_config(res.config, environ={})
    assert (cfg.data.node_index, cfg.data.num_nodes) == (3, 5)
    assert cfg.http.listen == "127.0.0.1:9200"
    assert cfg.p2p.listen == ["/ip4/127.0.0.1/tcp/4102"]
    with pytest.raises(ConfigError, match=r"data\.num_nodes"):  # validated before writing
        init_data_dir(tmp_path / "m", settings={"data": {"num_nodes": 0}})
    assert not (tmp_path / "m").exists()
