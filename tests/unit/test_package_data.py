"""pyproject's package-data globs each match a file, and cover what the code loads."""

from __future__ import annotations

import tomllib
from pathlib import Path

from flocknode.chain.contracts import ARTIFACTS_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_data_glob_matches_a_file() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = cfg["tool"]["setuptools"]["package-data"]
    shipped: set[Path] = set()
    for package, globs in data.items():
        base = ROOT / package.replace(".", "/")
        for pattern in globs:
            hits = set(base.glob(pattern))
            assert hits, f"package-data {package}: {pattern!r} matches nothing"
            shipped |= hits
    assert set(ARTIFACTS_DIR.glob("*.json")) <= shipped
    assert ROOT / "flocknode" / "py.typed" in shipped
