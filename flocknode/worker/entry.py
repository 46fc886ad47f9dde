"""The task worker's main loop (runs in the worker process, possibly jailed).

    python -I -m flocknode.worker.entry SPEC_JSON

Sets its limits (address space, no core files, killed with its parent), then
answers requests (``flocknode.worker.protocol``) one at a time: import the
named ``module:function``, call it with the input tensors and the JSON args,
and write what it returns. A task function is

    fn(tensors: dict[str, torch.Tensor], args: dict) -> (dict[str, torch.Tensor], dict)

The first answer (id 0) says the worker is ready. Anything the task prints
goes to stderr: stdout carries only answers.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any, BinaryIO

import torch
from safetensors.torch import load, save

from flocknode import malloc
from flocknode.learning.factory import PluginError, load_callable
from flocknode.learning.task import DataError
from flocknode.worker.sandbox import WorkerSpec

_PR_SET_PDEATHSIG = 1


def _limit(spec: WorkerSpec) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (spec.memory_bytes, spec.memory_bytes))


def _answer(out: BinaryIO, body: dict[str, Any], blob: bytes = b"") -> None:
    try:  # NaN and infinities travel as JSON's common extension; the daemon checks them
        line = json.dumps({**body, "tensor_bytes": len(blob)}, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        blob = b""
        line = json.dumps(
            {"id": body["id"], "ok": False, "reason": "error", "detail": f"result not JSON: {e}"}
        )
    out.write(line.encode() + b"\n" + blob)
    out.flush()


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError) and "allocate" in str(e) and "memory" in str(e)
    )


def _kind(e: BaseException) -> str:
    """``data`` and ``plugin`` errors are one-line messages a node shows as they are."""
    if isinstance(e, DataError):
        return "data"
    return "plugin" if isinstance(e, PluginError) else ""


def _handle(req: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
    fn = load_callable(req["call"], "task function")
    tensors = load(blob) if blob else {}
    out = fn(tensors, req["args"])
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("a task function returns (tensors, result)")
    out_tensors, result = out
    if not isinstance(out_tensors, dict) or not isinstance(result, dict):
        raise TypeError("a task function returns (dict of tensors, dict)")
    if not all(isinstance(t, torch.Tensor) for t in out_tensors.values()):
        raise TypeError("returned tensors must be torch.Tensor")
    data = save({k: t.detach().cpu().contiguous() for k, t in out_tensors.items()})
    return {"id": req["id"], "ok": True, "result": result}, data if out_tensors else b""


def serve(spec: WorkerSpec, inp: BinaryIO, out: BinaryIO) -> None:
    for p in spec.python_path:
        if p not in sys.path:
            sys.path.insert(0, p)
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    _answer(out, {"id": 0, "ok": True, "result": {"pid": os.getpid()}})
    for line in inp:
        req = json.loads(line)
        blob = inp.read(req["tensor_bytes"])
        try:
            body, result = _handle(req, blob)
        except (Exception, SystemExit) as e:  # the task's failure is an answer, not our end
            reason = "oom" if _is_oom(e) else "error"
            kind = _kind(e)
            detail = str(e) if kind else repr(e)
            body = {"id": req["id"], "ok": False, "reason": reason, "detail": detail[:500]}
            body["kind"] = kind
            result = b""
        _answer(out, body, result)
        del blob, result
        malloc.trim()  # the call's freed temporaries (flocknode.malloc)


def main() -> None:
    malloc.tune()
    spec = WorkerSpec.from_json(sys.argv[1])
    _limit(spec)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the task's prints go to stderr
    sys.stdout = sys.stderr
    serve(spec, sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
