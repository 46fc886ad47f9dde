"""What crosses the boundary between the daemon and its task worker (pure, no I/O).

One request at a time, each a JSON line on the worker's stdin; each answer a
JSON line on its stdout. Tensors travel in safetensors format (a JSON header
and raw little-endian bytes, no code), right after the line that announces
their length (``tensor_bytes``): the daemon never unpickles anything the
worker wrote. Everything the worker returns is untrusted: an answer line
longer than ``MAX_LINE`` bytes, a result that is not a JSON object, tensor
bytes longer than the expected state allows, or tensors whose names, shapes or
dtypes differ from the expected ones end the call as ``garbage``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from flocknode.errors import FlockError

MAX_LINE = 64 * 1024  # one answer line, JSON result included
HEADER_ALLOWANCE = 64 * 1024  # safetensors header beyond the raw tensor bytes

Reason = Literal["crash", "oom", "timeout", "garbage", "error", "unavailable"]
REASONS: tuple[Reason, ...] = ("crash", "oom", "timeout", "garbage", "error", "unavailable")
# what a task's ``error`` was: bad data or a task that does not resolve (one line each)
ErrorKind = Literal["", "data", "plugin"]

# What a tensor is expected to look like: name -> (shape, dtype).
TensorSpec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


class WorkerFailure(FlockError):
    """A call into the task worker that ended without a usable result.

    ``reason``: ``crash`` (the worker died), ``oom`` (memory limit), ``timeout``
    (killed at its deadline), ``garbage`` (an answer or tensors that do not
    check), ``error`` (the task raised), ``unavailable`` (the worker could not
    be started).
    """

    def __init__(self, reason: Reason, detail: str, kind: ErrorKind = "") -> None:
        self.reason = reason
        self.detail = detail
        self.kind = kind  # for ``error``: "data" (DataError), "plugin" (PluginError) or ""
        super().__init__(f"task worker {reason}: {detail}")


@dataclass(frozen=True)
class Request:
    """Call ``call`` (``module:function``) with the JSON ``args`` and the
    ``tensor_bytes`` bytes of safetensors that follow the request line (0: no
    tensors)."""

    id: int
    call: str
    args: Mapping[str, Any]
    tensor_bytes: int

    def encode(self) -> bytes:
        body = {
            "id": self.id,
            "call": self.call,
            "args": dict(self.args),
            "tensor_bytes": self.tensor_bytes,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"


@dataclass(frozen=True)
class Answer:
    """A worker's answer: ``ok`` with a JSON ``result`` and ``tensor_bytes`` bytes
    of safetensors after the line, or a failure with its reason and detail."""

    id: int
    ok: bool
    result: Mapping[str, Any]
    tensor_bytes: int
    reason: Reason
    detail: str
    kind: ErrorKind = ""


def decode_answer(line: bytes, want_id: int) -> Answer:
    """Parse one answer line; ``WorkerFailure("garbage")`` if it is not a valid answer."""
    if len(line) > MAX_LINE:
        raise WorkerFailure("garbage", f"answer of {len(line)} bytes (limit {MAX_LINE})")
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise WorkerFailure("garbage", "answer is not JSON") from None
    if not isinstance(body, dict) or body.get("id") != want_id:
        raise WorkerFailure("garbage", "answer is not an object for this request")
    ok = body.get("ok")
    if ok is True:
        result = body.get("result")
        n = body.get("tensor_bytes")
        if not isinstance(result, dict) or not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise WorkerFailure("garbage", "answer without a result object and tensor length")
        return Answer(want_id, True, result, n, "error", "")
    if ok is False:
        reason = body.get("reason")
        detail = body.get("detail")
        if reason not in ("oom", "error") or not isinstance(detail, str):
            raise WorkerFailure("garbage", "failure answer without a known reason")
        kind = body.get("kind", "")
        if kind not in ("", "data", "plugin"):
            kind = ""
        return Answer(want_id, False, {}, 0, reason, detail[:500], kind)
    raise WorkerFailure("garbage", "answer without 'ok'")


def max_tensor_bytes(expected: TensorSpec) -> int:
    """The most safetensors bytes a state of this spec can take (header included)."""
    raw = sum(math.prod(shape) * _itemsize(dtype) for shape, dtype in expected.values())
    return raw + HEADER_ALLOWANCE + 128 * len(expected)


def check_tensors(tensors: Mapping[str, torch.Tensor], expected: TensorSpec) -> None:
    """Names, shapes and dtypes exactly as expected, every value finite; else ``garbage``."""
    if set(tensors) != set(expected):
        missing = sorted(set(expected) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(expected))[:3]
        raise WorkerFailure("garbage", f"tensor names differ (missing {missing}, extra {extra})")
    for name, (shape, dtype) in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise WorkerFailure(
                "garbage",
                f"tensor {name!r} is {t.dtype} {tuple(t.shape)}, expected {dtype} {tuple(shape)}",
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WorkerFailure("garbage", f"tensor {name!r} has non-finite values")


def spec_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(t.shape), t.dtype) for name, t in state.items()}


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
