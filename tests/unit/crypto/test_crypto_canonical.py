"""Canonical tensor bytes: the exact format, round trips, strict decoding."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flocknode.crypto import (
    CanonicalError,
    CanonicalReader,
    canonical_bytes,
    canonical_size,
    iter_canonical,
    parse_canonical,
    update_hash,
)
from flocknode.crypto.canonical import TensorLike
from tests.unit.crypto.crypto_helpers import assert_same_tensors, tensor_dicts


def golden() -> bytes:
    """{"b": [1.0, -2.0], "a": [[0.5]]} written out by hand from the format table."""
    table = (
        struct.pack("<H", 1) + b"a" + bytes([2]) + struct.pack("<II", 1, 1)
        + struct.pack("<H", 1) + b"b" + bytes([1]) + struct.pack("<I", 2)
    )  # fmt: skip
    prefix = b"FLCT" + bytes([1, 1, 0, 0]) + struct.pack("<II", 2, len(table))
    data = bytes.fromhex("0000003f") + bytes.fromhex("0000803f") + bytes.fromhex("000000c0")
    return prefix + table + data


def test_golden_bytes_and_hash() -> None:
    tensors: dict[str, TensorLike] = {
        "b": torch.tensor([1.0, -2.0]),
        "a": np.array([[0.5]], np.float32),
    }
    assert canonical_bytes(tensors) == golden()
    assert update_hash(tensors) == hashlib.sha256(golden()).digest()
    assert canonical_size(tensors) == len(golden())
    out = parse_canonical(golden())
    assert list(out) == ["a", "b"]
    assert out["b"].tolist() == [1.0, -2.0] and out["a"].tolist() == [[0.5]]


@settings(max_examples=60, deadline=None)
@given(tensor_dicts(), st.data())
def test_round_trip_in_random_pieces(tensors: dict[str, TensorLike], data: st.DataObject) -> None:
    blob = canonical_bytes(tensors)
    assert len(blob) == canonical_size(tensors)
    assert hashlib.sha256(blob).digest() == update_hash(tensors)
    assert_same_tensors(parse_canonical(blob), tensors)
    # The insertion order does not matter: the encoding is canonical.
    assert canonical_bytes(dict(reversed(list(tensors.items())))) == blob
    reader = CanonicalReader()
    pos = 0
    while pos < len(blob):
        step = data.draw(st.integers(1, 64))
        reader.feed(blob[pos : pos + step])
        pos += step
    assert reader.complete and reader.total_size == len(blob)
    assert_same_tensors(reader.finish(), tensors)


def test_layout_independent_inputs_encode_alike() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    strided = base.t().contiguous().t()  # same values, column-major storage
    assert not strided.is_contiguous()
    grad = base.clone().requires_grad_(True)
    big_endian = base.numpy().astype(">f4")
    ref = canonical_bytes({"x": base})
    for variant in (strided, grad, big_endian):
        assert canonical_bytes({"x": variant}) == ref


def test_zero_copy_pieces() -> None:
    t = torch.ones(1000)
    pieces = list(iter_canonical({"t": t}))
    assert len(pieces) == 2
    assert pieces[1].nbytes == 4000
    t[0] = 7.0  # the data piece is a view of the tensor, not a copy
    assert bytes(pieces[1][:4]) == struct.pack("<f", 7.0)


@pytest.mark.parametrize(
    ("tensors", "error"),
    [
        ({}, ValueError),
        ({"x": torch.ones(2, dtype=torch.float64)}, TypeError),
        ({"x": np.ones(2, np.bool_)}, TypeError),
        ({"x": [1.0, 2.0]}, TypeError),
        ({"": torch.ones(1)}, ValueError),
        ({"a\nb": torch.ones(1)}, ValueError),
        ({"n" * 1025: torch.ones(1)}, ValueError),
        ({3: torch.ones(1)}, TypeError),
    ],
)
def test_encoder_rejects_misuse(tensors: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        canonical_bytes(tensors)


def test_non_finite_values_rejected_unless_allowed() -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        blob = canonical_bytes({"w": torch.tensor([1.0, bad, 2.0])})
        with pytest.raises(CanonicalError, match="non-finite"):
            parse_canonical(blob)
        assert parse_canonical(blob, require_finite=False)["w"].shape == (3,)


def test_expected_shapes_must_match_exactly() -> None:
    blob = canonical_bytes({"w": torch.ones(2, 3), "b": torch.ones(3)})
    assert parse_canonical(blob, expected_shapes={"w": (2, 3), "b": [3]})["w"].shape == (2, 3)
    for wrong in ({"w": (3, 2), "b": (3,)}, {"w": (2, 3)}, {"w": (2, 3), "b": (3,), "c": ()}):
        with pytest.raises(CanonicalError, match="expected"):
            parse_canonical(blob, expected_shapes=wrong)


def _header(entries: list[tuple[bytes, tuple[int, ...]]], count: int | None = None) -> bytes:
    table = b"".join(
        struct.pack(f"<H{len(n)}sB{len(s)}I", len(n), n, len(s), *s) for n, s in entries
    )
    n = len(entries) if count is None else count
    return b"FLCT" + bytes([1, 1, 0, 0]) + struct.pack("<II", n, len(table)) + table


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "truncated"),
        (golden()[:-1], "truncated"),
        (golden() + b"\x00", "after the end"),
        (b"XXXX" + golden()[4:], "known version"),
        (golden()[:4] + b"\x03" + golden()[5:], "known version"),
        (golden()[:4] + b"\x02" + golden()[5:], "dtype"),
        (golden()[:5] + b"\x02" + golden()[6:], "dtype"),
        (golden()[:6] + b"\x01\x00" + golden()[8:], "reserved"),
        (_header([(b"b", (1,)), (b"a", (1,))]) + bytes(8), "increasing"),
        (_header([(b"a", (1,)), (b"a", (1,))]) + bytes(8), "increasing"),
        (_header([(b"\xff", (1,))]) + bytes(4), "UTF-8"),
        (_header([(b"a\x00", (1,))]) + bytes(4), "printable"),
        (_header([(b"a", (1,) * 17)]), "rank"),
        (_header([(b"a", (2**32 - 1, 2**32 - 1))]), "limit"),
        (_header([(b"a", (1,))], count=0), "out of bounds"),
        (_header([(b"a", (1,))], count=2), "table"),
    ],
)
def test_decoder_rejects_malformed(blob: bytes, match: str) -> None:
    with pytest.raises(CanonicalError, match=match):
        parse_canonical(blob)


def test_max_bytes_is_enforced_before_allocation() -> None:
    blob = canonical_bytes({"w": torch.ones(1000)})
    assert parse_canonical(blob, max_bytes=len(blob))["w"].shape == (1000,)
    with pytest.raises(CanonicalError, match="limit"):
        parse_canonical(blob, max_bytes=len(blob) - 1)
