"""Shared fixtures for the learning tests."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "tasks" / "example_task"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train with one thread: a tiny MLP gains nothing from two, and on a busy
    2-core machine spinning worker threads make it many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """A copy of the docs/tasks.md example package (a directory with __init__.py)."""
    d = tmp_path / "src" / "example_task"
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns("__pycache__"))
    return d


@pytest.fixture
def fresh_modules() -> Iterator[None]:
    """Tests that import example_task from a package tree start and end without it."""
    saved_path = list(sys.path)

    def drop() -> None:
        for name in [m for m in sys.modules if m.split(".")[0] == "example_task"]:
            del sys.modules[name]

    drop()
    yield
    drop()
    sys.path[:] = saved_path
