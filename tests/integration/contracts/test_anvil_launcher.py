"""flocknode.chain.anvil: starts the pinned anvil on loopback, hands out the dev
accounts, and always stops it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.types import Wei

from flocknode.chain.anvil import (
    AnvilError,
    AnvilOptions,
    anvil_binary,
    rpc_request,
    run_anvil,
)
from flocknode.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_automine_chain_with_funded_dev_accounts() -> None:
    with run_anvil(AnvilOptions(accounts=3)) as chain:
        assert chain.rpc_url.startswith("http://127.0.0.1:")
        assert chain.chain_id == 31337
        assert len(chain.accounts) == len(chain.private_keys) == 3
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        for addr, key in zip(chain.accounts, chain.private_keys, strict=True):
            assert Account.from_key(key).address == addr
            assert w3.eth.get_balance(Web3.to_checksum_address(addr)) == 10_000 * 10**18
        start = w3.eth.block_number
        tx = w3.eth.send_transaction(
            {"from": chain.accounts[0], "to": chain.accounts[1], "value": Wei(1)}
        )
        assert w3.eth.wait_for_transaction_receipt(tx)["blockNumber"] == start + 1
        pid = chain.pid
        assert _alive(pid)
    assert not _alive(pid)


def test_mixed_mining_keeps_producing_blocks() -> None:
    with run_anvil(AnvilOptions(block_time=1, mixed_mining=True, accounts=2)) as chain:
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        first = w3.eth.block_number
        deadline = time.monotonic() + 10
        while w3.eth.block_number < first + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert w3.eth.block_number >= first + 2  # blocks came without any transaction
        tx = w3.eth.send_transaction(
            {"from": chain.accounts[0], "to": chain.accounts[1], "value": Wei(1)}
        )
        assert w3.eth.wait_for_transaction_receipt(tx, timeout=10)["status"] == 1


def test_anvil_is_stopped_when_the_body_raises() -> None:
    pid = 0
    with pytest.raises(RuntimeError, match="boom"), run_anvil(AnvilOptions(accounts=1)) as chain:
        pid = chain.pid
        assert rpc_request(chain.rpc_url, "eth_chainId") == "0x7a69"
        raise RuntimeError("boom")
    assert pid and not _alive(pid)


def test_missing_binary_says_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(AnvilError, match="run make setup"):
        anvil_binary(tmp_path)
    with pytest.raises(AnvilError, match="run make setup"), run_anvil(repo_root=tmp_path):
        pass


def test_cluster_up_without_anvil_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("flocknode.chain.anvil.ANVIL_RELATIVE", Path("no-such/anvil"))
    code = main(["cluster", "up", "--dir", str(tmp_path / "c"), "--nodes", "2", "--rounds", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("flocknode: error: anvil not found at ") and "Traceback" not in err


def test_start_failure_reports_anvil_output() -> None:
    with (
        pytest.raises(AnvilError, match="exited with code"),
        run_anvil(AnvilOptions(accounts=1, extra_args=("--no-such-flag",))),
    ):
        pass


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="block_time"):
        AnvilOptions(mixed_mining=True)
    with pytest.raises(ValueError, match="block_time"):
        AnvilOptions(block_time=0)
    with pytest.raises(ValueError, match="accounts"):
        AnvilOptions(accounts=0)


def test_anvil_dies_with_a_killed_parent() -> None:
    code = (
        "import time\n"
        "from flocknode.chain.anvil import AnvilOptions, run_anvil\n"
        "with run_anvil(AnvilOptions(accounts=1)) as chain:\n"
        "    print(chain.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()  # no cleanup code runs in the parent
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
