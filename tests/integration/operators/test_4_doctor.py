"""``flocknode doctor`` on good configs (a running node, a stopped one) and on each broken
one, against the real cluster: every failure names its check and the fix."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.cluster.launcher import free_ports
from flocknode.commands.doctor import Check, Doctor
from flocknode.config import ENV_PRIVATE_KEY
from flocknode.fsutil import atomic_write_text
from flocknode.identity import DataDir, load_or_create_box_key, load_or_create_peer_key
from tests.integration.operators.operators_cluster import KEYSTORE_NODE, PASSWORD, OperatorCluster

pytestmark = pytest.mark.integration


def results(config: Path, **kw: object) -> dict[str, Check]:
    return {c.name: c for c in Doctor(config, peer_timeout=10.0, **kw).run()}  # type: ignore[arg-type]


def failed(checks: dict[str, Check]) -> list[str]:
    return [n for n, c in checks.items() if c.status == "FAIL"]


@pytest.fixture(scope="module")
def base(
    settled: OperatorCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorCluster, Path]]:
    """A copy of the keystore node's data dir, with that node stopped (one peer id, one host)."""
    h = settled
    h.terminate(KEYSTORE_NODE, "after the rounds", 15.0)
    src = Path(h.state.node(KEYSTORE_NODE).data_dir)
    dst = tmp_path_factory.mktemp("doctor") / "node"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("store", "status.json", "node.log"))
    yield h, dst


@pytest.fixture
def copy(base: tuple[OperatorCluster, Path], tmp_path: Path) -> Callable[..., Path]:
    """A fresh copy of the base node dir; ``edit(old, new)`` pairs rewrite its node.toml."""

    def make(*edits: tuple[str, str]) -> Path:
        d = tmp_path / f"node-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(base[1], d)
        cfg = d / "node.toml"
        text = cfg.read_text()
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new)
        atomic_write_text(cfg, text, mode=0o600)
        return cfg

    return make


def test_good_configs_pass(
    base: tuple[OperatorCluster, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, d = base
    # a stopped node: its ports are free, and a peer answers a real libp2p dial
    checks = results(d / "node.toml")
    assert not failed(checks), checks
    assert "connected to" in checks["peers"].detail
    # a running node (raw key from the environment, as the cluster runs it)
    n = h.state.node("node-0")
    monkeypatch.setenv(ENV_PRIVATE_KEY, n.key)
    checks = results(Path(n.data_dir) / "node.toml")
    assert not failed(checks), checks
    assert "held by the running node" in checks["listen"].detail
    assert "peer(s) connected" in checks["peers"].detail


def test_cli_exit_codes_and_lines(
    base: tuple[OperatorCluster, Path], copy: Callable[..., Path]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOCKNODE_")}
    cmd = [sys.executable, "-m", "flocknode.cli", "doctor", "--peer-timeout", "10", "-c"]
    good = subprocess.run(
        [*cmd, str(base[1] / "node.toml")], env=env, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert (
        sum(line.startswith("PASS ") for line in lines) == 11 and lines[-1] == "all checks passed"
    )
    bad = copy(('rpc_url = "', 'rpc_url = "http://127.0.0.1:9/x'))
    out = subprocess.run([*cmd, str(bad), "--json"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert not doc["ok"] and doc["checks"][2]["status"] == "FAIL" and doc["checks"][2]["fix"]


def test_broken_config_file(copy: Callable[..., Path]) -> None:
    checks = results(copy(("[chain]", "[chain]\nprivate_key = 'x'")))
    assert failed(checks) == ["config"]
    assert "unknown key" in checks["config"].detail and checks["config"].fix
    assert all(c.status == "SKIP" for n, c in checks.items() if n != "config")


def test_key_permissions_and_wrong_password(copy: Callable[..., Path]) -> None:
    cfg = copy()
    (cfg.parent / "keys" / "peer.key").chmod(0o644)
    checks = results(cfg)
    assert failed(checks) == ["keys"]
    assert checks["keys"].fix == f"chmod 600 {cfg.parent / 'keys' / 'peer.key'}"
    cfg = copy()
    (cfg.parent / "wallet-password").chmod(0o640)
    assert results(cfg)["keys"].fix == f"chmod 600 {cfg.parent / 'wallet-password'}"
    cfg = copy()
    atomic_write_text(cfg.parent / "wallet-password", "not " + PASSWORD, mode=0o600)
    checks = results(cfg)
    assert failed(checks) == ["keys"] and "wrong password" in checks["keys"].detail
    assert "password" in checks["keys"].fix


def test_rpc_down_and_wrong_chain(copy: Callable[..., Path]) -> None:
    (port,) = free_ports(1)
    checks = results(copy(('rpc_url = "http://127.0.0.1:', f'rpc_url = "http://127.0.0.1:{port}#')))
    assert failed(checks) == ["rpc"], checks
    assert "chain.rpc_url" in checks["rpc"].fix
    checks = results(copy(("chain_id = 31337", "chain_id = 5")))
    assert failed(checks) == ["rpc"] and "chain 5" in checks["rpc"].detail, checks


def test_wrong_task_and_settings(
    base: tuple[OperatorCluster, Path], copy: Callable[..., Path], tmp_path: Path
) -> None:
    h = base[0]
    nobody = Account.create().address
    checks = results(copy((f'task = "{h.state.task}"', f'task = "{nobody}"')))
    assert failed(checks) == ["task"] and "no FlockTask contract" in checks["task"].detail
    assert "chain.task" in checks["task"].fix
    doc = json.loads(Path(h.state.settings_file).read_text())
    doc["training"]["learning_rate"] = doc["training"].get("learning_rate", 0.01) * 2
    other = tmp_path / "other-settings.json"
    other.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    checks = results(copy((h.state.settings_file, str(other))))
    assert failed(checks) == ["settings"], checks
    detail = checks["settings"].detail  # names the setting when the task published its own
    assert "learning_rate" in detail or "differs from the task's configHash" in detail, detail


def test_bad_data_is_named(copy: Callable[..., Path], tmp_path: Path) -> None:
    bad = tmp_path / "mine.csv"
    bad.write_text("p0,label\n1,3\n")  # digits-mlp needs p0..p63
    checks = results(copy(('\npath = "', f'\npath = "{bad}" # was ')))
    assert failed(checks) == ["data"], checks
    assert checks["data"].detail == f"{bad}: no column 'p1' (the task needs it)"
    assert "[data] path" in checks["data"].fix


def test_unregistered_unstaked_and_poor_wallet(
    base: tuple[OperatorCluster, Path], copy: Callable[..., Path]
) -> None:
    h = base[0]
    cfg = copy()
    layout = DataDir(cfg.parent)
    for f in (layout.peer_key, layout.box_key):
        f.unlink()
    peer, box = load_or_create_peer_key(layout.peer_key), load_or_create_box_key(layout.box_key)
    acct = Account.create()
    atomic_write_text(layout.keystore, json.dumps(Account.encrypt(acct.key, PASSWORD)), mode=0o600)
    w3 = Web3(Web3.HTTPProvider(h.state.rpc_url))
    w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**18)])  # type: ignore[arg-type]

    checks = results(cfg)
    assert "stake" in failed(checks) and "not registered" in checks["stake"].detail
    assert checks["stake"].fix == f"flocknode register -c {cfg}"
    assert checks["addresses"].status == "SKIP" and checks["peers"].status == "SKIP"

    conn = ChainConnection(h.state.rpc_url, acct, expected_chain_id=h.state.chain_id)
    TaskClient(conn, h.state.task).register_node(peer, box, ["/ip4/127.0.0.1/tcp/1"])
    checks = results(cfg)
    assert failed(checks) == ["stake"] and "below the task minimum 10" in checks["stake"].detail
    assert checks["stake"].fix == f"flocknode stake -c {cfg} 10"

    w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**12)])  # type: ignore[arg-type]
    checks = results(cfg, rounds=5)
    assert "gas" in failed(checks) and "for 5 round(s)" in checks["gas"].detail
    assert checks["gas"].fix.startswith("send at least ") and acct.address in checks["gas"].fix


def test_listen_address_taken_and_addresses_changed(copy: Callable[..., Path]) -> None:
    cfg = copy()
    text = cfg.read_text()
    port = int(text.split("/tcp/")[1].split('"')[0])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the node's old conns linger
        s.bind(("127.0.0.1", port))
        s.listen()
        checks = results(cfg)
    assert failed(checks) == ["listen"], checks
    assert f"port {port}" in checks["listen"].fix
    (other,) = free_ports(1)
    checks = results(copy(("announce = []", f'announce = ["/ip4/127.0.0.1/tcp/{other}"]')))
    assert failed(checks) == ["addresses"], checks
    assert "flocknode run" in checks["addresses"].fix
