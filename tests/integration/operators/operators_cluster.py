"""One real cluster shared by the operator tests (SIGTERM, status page, /metrics, doctor, logs).

anvil + 4 ``flocknode run`` processes with their HTTP endpoints. One node,
``KEYSTORE_NODE``, runs like an operator's: its wallet in an encrypted keystore
with a password file (no raw key in the environment), at debug level with
py-libp2p at debug too, so the log-secrets test has a node that handled every
kind of key material. Its secrets are collected in ``Secrets``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from flocknode.cluster.launcher import ClusterState, NodeInfo, _alive, _reap, start_node
from flocknode.config import ENV_PRIVATE_KEY
from flocknode.fsutil import atomic_write_text
from flocknode.identity import DataDir, load_box_key, load_peer_key
from tests.integration.rounds.harness import Harness

KEYSTORE_NODE = "node-3"
PASSWORD = "correct horse battery staple 7"


@dataclass(frozen=True)
class Secrets:
    wallet_key: bytes
    password: str
    peer_seed: bytes
    box_secret: bytes


class OperatorCluster(Harness):
    """The rounds harness plus: a keystore node, SIGTERM with timing, doctor runs."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__(state)
        self.secrets = self._make_keystore_node(state.node(KEYSTORE_NODE))
        self.stop_seconds: list[tuple[str, str, float]] = []  # (node, phase, seconds)

    def _make_keystore_node(self, n: NodeInfo) -> Secrets:
        d = Path(n.data_dir)
        keystore = d / "keys" / "wallet.json"
        atomic_write_text(
            keystore, json.dumps(Account.encrypt(bytes.fromhex(n.key[2:]), PASSWORD)), mode=0o600
        )
        atomic_write_text(d / "wallet-password", PASSWORD + "\n", mode=0o600)
        cfg = d / "node.toml"
        text = cfg.read_text()
        text = text.replace('password_file = ""', 'password_file = "wallet-password"')
        text = text.replace('level = "info"', 'level = "debug"')
        atomic_write_text(cfg, text, mode=0o600)
        layout = DataDir(d)
        return Secrets(
            wallet_key=bytes.fromhex(n.key[2:]),
            password=PASSWORD,
            peer_seed=load_peer_key(layout.peer_key).seed(),
            box_secret=load_box_key(layout.box_key).secret(),
        )

    def start(self, *names: str) -> None:
        for name in names or [n.name for n in self.state.nodes]:
            if name == KEYSTORE_NODE:
                self._start_keystore_node(self.state.node(name))
            else:
                start_node(self.state, name)

    def _start_keystore_node(self, n: NodeInfo) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOCKNODE_")}
        assert ENV_PRIVATE_KEY not in env
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "flocknode.cli", "--log-module", "libp2p=debug"]
        cmd += ["run", "-c", str(Path(n.data_dir) / "node.toml")]
        with open(Path(n.data_dir) / "node.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        n.pid = proc.pid
        self.state.save()

    def pause(self, name: str) -> None:
        """SIGSTOP ``name`` (``terminate(..., resume=True)`` delivers SIGTERM and continues it)."""
        os.kill(self.state.node(name).pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT ``name``."""
        os.kill(self.state.node(name).pid, signal.SIGCONT)

    def terminate(self, name: str, phase: str, timeout: float, resume: bool = False) -> float:
        """SIGTERM ``name``; the seconds until it exited (inf if it had to be killed)."""
        n = self.state.node(name)
        assert n.pid and _alive(n.pid), f"{name} is not running"
        t0 = time.monotonic()
        os.kill(n.pid, signal.SIGTERM)
        if resume:
            os.kill(n.pid, signal.SIGCONT)
        _reap(n.pid, timeout)
        took = time.monotonic() - t0
        if _alive(n.pid):
            os.kill(n.pid, signal.SIGKILL)
            _reap(n.pid, 5.0)
            took = float("inf")
        self.stop_seconds.append((name, phase, took))
        return took

    def wait_up(self, name: str, since: float, timeout: float = 120) -> None:
        """Wait until ``name`` (started at wall time ``since``) writes its status file."""
        path = self.state.node(name).layout.status_file

        def fresh() -> bool:
            try:
                return path.stat().st_mtime > since
            except OSError:
                return False

        self.wait(f"{name} to come up", fresh, timeout, poll=0.25)

    def log_text(self, name: str) -> str:
        return self.state.node(name).layout.log_file.read_text(errors="replace")

    def url(self, name: str) -> str:
        return self.state.node(name).http_url
