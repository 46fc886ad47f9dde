"""A node runs for weeks: what the round engine keeps per round must not grow with every round."""

from __future__ import annotations

import pytest

from flocknode.rounds.metrics import KEEP_HISTORY, WORK_BUCKETS, RoundMetrics


def test_history_keeps_the_last_rounds_only() -> None:
    m = RoundMetrics()
    for r in range(1, 3 * KEEP_HISTORY):
        m.role(r, "voter", 0)
        m.model_accuracy(r, r / 1000)
    assert len(m.roles) == KEEP_HISTORY
    assert m.roles[-1]["round"] == 3 * KEEP_HISTORY - 1
    assert sorted(m.accuracy) == list(range(2 * KEEP_HISTORY, 3 * KEEP_HISTORY))


def test_work_timings_are_fixed_size_histograms() -> None:
    m = RoundMetrics()
    for i in range(10_000):
        m.train_seconds.observe(0.3 if i % 2 else 7.0)
    m.eval_seconds.observe(0.05)
    t = m.timings()
    assert t["train"]["count"] == 10_000
    assert abs(t["train"]["sum"] - 5_000 * 7.3) < 1e-6
    assert len(t["train"]["buckets"]) == len(WORK_BUCKETS)
    le = dict((b, n) for b, n in t["train"]["buckets"])
    assert le[0.5] == 5_000 and le[10.0] == 10_000
    assert t["eval"]["count"] == 1 and t["eval"]["buckets"][0] == [0.1, 1]


def test_counters_are_declared_once_with_their_label_names() -> None:
    m = RoundMetrics()
    m.inc("engine_errors", "tick")
    m.inc("engine_errors", "tick")
    m.inc("engine_errors", "gossip")
    m.inc("keeper_calls", "open")
    m.inc("store_pruned_bytes", n=300)
    assert m.get("engine_errors", "tick") == 2 and m.total("engine_errors") == 3
    assert m.by_label() == {
        "engine_errors": {"gossip": 1, "tick": 2},
        "keeper_calls": {"open": 1},
    }
    assert dict(m.counters) == {"store_pruned_bytes": 300}  # no value in a name
    with pytest.raises(ValueError, match="undeclared"):
        m.inc("engine_errors_tick")
    with pytest.raises(ValueError, match="takes label 'where'"):
        m.inc("engine_errors")
    with pytest.raises(ValueError, match="takes label ''"):
        m.inc("chain_errors", "x")


def test_every_worker_failure_reason_is_a_counted_label() -> None:
    # the node counts each failed task-worker call by its reason (docs/protocol.md,
    # "Task worker"); an undeclared counter would raise inside the failure path
    from typing import get_args

    from flocknode.worker.protocol import Reason

    m = RoundMetrics()
    for reason in get_args(Reason):
        m.inc("worker_failures", reason)
    assert m.by_label()["worker_failures"] == {r: 1 for r in sorted(get_args(Reason))}
