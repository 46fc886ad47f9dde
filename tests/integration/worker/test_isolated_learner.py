"""``IsolatedLearner``: real digits training in the jailed worker gives the daemon's bits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from flocknode.learning.learner import Learner
from flocknode.learning.settings import TrainingSettings
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.protocol import WorkerFailure
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec, probe

SETTINGS = TrainingSettings(local_steps=20)


@pytest.fixture
async def isolated(tmp_path: Path) -> AsyncIterator[tuple[IsolatedLearner, list[str]]]:
    try:
        probe()
    except IsolationUnavailable as e:
        pytest.skip(f"no namespaces on this machine: {e}")
    reasons: list[str] = []
    spec = WorkerSpec("namespace", str(tmp_path / "worker"), threads=torch.get_num_threads())
    learner = IsolatedLearner.from_settings(
        SETTINGS, 2, 5, spec, timeout=300, on_failure=reasons.append
    )
    yield learner, reasons
    learner.close()


async def test_same_bits_as_in_process(isolated: tuple[IsolatedLearner, list[str]]) -> None:
    learner, reasons = isolated
    local = Learner.from_settings(SETTINGS, 2, 5)
    init = local.initial_state()
    assert all(torch.equal(init[k], v) for k, v in learner.initial_state().items())
    await learner.warm_up_async()
    for seed in (7, 8):
        want = local.train(init, seed=seed)
        got = await learner.train_async(init, seed=seed)
        assert got.samples == want.samples and got.final_loss == want.final_loss
        assert list(got.update) == list(want.update)
        assert all(torch.equal(got.update[k], want.update[k]) for k in want.update)
    trained = {k: init[k] + want.update[k] for k in init}
    for split in ("val", "test"):
        assert await learner.evaluate_async(trained, split) == local.evaluate(trained, split)
    flipped = await learner.train_async(init, seed=8, label_flip=True)
    assert not torch.equal(flipped.update["0.weight"], want.update["0.weight"])
    assert reasons == []


async def test_task_error_is_a_counted_failure(
    isolated: tuple[IsolatedLearner, list[str]],
) -> None:
    learner, reasons = isolated
    with pytest.raises(WorkerFailure) as e:
        await learner.evaluate_async(learner.initial_state(), "nope")  # type: ignore[arg-type]
    assert e.value.reason == "error" and "unknown split" in e.value.detail
    assert reasons == ["error"]
    assert (await learner.evaluate_async(learner.initial_state(), "val")).total > 0
