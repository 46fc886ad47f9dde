"""Readiness of a node, a pure function of its status snapshot."""

from __future__ import annotations

from typing import Any

CHAIN_STALE_SECONDS = 15.0  # no successful chain read for this long: not reachable


def readiness(status: dict[str, Any]) -> list[str]:
    """The reasons the node is not ready; empty when it is.

    Ready means: the chain answered recently, at least one peer is connected,
    and the node holds the task's current global model.
    """
    reasons: list[str] = []
    chain = status.get("chain") or {}
    age = chain.get("age_seconds")
    if age is None:
        reasons.append("chain not read yet")
    elif age > CHAIN_STALE_SECONDS or chain.get("error"):
        why = chain.get("error") or f"no successful read for {age:.0f} s"
        reasons.append(f"chain unreachable: {why}")
    if not status.get("peers"):
        reasons.append("no peer connected")
    if not status.get("holds_global_model"):
        h = str(status.get("global_model_hash", ""))[:14]
        reasons.append(f"does not hold the current global model {h}")
    return reasons
