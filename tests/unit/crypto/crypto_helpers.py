"""Strategies and small helpers shared by the crypto tests."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from hypothesis import strategies as st

from flocknode.crypto.canonical import TensorLike

SPECIAL = np.array([0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.0], np.float32)

names = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=12
).filter(str.isprintable)


@st.composite
def tensor_dicts(draw: st.DrawFn, max_dim: int = 6, max_rank: int = 3) -> dict[str, TensorLike]:
    """name -> float32 torch tensor or numpy array, with random shapes (zero-size and
    0-d included) and finite values including -0.0, subnormals and extremes."""
    keys = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    out: dict[str, TensorLike] = {}
    for key in keys:
        shape = tuple(draw(st.lists(st.integers(0, max_dim), max_size=max_rank)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        arr = rng.standard_normal(shape).astype(np.float32)
        if arr.size:
            flat = arr.reshape(-1)
            idx = rng.integers(0, flat.size, size=min(3, flat.size))
            flat[idx] = rng.choice(SPECIAL, size=idx.size)
        out[key] = torch.from_numpy(arr) if draw(st.booleans()) else arr
    return out


def as_numpy(value: TensorLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    assert isinstance(value, np.ndarray)
    return value


def assert_same_tensors(got: Mapping[str, torch.Tensor], want: Mapping[str, TensorLike]) -> None:
    """Equal names, shapes and bit patterns (so -0.0 != 0.0), in sorted byte order."""
    assert list(got) == sorted(want, key=lambda n: n.encode())
    for name, tensor in got.items():
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
        ref = as_numpy(want[name])
        assert tuple(tensor.shape) == ref.shape
        assert np.array_equal(tensor.numpy().view(np.uint32), ref.astype("<f4").view(np.uint32))
