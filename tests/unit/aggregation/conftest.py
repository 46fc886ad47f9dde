"""Shared helpers for the aggregation tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import numpy as np
import pytest
import torch


def values_digest(model: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over each tensor (sorted names): name, NUL, shape, NUL, float32 LE bytes.

    Independent of ``flocknode.crypto``'s envelope format on purpose: the
    golden vectors pin the numbers, not a header layout.
    """
    h = hashlib.sha256()
    for name in sorted(model):
        t = model[name]
        h.update(name.encode() + b"\0" + ",".join(map(str, t.shape)).encode() + b"\0")
        h.update(t.detach().numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


@pytest.fixture
def digest() -> Callable[[Mapping[str, torch.Tensor]], str]:
    return values_digest


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def random_model(seed: int, shapes: Mapping[str, tuple[int, ...]], scale: float = 1.0):
    rs = np.random.RandomState(seed)
    return {
        name: torch.from_numpy((rs.standard_normal(shape) * scale).astype(np.float32))
        for name, shape in shapes.items()
    }


@pytest.fixture
def make_model() -> Callable[..., dict[str, torch.Tensor]]:
    return random_model
