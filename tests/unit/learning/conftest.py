"""Shared fixtures for the learning tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
