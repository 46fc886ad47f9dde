"""What crosses the boundary between the daemon and its task worker (pure, no I/O).

One request at a time, each a JSON line on the worker's stdin; each answer a
JSON line on its stdout. Tensors travel as safetensors files in the worker's
scratch directory, named by the daemon: the daemon never unpickles anything the
worker wrote. Everything the worker returns is untrusted: an answer longer than
``MAX_LINE`` bytes, a result that is not a JSON object, a tensor file larger
than the expected state allows, or tensors whose names, shapes or dtypes differ
from the expected ones end the call as ``garbage``.
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

# What a tensor is expected to look like: name -> (shape, dtype).
TensorSpec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


class WorkerFailure(FlockError):
    """A call into the task worker that ended without a usable result.

    ``reason``: ``crash`` (the worker died), ``oom`` (memory limit), ``timeout``
    (killed at its deadline), ``garbage`` (an answer or tensors that do not
    check), ``error`` (the task raised), ``unavailable`` (the worker could not
    be started).
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"task worker {reason}: {detail}")


@dataclass(frozen=True)
class Request:
    """Call ``call`` (``module:function``) with the tensors in ``input`` (a file
    in the scratch directory, or none) and the JSON ``args``; write the returned
    tensors to ``output``."""

    id: int
    call: str
    args: Mapping[str, Any]
    input: str | None
    output: str

    def encode(self) -> bytes:
        body = {
            "id": self.id,
            "call": self.call,
            "args": dict(self.args),
            "input": self.input,
            "output": self.output,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"


@dataclass(frozen=True)
class Answer:
    """A worker's answer: ``ok`` with a JSON ``result`` (tensors in the request's
    output file, if ``tensors``), or a failure with its reason and detail."""

    id: int
    ok: bool
    result: Mapping[str, Any]
    tensors: bool
    reason: Reason
    detail: str


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
        tensors = body.get("tensors")
        if not isinstance(result, dict) or not isinstance(tensors, bool):
            raise WorkerFailure("garbage", "answer without a result object")
        return Answer(want_id, True, result, tensors, "error", "")
    if ok is False:
        reason = body.get("reason")
        detail = body.get("detail")
        if reason not in ("oom", "error") or not isinstance(detail, str):
            raise WorkerFailure("garbage", "failure answer without a known reason")
        return Answer(want_id, False, {}, False, reason, detail[:500])
    raise WorkerFailure("garbage", "answer without 'ok'")


def max_file_bytes(expected: TensorSpec) -> int:
    """The largest tensor file a state of this spec can take (header included)."""
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
