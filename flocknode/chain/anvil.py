"""Start and stop a local anvil chain (the pinned binary from node_modules).

Used by the test fixtures and by the local cluster launcher::

    with run_anvil(AnvilOptions(block_time=1, mixed_mining=True)) as chain:
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        key = chain.private_keys[0]

anvil listens on 127.0.0.1 only (``AnvilOptions.host``: a cluster whose nodes
run in network namespaces gives its bridge's address instead), on a port the
OS picks (``--port 0``; the port is read back from anvil's own start-up line,
so there is no race for a "free" port). The dev accounts are anvil's default
mnemonic accounts; their keys come from ``--config-out``. The process is always
terminated (then killed if it lingers) when the context exits, also on errors
and KeyboardInterrupt.
With ``run_anvil`` started from the main thread on Linux, anvil also gets
SIGTERM if this process dies without cleaning up (SIGKILL, an unhandled
SIGTERM), so no chain is left behind; from another thread that is not done,
because Linux sends the signal when the starting *thread* ends.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import to_checksum_address

from flocknode.errors import FlockError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
LOCAL_CHAIN_ID = 31337
_LISTENING = re.compile(r"Listening on [0-9.]+:(\d+)")


class AnvilError(FlockError, RuntimeError):
    """anvil is missing, did not start, or stopped answering (one line, exit code 1)."""


@dataclass(frozen=True)
class AnvilOptions:
    """How to run anvil. The default is plain automine (one block per tx).

    ``block_time`` (seconds) with ``mixed_mining`` mines transactions at once and
    also keeps producing blocks: what a cluster needs, since automine alone never
    mines the seed block of a round.
    """

    block_time: float | None = None
    mixed_mining: bool = False
    accounts: int = 10
    balance_ether: int = 10_000
    chain_id: int = LOCAL_CHAIN_ID
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"  # a cluster in network namespaces: its bridge's address

    def __post_init__(self) -> None:
        if self.block_time is not None and self.block_time <= 0:
            raise ValueError("block_time must be > 0")
        if self.mixed_mining and self.block_time is None:
            raise ValueError("mixed_mining needs a block_time")
        if not 1 <= self.accounts <= 1000:
            raise ValueError("accounts must be in 1..1000")


@dataclass(frozen=True)
class AnvilChain:
    """A running anvil: where to reach it and the funded dev accounts."""

    rpc_url: str
    port: int
    chain_id: int
    pid: int
    accounts: tuple[str, ...]
    private_keys: tuple[str, ...] = field(repr=False)


def anvil_binary(repo_root: Path = REPO_ROOT) -> Path:
    """The pinned anvil binary, or AnvilError telling how to install it."""
    path = repo_root / ANVIL_RELATIVE
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AnvilError(f"anvil not found at {path}: run make setup")
    return path


def anvil_command(binary: Path, options: AnvilOptions, config_out: Path) -> list[str]:
    cmd = [
        str(binary),
        "--host",
        options.host,
        "--port",
        "0",
        "--accounts",
        str(options.accounts),
        "--balance",
        str(options.balance_ether),
        "--chain-id",
        str(options.chain_id),
        "--config-out",
        str(config_out),
    ]
    if options.block_time is not None:
        cmd += ["--block-time", _format_seconds(options.block_time)]
    if options.mixed_mining:
        cmd.append("--mixed-mining")
    cmd += list(options.extra_args)
    return cmd


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def rpc_request(
    url: str, method: str, params: list[object] | None = None, timeout: float = 5.0
) -> object:
    """One JSON-RPC call with the standard library (no web3 needed)."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    ).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if not isinstance(reply, dict):
        raise AnvilError(f"{method}: malformed reply")
    if "error" in reply:
        raise AnvilError(f"{method}: {reply['error']}")
    return reply.get("result")


@contextmanager
def run_anvil(
    options: AnvilOptions | None = None,
    *,
    startup_timeout: float = 15.0,
    log_path: Path | None = None,
    repo_root: Path = REPO_ROOT,
) -> Iterator[AnvilChain]:
    """Run anvil for the duration of the ``with`` block and yield how to reach it.

    anvil's output goes to ``log_path`` if given, else to a temporary file that
    is removed afterwards.
    """
    options = options or AnvilOptions()
    workdir = Path(tempfile.mkdtemp(prefix="flocknode-anvil-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, chain = spawn_anvil(
            options,
            workdir,
            log_path or workdir / "anvil.log",
            startup_timeout,
            repo_root,
            die_with_parent=True,
        )
        yield chain
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def spawn_anvil(
    options: AnvilOptions,
    workdir: Path,
    log_path: Path,
    startup_timeout: float = 15.0,
    repo_root: Path = REPO_ROOT,
    *,
    die_with_parent: bool = False,
) -> tuple[subprocess.Popen[bytes], AnvilChain]:
    """Start anvil in its own session and wait until it answers; the caller stops it.

    For a chain that outlives the caller (``flocknode cluster up --keep``).
    ``die_with_parent`` (what ``run_anvil`` uses) makes Linux SIGTERM anvil when
    this process dies without cleaning up.
    """
    binary = anvil_binary(repo_root)
    workdir.mkdir(parents=True, exist_ok=True)
    config_out = workdir / "anvil.json"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            anvil_command(binary, options, config_out),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to forward
            preexec_fn=_parent_death_signal() if die_with_parent else None,
        )
    try:
        chain = _wait_ready(proc, log_path, config_out, options, startup_timeout)
    except BaseException:
        _stop(proc)
        raise
    log.info("anvil started pid=%d url=%s", proc.pid, chain.rpc_url)
    return proc, chain


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when this process dies."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_signal


def _wait_ready(
    proc: subprocess.Popen[bytes],
    out_path: Path,
    config_out: Path,
    options: AnvilOptions,
    timeout: float,
) -> AnvilChain:
    deadline = time.monotonic() + timeout
    port: int | None = None
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise AnvilError(f"anvil exited with code {code} at start: {_tail(out_path)}")
        if port is None:
            match = _LISTENING.search(out_path.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
        if port is not None and config_out.exists():
            url = f"http://{options.host}:{port}"
            try:
                chain_id = int(str(rpc_request(url, "eth_chainId", timeout=1.0)), 16)
                keys = _read_keys(config_out)
            except (OSError, ValueError, AnvilError, urllib.error.URLError):
                time.sleep(0.05)
                continue
            if chain_id != options.chain_id:
                raise AnvilError(
                    f"anvil answered with chain id {chain_id}, expected {options.chain_id}"
                )
            return AnvilChain(
                rpc_url=url,
                port=port,
                chain_id=chain_id,
                pid=proc.pid,
                accounts=tuple(to_checksum_address(a) for a, _ in keys),
                private_keys=tuple(k for _, k in keys),
            )
        time.sleep(0.05)
    raise AnvilError(f"anvil did not answer within {timeout:.0f} s: {_tail(out_path)}")


def _read_keys(config_out: Path) -> list[tuple[str, str]]:
    data = json.loads(config_out.read_text())
    accounts = data["available_accounts"]
    keys = data["private_keys"]
    if not accounts or len(accounts) != len(keys):
        raise ValueError("anvil config-out without accounts")
    return list(zip(accounts, keys, strict=True))


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return " | ".join(text[-lines:]) or "(no output)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    log.info("anvil stopped pid=%d", proc.pid)
