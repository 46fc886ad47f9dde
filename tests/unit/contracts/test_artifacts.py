"""The committed contract artifacts are exactly what the sources compile to,
fit EIP-170, and expose every name docs/contracts.md promises."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "flocknode" / "chain" / "artifacts"
CONTRACTS = ("FlockToken", "FlockTask")
EIP170_LIMIT = 24_576


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "solc").is_dir():
        pytest.fail(
            "node and node_modules/solc are needed to rebuild the contracts: run make setup"
        )
    out = tmp_path_factory.mktemp("artifacts")
    proc = subprocess.run(
        [node, str(ROOT / "contracts" / "build.mjs"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("name", CONTRACTS)
def test_committed_artifact_matches_a_fresh_build(rebuilt: Path, name: str) -> None:
    fresh = (rebuilt / f"{name}.json").read_bytes()
    committed = (ARTIFACTS / f"{name}.json").read_bytes()
    assert fresh == committed, f"{name}.json is stale: run make contracts and commit the artifacts"


@pytest.mark.parametrize("name", CONTRACTS)
def test_artifact_shape_and_size(name: str) -> None:
    art = json.loads((ARTIFACTS / f"{name}.json").read_text())
    assert sorted(art) == ["abi", "bytecode", "compiler", "contractName", "deployedBytecode"]
    assert art["contractName"] == name
    assert art["compiler"]["version"].startswith("0.8.37+")
    assert art["compiler"]["settings"]["evmVersion"] == "cancun"
    deployed = bytes.fromhex(art["deployedBytecode"].removeprefix("0x"))
    assert 0 < len(deployed) <= EIP170_LIMIT


def _documented(section: str, text: str) -> set[str]:
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(\w+)\(", body))


def test_abi_has_every_documented_name() -> None:
    doc = (ROOT / "docs" / "contracts.md").read_text()
    abi = json.loads((ARTIFACTS / "FlockTask.json").read_text())["abi"]
    names = {(item["type"], item.get("name")) for item in abi}
    functions = set(re.findall(r"function (\w+)\(", doc))
    assert functions, "no functions found in docs/contracts.md"
    for fn in functions:
        assert ("function", fn) in names, f"function {fn} is documented but not in the ABI"
    events = _documented("Events", doc)
    errors = _documented("Errors", doc)
    assert len(events) >= 16 and len(errors) >= 26
    for ev in events:
        assert ("event", ev) in names, f"event {ev} is documented but not in the ABI"
    for err in errors:
        assert ("error", err) in names, f"error {err} is documented but not in the ABI"
