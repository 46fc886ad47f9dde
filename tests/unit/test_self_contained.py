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


def test_protocol_citations_name_a_section_or_step() -> None:
    """A citation ``docs/protocol.md, "Section"`` names a heading of docs/protocol.md
    (its text, or its text without a trailing parenthesis); ``step N`` is one of the
    nine steps of "A round"."""
    spec = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    headings = set()
    for h in re.findall(r"^#{2,4} (.+)$", spec, re.M):
        headings |= {h.strip(), re.sub(r"\s*\([^)]*\)$", "", h.strip())}
    steps = {int(n) for n in re.findall(r"^(\d)\. \*\*", spec, re.M)}
    assert steps == set(range(1, 10))
    cite = re.compile(r'docs/protocol\.md[,\s(]*(?:"([^"]+)"|steps? (\d+))')
    bad = []
    for p in scanned_files():
        if p == Path(__file__).resolve():
            continue  # its docstring shows the form
        text = p.read_text(encoding="utf-8", errors="replace")
        # a citation may wrap onto a comment's next line
        flat = re.sub(r"\n\s*(?:#|///|//|\*)?\s*", " ", text)
        for section, step in cite.findall(flat):
            if (section and section not in headings) or (step and int(step) not in steps):
                bad.append(f"{p.relative_to(ROOT)}: {section or 'step ' + step}")
    assert not bad, "no such section in docs/protocol.md:\n" + "\n".join(bad)
