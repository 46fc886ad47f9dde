"""Task functions that misbehave, run inside the task worker by the isolation tests.

Each is ``fn(tensors, args) -> (tensors, result)``; those that probe the jail
report what happened instead of raising, so a test can tell "denied" from
"crashed".
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Any

import torch

Out = tuple[dict[str, torch.Tensor], dict[str, Any]]


def connect(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    try:
        with socket.create_connection(("127.0.0.1", args["port"]), timeout=5):
            return {}, {"connected": True}
    except OSError as e:
        return {}, {"connected": False, "error": e.__class__.__name__}


def read(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    try:
        with open(args["path"]) as f:
            return {}, {"read": f.read(100)}
    except OSError as e:
        return {}, {"read": None, "error": e.__class__.__name__}


def write(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    try:
        with open(args["path"], "w") as f:
            f.write("overwritten")
        return {}, {"written": True}
    except OSError as e:
        return {}, {"written": False, "error": e.__class__.__name__}


def environment(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    effective, bounding = int(caps["CapEff"], 16), int(caps["CapBnd"], 16)
    return {}, {"env": sorted(os.environ), "cap_eff": effective, "cap_bnd": bounding}


def segfault(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    ctypes.string_at(0)  # a real invalid read: SIGSEGV from the kernel
    return {}, {}


def exits(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    os._exit(3)


def raises(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    raise ValueError("the task's own bug")


def non_finite(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    return {name: torch.full_like(t, float("nan")) for name, t in tensors.items()}, {}


def huge_result(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    return {}, {"blob": "x" * 200_000}


def stdout_noise(tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Out:
    print("not an answer" * 1000)  # must not corrupt the answer channel
    return dict(tensors), {"printed": True}
