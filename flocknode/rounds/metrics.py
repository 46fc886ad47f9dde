"""What the round engine did, for status, /metrics and the cluster summary."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundMetrics:
    counters: Counter[str] = field(default_factory=Counter)
    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    tx_seconds: list[float] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)  # role history
    accuracy: dict[int, float] = field(default_factory=dict)  # global model round -> test acc

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def role(self, round: int, role: str, seat: int) -> None:
        if not any(r["round"] == round for r in self.roles):
            self.roles.append({"round": round, "role": role, "seat": seat, "at": time.time()})
            del self.roles[:-200]
