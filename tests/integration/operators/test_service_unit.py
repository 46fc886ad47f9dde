"""config/flocknode.service: systemd's own verifier accepts it, its exposure score is low,
and it says what the issue asks (dedicated user, /var/lib + /etc, password as a
credential, restart on failure, a stop timeout)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[3] / "config" / "flocknode.service"
ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture(autouse=True)
def _needs_systemd_analyze() -> None:
    if ANALYZE is None:
        pytest.fail("systemd-analyze is needed (Debian package systemd: apt-get install systemd)")


def installed_copy(tmp_path: Path) -> Path:
    """The unit as installed, with ExecStart pointing at this checkout's flocknode
    (systemd-analyze verify checks that the program exists)."""
    exe = Path(sys.executable).parent / "flocknode"
    assert exe.exists(), exe
    text = UNIT.read_text().replace("/opt/flocknode/bin/flocknode", str(exe))
    out = tmp_path / "flocknode.service"
    out.write_text(text)
    return out


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    assert ANALYZE is not None
    r = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_exposure_score_stays_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    r = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--threshold=25", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert score is not None, r.stdout[-500:] + r.stderr
    assert r.returncode == 0 and float(score.group(1)) <= 2.5, score.group(0)


def test_the_unit_says_what_operators_need() -> None:
    text = UNIT.read_text()
    d = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert d["User"] == "flocknode" and d["Group"] == "flocknode"
    assert d["ExecStart"] == "/opt/flocknode/bin/flocknode run -c /etc/flocknode/node.toml"
    assert d["StateDirectory"] == "flocknode" and d["ConfigurationDirectory"] == "flocknode"
    assert d["LoadCredential"] == "wallet-password:/etc/flocknode/wallet-password"
    assert "FLOCKNODE_CHAIN_PASSWORD_FILE=%d/wallet-password" in text
    assert "FLOCKNODE_DATA_DIR=/var/lib/flocknode" in text
    assert "password" not in d["ExecStart"].lower()
    assert d["Restart"] == "on-failure" and d["RestartPreventExitStatus"] == "2"
    assert d["KillSignal"] == "SIGTERM" and 10 <= int(d["TimeoutStopSec"]) <= 30
    assert d["NoNewPrivileges"] == "true" and d["ProtectSystem"] == "strict"
    assert d["CapabilityBoundingSet"] == ""


def test_the_units_environment_loads_the_readme_layout(tmp_path: Path) -> None:
    """The README's layout under the unit's environment: config in etc/, state in
    var/lib/, the password only in the credentials directory (%d)."""
    from flocknode.commands.init import init_data_dir
    from flocknode.config import load_config
    from flocknode.identity.wallet import load_wallet

    etc, state, creds = tmp_path / "etc", tmp_path / "var-lib", tmp_path / "credentials"
    for d in (etc, state, creds):
        d.mkdir()
    (etc / "wallet-password").write_text("a long enough password\n")
    (etc / "wallet-password").chmod(0o600)  # the README's umask 077
    res = init_data_dir(state, new_wallet=True, password_file=etc / "wallet-password")
    text = res.config.read_text()
    text = text.replace('data_dir = "."', f'data_dir = "{state}"')
    text = text.replace('keystore = "keys/wallet.json"', f'keystore = "{state}/keys/wallet.json"')
    (etc / "node.toml").write_text(text)
    res.config.unlink()
    # what systemd does: copy the credential, set the unit's Environment= lines
    (creds / "wallet-password").write_text((etc / "wallet-password").read_text())
    (creds / "wallet-password").chmod(0o440)  # an ACL mask shows as group bits
    (etc / "wallet-password").unlink()  # the node must not need the original
    env = {}
    for line in re.findall(r"^Environment=(\S+)$", UNIT.read_text(), re.M):
        key, _, value = line.partition("=")
        env[key] = value.replace("%d", str(creds)).replace("/var/lib/flocknode", str(state))
    env["CREDENTIALS_DIRECTORY"] = str(creds)  # systemd sets it for the unit
    cfg = load_config(etc / "node.toml", environ=env)
    assert cfg.data_path == state
    assert load_wallet(cfg, environ=env).address == res.wallet
