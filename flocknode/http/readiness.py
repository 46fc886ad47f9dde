"""Readiness of a node, a pure function of its status snapshot."""

from __future__ import annotations

from flocknode.status import NodeStatus

CHAIN_STALE_SECONDS = 15.0  # no successful chain read for this long: not reachable


def not_ready_reasons(status: NodeStatus) -> list[str]:
    """The reasons the node is not ready; empty when it is.

    Ready means: the chain answered recently, at least one peer is connected,
    and the node holds the task's current global model.
    """
    reasons: list[str] = []
    age, error = status.chain.age_seconds, status.chain.error
    if age is None:
        reasons.append("chain not read yet")
    elif age > CHAIN_STALE_SECONDS or error:
        why = error or f"no successful read for {age:.0f} s"
        reasons.append(f"chain unreachable: {why}")
    if not status.p2p.peers:
        reasons.append("no peer connected")
    if not status.model.held:
        reasons.append(f"does not hold the current global model {status.model.global_hash[:14]}")
    return reasons
