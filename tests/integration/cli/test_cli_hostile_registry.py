"""A task whose registry holds junk: `status`, `doctor` and a node start still work.

Registrants stored multiaddrs that are not UTF-8 and text that is not a
multiaddr (hand-built calldata: ``bytes`` in the ``string[]`` slot). Before
the registry read was made defensive, every one of these raised
UnicodeDecodeError: a node could not start, not even after a restart.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector
from web3 import HTTPProvider, Web3

from flocknode.chain.anvil import AnvilChain
from flocknode.cli import main
from flocknode.config import load_config
from flocknode.identity import BoxKey, PeerKey, sign_registration
from flocknode.learning import DigitsMLP, write_shards
from flocknode.node import FlockNode, prepare
from flocknode.status import NodeStatus

pytestmark = pytest.mark.integration

REGISTER = function_signature_to_4byte_selector("register(bytes,bytes32,string[],bytes)")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_junk(chain: AnvilChain, task: str, index: int, multiaddrs: list[bytes]) -> str:
    """Register dev account ``index`` (valid peer signature) with raw multiaddr bytes."""
    w3 = Web3(HTTPProvider(chain.rpc_url))
    wallet = chain.accounts[index]
    peer, box = PeerKey.generate(), BoxKey.generate().public_bytes
    sig = sign_registration(peer, chain.chain_id, task, wallet, box)
    args = encode(
        ["bytes", "bytes32", "bytes[]", "bytes"], [peer.peer_id.to_bytes(), box, multiaddrs, sig]
    )
    tx: Any = {"from": wallet, "to": task, "data": "0x" + (REGISTER + args).hex()}
    assert w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx))["status"] == 1
    return wallet


def test_finding1_status_doctor_and_node_start_with_junk_registrations(
    anvil_chain: AnvilChain,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rpc = anvil_chain.rpc_url
    node = tmp_path / "node"
    port = free_port()
    rc, _, err = run(capsys, "init", "--data-dir", str(node), "--rpc", rpc, "--port", str(port))
    assert rc == 0, err
    wallet = anvil_chain.accounts[1]

    monkeypatch.setenv("FLOCKNODE_PRIVATE_KEY", anvil_chain.private_keys[0])
    rc, out, err = run(
        capsys, "task", "create", "--rpc", rpc, "--fund", wallet, "--min-stake", "10", "--json"
    )
    assert rc == 0, err
    task = json.loads(out)["task"]

    cfg = node / "node.toml"
    text = cfg.read_text().replace('task = ""', f'task = "{task}"')
    text = text.replace(f"/ip4/0.0.0.0/tcp/{port}", f"/ip4/127.0.0.1/tcp/{port}")
    shards = write_shards(DigitsMLP(), tmp_path / "data", 1, "iid")  # the participant's files
    text = text.replace('\npath = ""', f'\npath = "{shards.nodes[0]}"')
    cfg.write_text(text.replace("enabled = true", "enabled = false"))  # no HTTP port needed
    monkeypatch.setenv("FLOCKNODE_PRIVATE_KEY", anvil_chain.private_keys[1])
    rc, _, err = run(capsys, "register", "-c", str(cfg))
    assert rc == 0, err
    rc, _, err = run(capsys, "stake", "-c", str(cfg), "20")
    assert rc == 0, err

    # the attackers: invalid UTF-8, and UTF-8 that is not a multiaddr
    register_junk(anvil_chain, task, 2, [b"/ip4/127.0.0.1/tcp/\xff\xfe"])
    register_junk(anvil_chain, task, 3, [b"\xc0\xaf", b"/not/a/multiaddr"])

    rc, out, err = run(capsys, "status", "-c", str(cfg), "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["registered"] and s["participants"] == 3

    rc, out, err = run(capsys, "doctor", "-c", str(cfg), "--json", "--peer-timeout", "1")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert len(checks) == 11, err
    assert all("unexpected error" not in c["detail"] for c in checks.values()), checks
    for name in ("config", "keys", "rpc", "task", "settings", "data", "stake", "addresses"):
        assert checks[name]["status"] == "PASS", checks[name]
    # the registry was read: nobody else is a usable, staked member
    assert checks["peers"]["detail"] == "no other staked participant is registered in the task"

    # the node starts with this chain state (and so restarts after any crash)
    prep = prepare(load_config(cfg))

    async def start_and_stop() -> tuple[FlockNode, NodeStatus]:
        flock = FlockNode(prep)
        async with trio.open_nursery() as nursery:
            await nursery.start(flock.run)
            status = flock.status()  # the status page's document, read while running
            await flock.stop(nursery)
        return flock, status

    flock, status = trio.run(start_and_stop)
    registry = flock.membership.registry
    assert [m.wallet for m in registry.members] == [wallet]
    assert dict(registry.ignored) == {
        "multiaddr_not_utf8": 2,
        "multiaddr_invalid": 1,
        "no_valid_multiaddr": 2,
    }
    assert status.registry_ignored["no_valid_multiaddr"] == 2

    # a node whose task worker cannot start takes no role (it would be slashed
    # for idling): one line naming the worker, exit code 2, no traceback
    monkeypatch.setenv("FLOCKNODE_COMPUTE_ISOLATION", "process")
    monkeypatch.setenv("FLOCKNODE_COMPUTE_MEMORY_MB", "256")
    rc, _, err = run(capsys, "run", "-c", str(cfg))
    assert rc == 2, err
    # (256 MB stops it building the initial model or, at the limit, warming up)
    assert "flocknode: error: the task worker could not " in err, err
    assert "Traceback" not in err
