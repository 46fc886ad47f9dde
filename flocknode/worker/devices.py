"""``[compute] device``: where task code trains and evaluates.

``auto`` is the first GPU torch sees, else the CPU; ``cuda`` and ``cuda:N``
must exist, or the node refuses to start (``DeviceUnavailable``). Only task
code uses the device: aggregation, hashing and the update encoding stay on
the CPU, so honest voters still agree bit for bit.
"""

from __future__ import annotations

import re

import torch

DEVICE_SYNTAX = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class DeviceUnavailable(Exception):
    """A device the config names that this machine does not have."""


def resolve_device(name: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for a ``[compute] device`` value."""
    if not DEVICE_SYNTAX.match(name):
        raise DeviceUnavailable(f"{name!r} is not auto, cpu, cuda or cuda:N")
    if name == "cpu":
        return name
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return "cuda:0" if gpus else "cpu"
    index = int(name.partition(":")[2] or 0)
    if index >= gpus:
        raise DeviceUnavailable(f"{name}: torch sees {gpus} CUDA device(s)")
    return f"cuda:{index}"
