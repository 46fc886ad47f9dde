"""The layer rules in pyproject.toml ([tool.importlinter]) hold, and break on a crossing import.

``make lint`` runs ``lint-imports``; these tests pin that the contracts exist, that
the tree keeps them, and that a forbidden import (direct or through another
module) makes the command fail, so the check cannot pass vacuously.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# What issue 12 asks: lower layer -> the layers it must not import.
RULES = {
    "flocknode.aggregation": {"flocknode.p2p", "flocknode.chain", "flocknode.rounds"},
    "flocknode.crypto": {"flocknode.p2p", "flocknode.chain", "flocknode.rounds"},
    "flocknode.learning": {"flocknode.p2p", "flocknode.chain", "flocknode.rounds"},
    "flocknode.p2p": {"flocknode.rounds"},
    "flocknode.chain": {"flocknode.rounds"},
    "flocknode.store": {"flocknode.p2p"},
    # the task worker (issue 11): task code's process knows nothing of the node's network
    "flocknode.worker": {"flocknode.p2p", "flocknode.chain", "flocknode.rounds"},
}


def run_lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: run make setup"
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_contracts_cover_every_rule() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    forbidden: dict[str, set[str]] = {}
    for c in cfg["contracts"]:
        assert c["type"] == "forbidden"
        assert not c.get("allow_indirect_imports", False), c["name"]
        for src in c["source_modules"]:
            forbidden.setdefault(src, set()).update(c["forbidden_modules"])
    assert forbidden == RULES


def test_the_tree_keeps_the_layer_rules() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    r = run_lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {len(cfg['contracts'])} kept, 0 broken." in r.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("store/__init__.py", "from flocknode.p2p import codec\n"),
        ("crypto/__init__.py", "import flocknode.chain.errors\n"),
        # indirect: learning -> errors -> rounds
        ("errors.py", "from flocknode.rounds import retry\n"),
    ],
)
def test_a_crossing_import_fails_the_check(tmp_path: Path, module: str, line: str) -> None:
    pkg = tmp_path / "flocknode"
    shutil.copytree(
        ROOT / "flocknode", pkg, ignore=shutil.ignore_patterns("__pycache__", "artifacts")
    )
    target = pkg / module
    target.write_text(line + target.read_text())
    r = run_lint(tmp_path)
    assert r.returncode != 0, r.stdout
    assert "BROKEN" in r.stdout
