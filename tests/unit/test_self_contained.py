"""Nothing in the repository refers to files outside it.

docs/protocol.md is the specification that code, tests and docs cite; the
design notes the project started from are not part of the repository, so a
citation of them (or of a path above the checkout) is a dead reference. The
patterns are built from pieces so that this file does not match them itself.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["flocknode", "tests", "docs", "bench", "bin", "config", "contracts"]
SCANNED_FILES = ["README.md", "Makefile", "pyproject.toml"]
SUFFIXES = {"", ".py", ".md", ".toml", ".sol", ".mjs", ".service", ".txt", ".cfg", ".sh"}

OUTSIDE = re.compile(
    "|".join(
        [
            re.escape("PROTOCOL" + ".md"),
            re.escape("LIBRARIES" + ".md"),
            re.escape("ARCHITECTURE" + ".md"),
            re.escape(".." + "/shared"),
        ]
    )
)


def scanned_files() -> list[Path]:
    out = [ROOT / name for name in SCANNED_FILES]
    for top in SCANNED:
        for p in sorted((ROOT / top).rglob("*")):
            if "__pycache__" in p.parts or not p.is_file() or p.suffix not in SUFFIXES:
                continue
            out.append(p)
    return out


def test_the_scan_sees_the_tree() -> None:
    files = {str(p.relative_to(ROOT)) for p in scanned_files()}
    for expected in ("docs/protocol.md", "flocknode/config.py", "README.md", "bin/install-service"):
        assert expected in files


def test_nothing_cites_files_outside_the_repository() -> None:
    hits = []
    for p in scanned_files():
        text = p.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "cite docs/protocol.md instead:\n" + "\n".join(hits)
