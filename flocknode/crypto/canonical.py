"""Canonical bytes of named tensors (a model or a model update).

One set of tensors has exactly one byte string, so its SHA-256 is a content id
(``updateHash`` on chain, ``aggregateHash`` of a model). Layout, integers
little-endian::

    offset  size  field
    0       4     magic b"FLCT"
    4       1     format version (1 or 2)
    5       1     dtype code: 1 = float32 (version 1); 0 = per tensor (version 2)
    6       2     reserved, zero
    8       4     tensor count n (1 .. MAX_TENSORS)
    12      4     table length L: the n entries below, exactly
    16      L     n entries, names in strictly increasing UTF-8 byte order:
                    u16 name length (1 .. MAX_NAME_BYTES), the UTF-8 name
                    (printable), u8 ndim (0 .. MAX_NDIM), ndim x u32 dims,
                    and in version 2 only a u8 dtype code (``DTYPE_CODES``)
    16+L    ...   every tensor's elements in the same order, C order, little-endian,
                  each element the size of its dtype

A set of float32 tensors is always written as version 1 (so a float32 model's
hash does not depend on the existence of version 2); a set holding any other
dtype (float16, bfloat16, int64 or int32: half-precision weights, BatchNorm's
``num_batches_tracked`` counter; int8, uint8 or int16: the packed form of a
compressed update) is always written as version 2. A reader
refuses version 2 bytes whose tensors are all float32, so the choice is not
free either way.

Encoding (trusted input: a ``TypeError``/``ValueError`` on misuse):
    ``canonical_size(t)``, ``spec_size(spec)`` (the same from names, shapes
    and dtypes alone), ``iter_canonical(t)`` (zero-copy pieces: the header,
    then a memoryview of each tensor's data), ``update_hash(t)`` (sha256 of the
    canonical bytes, streamed), ``canonical_bytes(t)`` (one bytes object; for
    small models and tests).
Decoding (untrusted input: only :class:`CanonicalError`):
    ``CanonicalReader`` takes bytes in pieces of any size (``feed``) and writes
    them straight into freshly allocated output tensors; ``finish()`` returns
    them. ``parse_canonical(data)`` does both at once.

Tensors are ``torch.Tensor`` (float32, float16, bfloat16, int64, int32, int8, uint8, int16) or
``numpy.ndarray`` (the same without bfloat16), any device/stride; CPU
contiguous little-endian data is never copied. Decoded tensors are CPU
``torch.Tensor`` of the encoded dtype in canonical (sorted) order; with
``require_finite`` a floating value that is NaN or infinite is refused.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from flocknode.crypto.errors import CanonicalError

MAGIC = b"FLCT"
FORMAT_VERSION = 1
FORMAT_VERSION_MIXED = 2
DTYPE_FLOAT32_LE = 1
DTYPE_PER_TENSOR = 0
# Version 2's per-tensor dtype codes (little-endian data).
DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.int64: 4,
    torch.int32: 5,
    # the packed form of compressed updates (flocknode.aggregation.compression)
    torch.int8: 6,
    torch.uint8: 7,
    torch.int16: 8,
}
_CODE_DTYPES = {code: dt for dt, code in DTYPE_CODES.items()}
_NUMPY_DTYPES = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int16): torch.int16,
}
# How each dtype's bytes are viewed in numpy (bfloat16 has no numpy dtype: its
# raw 16-bit patterns are handled as little-endian int16).
_LE_VIEW = {
    torch.float32: "<f4",
    torch.float16: "<f2",
    torch.bfloat16: "<i2",
    torch.int64: "<i8",
    torch.int32: "<i4",
    torch.int8: "<i1",
    torch.uint8: "<u1",
    torch.int16: "<i2",
}
MAX_TENSORS = 65_536
MAX_NAME_BYTES = 1024
MAX_NDIM = 16
MAX_DIM = 2**32 - 1
MAX_TABLE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BYTES = 4 * 1024**3

_PREFIX = struct.Struct("<4sBBHII")
PREFIX_LEN = _PREFIX.size
_LITTLE = sys.byteorder == "little"

TensorLike = torch.Tensor | np.ndarray
Tensors = Mapping[str, TensorLike]
Shapes = Mapping[str, Sequence[int]]


def _as_le(name: str, value: TensorLike) -> tuple[torch.dtype, np.ndarray]:
    """The dtype and a 1-d C-contiguous little-endian view (a copy only when unavoidable)."""
    if isinstance(value, torch.Tensor):
        dtype = value.dtype
        if dtype not in DTYPE_CODES:
            raise TypeError(f"tensor {name!r} is {dtype}, expected one of {_dtype_names()}")
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg().contiguous()
        arr = t.view(torch.int16).numpy() if dtype == torch.bfloat16 else t.numpy()
    elif isinstance(value, np.ndarray):
        found = _NUMPY_DTYPES.get(value.dtype.newbyteorder("="))
        if found is None:
            raise TypeError(f"array {name!r} is {value.dtype}, expected one of {_dtype_names()}")
        dtype, arr = found, value
    else:
        raise TypeError(f"{name!r} is {type(value).__name__}, expected a tensor or array")
    return dtype, np.ascontiguousarray(arr, dtype=_LE_VIEW[dtype]).reshape(-1)


def _dtype_names() -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in DTYPE_CODES)


def _prepare(tensors: Tensors) -> tuple[bytes, list[memoryview]]:
    """The header bytes and the data views, in canonical order."""
    if not isinstance(tensors, Mapping):
        raise TypeError("tensors must be a mapping of name -> tensor")
    prepared = {name: _as_le(name, value) for name, value in tensors.items()}
    header, order = _header(
        {name: (tuple(tensors[name].shape), dtype) for name, (dtype, _) in prepared.items()}
    )
    return header, [prepared[name][1].data.cast("B") for name in order]


Spec = Mapping[str, tuple[Sequence[int], torch.dtype]]


def _header(spec: Spec) -> tuple[bytes, list[str]]:
    """The header of tensors with these names, shapes and dtypes, and the names in order."""
    if not 1 <= len(spec) <= MAX_TENSORS:
        raise ValueError(f"need 1..{MAX_TENSORS} tensors, got {len(spec)}")
    entries: list[tuple[bytes, str]] = []
    for name in spec:
        if not isinstance(name, str):
            raise TypeError(f"tensor name {name!r} is not a str")
        raw = name.encode("utf-8")
        if not 1 <= len(raw) <= MAX_NAME_BYTES or not name.isprintable():
            raise ValueError(f"tensor name {name!r} is empty, too long or not printable")
        entries.append((raw, name))
    entries.sort()
    mixed = any(dtype != torch.float32 for _, dtype in spec.values())
    table = bytearray()
    for raw, name in entries:
        shape = tuple(int(d) for d in spec[name][0])
        if len(shape) > MAX_NDIM or any(not 0 <= d <= MAX_DIM for d in shape):
            raise ValueError(f"tensor {name!r} has an unsupported shape {shape}")
        table += struct.pack(f"<H{len(raw)}sB{len(shape)}I", len(raw), raw, len(shape), *shape)
        if mixed:
            table.append(DTYPE_CODES[spec[name][1]])
    if len(table) > MAX_TABLE_BYTES:
        raise ValueError("tensor table too large")
    version, code = (
        (FORMAT_VERSION_MIXED, DTYPE_PER_TENSOR) if mixed else (FORMAT_VERSION, DTYPE_FLOAT32_LE)
    )
    prefix = _PREFIX.pack(MAGIC, version, code, 0, len(entries), len(table))
    return prefix + bytes(table), [name for _, name in entries]


def spec_size(spec: Spec) -> int:
    """The canonical size of tensors with these names, shapes and dtypes (none allocated)."""
    for name, (_, dtype) in spec.items():
        if dtype not in DTYPE_CODES:
            raise TypeError(f"tensor {name!r} is {dtype}, expected one of {_dtype_names()}")
    header, _ = _header(spec)
    return len(header) + sum(
        dtype.itemsize * math.prod(int(d) for d in shape) for shape, dtype in spec.values()
    )


def iter_canonical(tensors: Tensors) -> Iterator[memoryview]:
    """The canonical bytes as pieces: the header, then each tensor's data (no copies)."""
    header, views = _prepare(tensors)
    yield memoryview(header)
    for view in views:
        if view.nbytes:
            yield view


def canonical_size(tensors: Tensors) -> int:
    header, views = _prepare(tensors)
    return len(header) + sum(v.nbytes for v in views)


def canonical_bytes(tensors: Tensors) -> bytes:
    """All canonical bytes in one object (a full copy: for small models and tests)."""
    return b"".join(iter_canonical(tensors))


def update_hash(tensors: Tensors) -> bytes:
    """sha256 of the canonical bytes, streamed without building them."""
    h = hashlib.sha256()
    for piece in iter_canonical(tensors):
        h.update(piece)
    return h.digest()


_Entry = tuple[str, tuple[int, ...], torch.dtype]


def _parse_table(
    table: bytes, count: int, max_bytes: int, expected: Shapes | None, mixed: bool
) -> list[_Entry]:
    entries: list[_Entry] = []
    pos = 0
    prev = b""
    total = PREFIX_LEN + len(table)
    for _ in range(count):
        if pos + 2 > len(table):
            raise CanonicalError("tensor table truncated")
        (nlen,) = struct.unpack_from("<H", table, pos)
        raw = table[pos + 2 : pos + 2 + nlen]
        pos += 2 + nlen
        if not 1 <= nlen <= MAX_NAME_BYTES or len(raw) != nlen or pos + 1 > len(table):
            raise CanonicalError("tensor name length out of bounds")
        if raw <= prev:
            raise CanonicalError("tensor names not in strictly increasing order")
        prev = raw
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CanonicalError("tensor name is not UTF-8") from None
        if not name.isprintable():
            raise CanonicalError("tensor name is not printable")
        ndim = table[pos]
        pos += 1
        if ndim > MAX_NDIM or pos + 4 * ndim > len(table):
            raise CanonicalError("tensor rank out of bounds")
        shape = struct.unpack_from(f"<{ndim}I", table, pos)
        pos += 4 * ndim
        dtype = torch.float32
        if mixed:
            if pos + 1 > len(table) or table[pos] not in _CODE_DTYPES:
                raise CanonicalError("unknown or missing tensor dtype code")
            dtype = _CODE_DTYPES[table[pos]]
            pos += 1
        total += dtype.itemsize * int(np.prod(shape, dtype=object))
        if total > max_bytes:
            raise CanonicalError(f"tensors larger than the limit of {max_bytes} bytes")
        entries.append((name, tuple(shape), dtype))
    if pos != len(table):
        raise CanonicalError("tensor table length does not match its entries")
    if mixed and all(dtype == torch.float32 for _, _, dtype in entries):
        raise CanonicalError("version 2 bytes of float32 tensors only (must be version 1)")
    if expected is not None:
        want = {n: tuple(int(d) for d in s) for n, s in expected.items()}
        if {n: shape for n, shape, _ in entries} != want:
            raise CanonicalError("tensor names or shapes differ from the expected ones")
    return entries


def _all_finite(values: np.ndarray, dtype: torch.dtype = torch.float32) -> bool:
    """No NaN or infinity (min/max propagate NaN; no temporary array for float32).

    Integers are always finite; bfloat16 (raw int16 patterns) is infinite or
    NaN exactly when its 8 exponent bits are all ones.
    """
    if values.size == 0 or not dtype.is_floating_point:
        return True
    if dtype == torch.bfloat16:
        return not bool(((values & 0x7F80) == 0x7F80).any())
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))


class CanonicalReader:
    """Incremental, bounded parser of canonical bytes into torch tensors.

    Output tensors are allocated once the header is parsed and validated (so
    an allocation never exceeds ``max_bytes``); later bytes are copied straight
    into them. With ``require_finite`` every value is checked as it arrives.
    ``on_span`` is called, in order, with views of the canonical bytes as they
    land in memory that no longer changes (the header, then regions of the
    output tensors), so a hash can run over them on another thread.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        expected_shapes: Shapes | None = None,
        require_finite: bool = True,
        on_span: Callable[[memoryview], None] | None = None,
    ) -> None:
        self._on_span = on_span
        self._max_bytes = max_bytes
        self._expected = expected_shapes
        self._finite = require_finite
        self._buf = bytearray()
        self._need = PREFIX_LEN  # header bytes wanted before the next parse step
        self._count = 0
        self._in_header = True
        self._names: list[str] = []
        self._mixed = False
        self._tensors: list[torch.Tensor] = []
        self._idx = 0  # current tensor while reading data
        self._off = 0  # bytes of it received
        self._checked = 0  # elements of it checked for finiteness
        self._bytes: memoryview | None = None
        self._flat: np.ndarray | None = None
        self.total_size: int | None = None  # known once the header is parsed

    @property
    def complete(self) -> bool:
        return not self._in_header and self._idx == len(self._tensors)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data).cast("B")
        while mv.nbytes:
            if self._in_header:
                take = min(self._need - len(self._buf), mv.nbytes)
                self._buf += mv[:take]
                mv = mv[take:]
                if len(self._buf) == self._need:
                    self._header_step()
            elif self._idx == len(self._tensors):
                raise CanonicalError("bytes after the end of the tensor data")
            else:
                mv = self._data_step(mv)

    def finish(self) -> dict[str, torch.Tensor]:
        if not self.complete:
            raise CanonicalError("canonical bytes truncated")
        if not _LITTLE:  # pragma: no cover - big-endian hosts only
            for t in self._tensors:
                _raw_view(t).byteswap(inplace=True)
                if self._finite and not bool(torch.isfinite(t).all()):
                    raise CanonicalError("non-finite value in the tensors")
        return dict(zip(self._names, self._tensors, strict=True))

    def _header_step(self) -> None:
        if self._need == PREFIX_LEN:
            magic, version, dtype, reserved, count, tlen = _PREFIX.unpack(self._buf)
            if magic != MAGIC or version not in (FORMAT_VERSION, FORMAT_VERSION_MIXED):
                raise CanonicalError("not canonical tensor bytes of a known version")
            want = DTYPE_FLOAT32_LE if version == FORMAT_VERSION else DTYPE_PER_TENSOR
            if dtype != want or reserved != 0:
                raise CanonicalError("unknown dtype or non-zero reserved field")
            self._mixed = version == FORMAT_VERSION_MIXED
            if not 1 <= count <= MAX_TENSORS or not 4 * count <= tlen <= MAX_TABLE_BYTES:
                raise CanonicalError("tensor count or table length out of bounds")
            if PREFIX_LEN + tlen > self._max_bytes:
                raise CanonicalError("header larger than the limit")
            self._count = count
            self._need = PREFIX_LEN + tlen
            if len(self._buf) < self._need:
                return
        table = bytes(self._buf[PREFIX_LEN:])
        entries = _parse_table(table, self._count, self._max_bytes, self._expected, self._mixed)
        self._names = [name for name, _, _ in entries]
        try:
            self._tensors = [torch.empty(shape, dtype=dtype) for _, shape, dtype in entries]
        except (RuntimeError, MemoryError):
            raise CanonicalError("cannot allocate the tensors the header declares") from None
        self.total_size = PREFIX_LEN + len(table) + sum(_nbytes(t) for t in self._tensors)
        if self._on_span is not None:
            self._on_span(memoryview(bytes(self._buf)))
        self._buf = bytearray()
        self._in_header = False
        self._idx = -1
        self._next_tensor()

    def _next_tensor(self) -> None:
        self._idx += 1
        while self._idx < len(self._tensors) and self._tensors[self._idx].numel() == 0:
            self._idx += 1
        self._off = self._checked = 0
        if self._idx < len(self._tensors):
            self._flat = _raw_view(self._tensors[self._idx]).reshape(-1)
            self._bytes = self._flat.data.cast("B")
        else:
            self._flat = self._bytes = None

    def _data_step(self, mv: memoryview) -> memoryview:
        dst, flat = self._bytes, self._flat
        assert dst is not None and flat is not None
        take = min(dst.nbytes - self._off, mv.nbytes)
        dst[self._off : self._off + take] = mv[:take]
        if self._on_span is not None:
            self._on_span(dst[self._off : self._off + take])
        self._off += take
        if self._finite and _LITTLE:
            dtype = self._tensors[self._idx].dtype
            done = self._off // dtype.itemsize
            if not _all_finite(flat[self._checked : done], dtype):
                raise CanonicalError(f"non-finite value in tensor {self._names[self._idx]!r}")
            self._checked = done
        if self._off == dst.nbytes:
            self._next_tensor()
        return mv[take:]


def _raw_view(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor's memory (bfloat16 as int16 patterns)."""
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _nbytes(t: torch.Tensor) -> int:
    return t.dtype.itemsize * t.numel()


def parse_canonical(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    expected_shapes: Shapes | None = None,
    require_finite: bool = True,
) -> dict[str, torch.Tensor]:
    """Decode complete canonical bytes; raises only :class:`CanonicalError`."""
    reader = CanonicalReader(
        max_bytes=max_bytes, expected_shapes=expected_shapes, require_finite=require_finite
    )
    reader.feed(data)
    return reader.finish()
