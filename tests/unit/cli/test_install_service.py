"""bin/install-service against a temporary root: the README's systemd layout, twice.

The first run creates the directories, keys, wallet, password file, node.toml
and unit with the modes the README asks for; the second run (no flags, no
password) changes no file, mode or timestamp; a later run puts loosened modes
back and keeps an edited node.toml. The virtualenv step is skipped
(--no-install) and this checkout's flocknode runs ``init``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from flocknode.config import load_config
from flocknode.identity.wallet import load_wallet

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "bin" / "install-service"
FLOCKNODE = Path(sys.executable).parent / "flocknode"
TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
FIRST = [
    "--rpc", "https://rpc.example.org/v3/key",
    "--chain-id", "11155111",
    "--task", TASK.lower(),
    "--public-ip", "203.0.113.7",
    "--port", "4011",
]  # fmt: skip


def install(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), "--no-install"]
    cmd += ["--flocknode", str(FLOCKNODE), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under root: (mode, mtime, content hash)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def test_install_service_lays_out_the_readme_and_a_second_run_changes_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(root, *FIRST, stdin="a long wallet password\n")
    assert first.returncode == 0, first.stderr
    etc, state = root / "etc" / "flocknode", root / "var" / "lib" / "flocknode"
    assert mode(etc) == 0o755 and mode(state) == 0o700
    assert mode(etc / "wallet-password") == 0o600
    assert (etc / "wallet-password").read_text() == "a long wallet password\n"
    for key in ("peer.key", "box.key", "wallet.json"):
        assert mode(state / "keys" / key) == 0o600, key
    assert mode(etc / "node.toml") == 0o640  # no secret in it; the service's group reads it
    assert not (state / "node.toml").exists()  # one config, in /etc
    unit = root / "etc" / "systemd" / "system" / "flocknode.service"
    assert unit.read_bytes() == (REPO / "config" / "flocknode.service").read_bytes()
    assert mode(unit) == 0o644
    assert "systemctl daemon-reload (systemd is not running here)" in first.stdout
    assert not (root / "opt").exists()

    # node.toml: the README's layout, and the wallet loads with the password file
    # (paths moved under the temporary root)
    cfg = load_config(etc / "node.toml", environ={})
    assert cfg.data_dir == "/var/lib/flocknode"
    assert (cfg.chain.rpc_url, cfg.chain.chain_id, cfg.chain.task) == (
        "https://rpc.example.org/v3/key",
        11155111,
        TASK,
    )
    assert cfg.chain.keystore == "/var/lib/flocknode/keys/wallet.json"
    assert cfg.chain.password_file == "/etc/flocknode/wallet-password"
    assert cfg.p2p.listen == ["/ip4/0.0.0.0/tcp/4011"]
    assert cfg.announce_addrs() == ["/ip4/203.0.113.7/tcp/4011"]
    moved = load_config(
        etc / "node.toml",
        environ={},
        overrides={
            "chain": {
                "keystore": str(state / "keys" / "wallet.json"),
                "password_file": str(etc / "wallet-password"),
            }
        },
    )
    wallet = load_wallet(moved, environ={}).address
    assert f"wallet {wallet}: fund it with gas" in first.stdout

    before = snapshot(root)
    second = install(root)  # no flags, no password: everything is there
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout and "changed" not in second.stdout
    assert snapshot(root) == before

    # a loosened mode is put back; an edited node.toml is kept
    (etc / "wallet-password").chmod(0o644)
    state.chmod(0o755)
    conf = etc / "node.toml"
    conf.write_text(conf.read_text().replace("keep_rounds = 16", "keep_rounds = 8"))
    third = install(root)
    assert third.returncode == 0, third.stderr
    assert f"set mode 0600 on {etc / 'wallet-password'}" in third.stdout
    assert f"set mode 0700 on {state}" in third.stdout
    assert "2 change(s)" in third.stdout
    assert mode(etc / "wallet-password") == 0o600 and mode(state) == 0o700
    assert load_config(conf, environ={}).store.keep_rounds == 8


def test_install_service_first_run_problems_are_one_line_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    r = install(root, "--rpc", "https://rpc.example.org", stdin="a long wallet password\n")
    assert r.returncode == 2
    assert r.stderr == (
        "install-service: error: first install: --chain-id, --task, --public-ip required\n"
    )
    assert list(root.iterdir()) == []  # checked before anything is written
    short = install(root / "b", *FIRST, stdin="short\n")
    assert short.returncode == 2
    assert "8 characters or more" in short.stderr and "Traceback" not in short.stderr
    assert not (root / "b").exists()
    bad = install(root / "c", *FIRST[:-4], "--public-ip", '1.2.3.4"', stdin="long password 1\n")
    assert bad.returncode == 2
    assert "public_ip: not usable in a TOML string" in bad.stderr
    assert not (root / "c").exists()
