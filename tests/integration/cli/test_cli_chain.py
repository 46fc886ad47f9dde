"""The README participant flow on a real anvil: task create, init, register, stake, status."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.cli import main
from flocknode.learning.settings import TaskSettings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_participant_flow(
    anvil_chain: AnvilChain,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rpc = anvil_chain.rpc_url
    pw = tmp_path / "pw"
    pw.write_text("a long password\n")
    pw.chmod(0o600)
    node = tmp_path / "node"
    monkeypatch.delenv("FLOCKNODE_PRIVATE_KEY", raising=False)
    rc, out, _ = run(
        capsys,
        "init",
        "--data-dir",
        str(node),
        "--rpc",
        rpc,
        "--new-wallet",
        "--password-file",
        str(pw),
        "--json",
    )
    assert rc == 0
    wallet = json.loads(out)["wallet"]

    # the task creator deploys with a dev key (local chain) and funds the wallet
    monkeypatch.setenv("FLOCKNODE_PRIVATE_KEY", anvil_chain.private_keys[0])
    settings_file = tmp_path / "task-settings.json"
    rc, out, err = run(
        capsys,
        "task",
        "create",
        "--rpc",
        rpc,
        "--fund",
        wallet,
        "--reward-pool",
        "50",
        "--rule",
        "median",
        "--min-stake",
        "10",
        "--settings-out",
        str(settings_file),
        "--json",
    )
    assert rc == 0, err
    created = json.loads(out)
    assert "deploying FlockTask" in err  # progress lines go to stderr
    published = settings_file.read_bytes()
    assert "0x" + hashlib.sha256(published).hexdigest() == created["config_hash"]
    assert TaskSettings.from_canonical_json(published).aggregation.rule == "median"
    monkeypatch.delenv("FLOCKNODE_PRIVATE_KEY")

    cfg = node / "node.toml"
    cfg.write_text(cfg.read_text().replace('task = ""', f'task = "{created["task"]}"'))
    rc, out, err = run(capsys, "status", "-c", str(cfg), "--json")
    assert rc == 0, err
    assert json.loads(out)["registered"] is False

    rc, _, err = run(capsys, "register", "-c", str(cfg))
    assert rc == 0, err
    assert "register: mined in block" in err
    rc, _, err = run(capsys, "register", "-c", str(cfg))
    assert rc == 1
    assert err.strip().splitlines()[-1] == (
        f"flocknode: error: wallet {wallet} is already registered in this task"
    )

    rc, _, err = run(capsys, "stake", "-c", str(cfg), "2000")
    assert rc == 1 and "holds 1000 tokens" in err
    rc, _, err = run(capsys, "stake", "-c", str(cfg), "25.5")
    assert rc == 0, err
    rc, out, _ = run(capsys, "status", "-c", str(cfg), "--json")
    s = json.loads(out)
    assert s["registered"] and s["eligible_now"]
    assert s["stake"] == 25_500_000_000_000_000_000
    assert s["multiaddrs"] == ["/ip4/127.0.0.1/tcp/4001"]
    assert s["reward_pool"] == 50 * 10**18
    assert s["round"] == 0

    rc, _, err = run(capsys, "unstake", "-c", str(cfg), "5")
    assert rc == 0, err
    rc, out, _ = run(capsys, "status", "-c", str(cfg))
    assert "unstaking     5" in out
    assert "node          not running" in out

    # The settings are published on chain; a node whose copy differs refuses to
    # start and names the setting.
    client = TaskClient(ChainConnection(rpc, None), created["task"])
    assert client.published_settings() == published
    doc = json.loads(published)
    doc["training"]["learning_rate"] = 0.5
    mine = tmp_path / "my-settings.json"
    mine.write_bytes(TaskSettings.from_dict(doc).canonical_json())
    cfg.write_text(cfg.read_text().replace('settings = ""', f'settings = "{mine}"'))
    rc, _, err = run(capsys, "run", "-c", str(cfg))
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("flocknode: error: settings differ")
    assert "training.learning_rate: task 0.02, node 0.5" in err


def test_wrong_chain_and_unreachable_rpc_are_one_line(
    anvil_chain: AnvilChain,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOCKNODE_PRIVATE_KEY", anvil_chain.private_keys[1])
    cfg = tmp_path / "node.toml"
    task = "0x" + "12" * 20
    cfg.write_text(f'[chain]\nrpc_url = "{anvil_chain.rpc_url}"\ntask = "{task}"\n')
    rc, _, err = run(capsys, "status", "-c", str(cfg))
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "no FlockTask contract" in err or "no contract" in err, err
    cfg.write_text(f'[chain]\nrpc_url = "http://127.0.0.1:9"\ntask = "{task}"\n')
    rc, _, err = run(capsys, "status", "-c", str(cfg))
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "cannot reach the chain" in err, err
