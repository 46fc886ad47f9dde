"""The docs/tasks.md example: a third-party task package in a directory, through the same path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flocknode.aggregation import AggregationSettings, aggregate
from flocknode.crypto import canonical_bytes, parse_canonical
from flocknode.learning import (
    Learner,
    TaskSettings,
    TrainingSettings,
    load_task,
    model_hash,
    task_initial_state,
    write_shards,
)

PACKAGE_PARENT = Path(__file__).resolve().parents[2] / "fixtures" / "tasks"
SETTINGS = TrainingSettings(
    task="example_task:TASK", optimizer="sgd", learning_rate=0.5, local_steps=60, batch_size=32
)


@pytest.fixture(autouse=True)
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(PACKAGE_PARENT))
    yield


def test_example_task_loads_trains_evaluates_and_round_trips(tmp_path: Path) -> None:
    task = load_task(SETTINGS.task)
    shards = write_shards(task, tmp_path, 3, "dirichlet", 0.5, seed=1)
    assert (shards.nodes[0] / "points.csv").is_file()
    learners = [Learner.from_settings(SETTINGS, d, shards.test) for d in shards.nodes]
    g = learners[0].initial_state()
    assert sorted(g) == ["head.bias", "head.weight"]  # only the head is exchanged
    assert model_hash(g) == model_hash(task_initial_state(SETTINGS))  # what task create hashes
    updates = [lr.train(g, seed=i).update for i, lr in enumerate(learners)]
    assert all(sorted(u) == sorted(g) for u in updates)
    new = aggregate(g, updates, AggregationSettings()).model
    before, after = learners[1].evaluate(g, "test"), learners[1].evaluate(new, "test")
    assert after.score > before.score and after.accuracy > 0.8, (before, after)
    assert learners[2].evaluate(new, "val").ppm > learners[2].evaluate(g, "val").ppm
    back = parse_canonical(canonical_bytes(new))
    assert all(torch.equal(back[k], new[k]) for k in new)
    # the fixed features are rebuilt from init_seed, never exchanged: same answers anywhere
    assert learners[0].evaluate(back, "test") == learners[1].evaluate(new, "test")


def test_example_task_settings_hash_like_any_other() -> None:
    s = TaskSettings(training=SETTINGS)
    assert TaskSettings.from_canonical_json(s.canonical_json()) == s
    assert b'"task":"example_task:TASK"' in s.canonical_json()
