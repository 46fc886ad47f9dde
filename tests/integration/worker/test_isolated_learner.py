"""``IsolatedLearner`` against the in-process ``Learner``: the same task code in the
jailed worker gives the same bits (updates, metrics, evaluations), for the built-in
tasks and a third-party task package imported from its own directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flocknode.learning import Learner, TrainingSettings, load_task, write_shards
from flocknode.learning.task import DataError
from flocknode.worker.client import TaskWorker
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec, probe, task_import_path

FIXTURE_TASKS = Path(__file__).resolve().parents[2] / "fixtures" / "tasks"
SETTINGS = [
    TrainingSettings(task="digits-mlp", local_steps=20, lr_decay=0.5, lr_min=0.1),
    TrainingSettings(task="digits-cnn", local_steps=8, batch_size=32),  # BatchNorm: int64 too
    TrainingSettings(task="example_task:TASK", optimizer="sgd", learning_rate=0.5, local_steps=20),
    # a 5.6M-value first layer: its Adam moments live in a file of the worker's scratch
    TrainingSettings(task="wide-mlp-25mb", local_steps=2),
]


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(FIXTURE_TASKS))
    yield


def _lm_lora(tmp_path: Path) -> tuple[TrainingSettings, Path] | None:
    """lm-lora on a tiny random GPT-2 saved to disk (the llm extra), or None without it."""
    try:
        from flocknode.learning.base_model import dir_hash
        from flocknode.learning.lm_lora import LMLoRA, require_llm

        require_llm()
    except Exception:
        return None
    tiny = tmp_path / "tiny-gpt2"
    tiny.mkdir()
    LMLoRA().write_base_model(tiny)
    base = {"task": "lm-lora", "base_model_hash": dir_hash(tiny), **LMLoRA.tester_training}
    return TrainingSettings(**{**base, "local_steps": 4}), tiny  # type: ignore[arg-type]


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the jail's helper starts the worker's Python)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def _fds(pid: int) -> list[Path]:
    return list(Path(f"/proc/{pid}/fd").iterdir())


async def test_same_bits_as_in_process(tmp_path: Path, on_path: None) -> None:
    """One jailed worker serves the tasks in turn (a worker start is the slow part)."""
    try:
        probe()
    except IsolationUnavailable as e:
        pytest.skip(f"no namespaces on this machine: {e}")
    cases: list[tuple[TrainingSettings, Path | None]] = [(s, None) for s in SETTINGS]
    lm = _lm_lora(tmp_path)
    if lm is not None:  # adapters only, on a frozen base model bound read-only
        cases.append(lm)
    shards = {s.task: write_shards(load_task(s.task), tmp_path / s.task, 3) for s, _ in cases}
    paths = tuple(str(p) for sh in shards.values() for p in (sh.nodes[1], sh.test))
    paths += tuple(str(b) for _, b in cases if b is not None)
    reasons: list[str] = []
    spec = WorkerSpec(
        "namespace",
        str(tmp_path / "worker"),
        read_only=paths,
        python_path=task_import_path("example_task:TASK"),
        threads=torch.get_num_threads(),
    )
    worker = TaskWorker(spec, reasons.append)
    try:
        for settings, base in cases:
            sh = shards[settings.task]
            local = Learner.from_settings(settings, sh.nodes[1], sh.test, base_model=base)
            iso = IsolatedLearner(
                settings, worker, str(sh.nodes[1]), str(sh.test), 300, base_model=base
            )
            init = local.initial_state()
            built = await iso.initial_state_async(1 << 30)  # in the worker
            assert {k: (v.dtype, v.shape) for k, v in built.items()} == {
                k: (v.dtype, v.shape) for k, v in init.items()
            }
            assert all(torch.equal(init[k], v) for k, v in built.items())
            assert await iso.warm_up_async() == local.sizes and iso.has_test
            for seed, round_no in ((7, 1), (8, 3)):  # the round picks the learning rate
                want = local.train(init, seed=seed, round_no=round_no)
                got = await iso.train_async(init, seed=seed, round_no=round_no)
                assert (got.samples, got.metrics) == (want.samples, want.metrics)
                assert list(got.update) == list(want.update)
                for k, t in want.update.items():
                    assert got.update[k].dtype == t.dtype and torch.equal(got.update[k], t), k
            trained = {k: init[k] + want.update[k] for k in init}
            for split in ("val", "test"):
                assert await iso.evaluate_async(trained, split) == local.evaluate(trained, split)
            if settings.task == "digits-cnn":
                dtypes = {t.dtype for t in got.update.values()}
                assert dtypes == {torch.float32, torch.int64}
            if settings.lr_decay < 1:
                first = local.train(init, seed=8, round_no=1).update
                assert any(not torch.equal(first[k], want.update[k]) for k in init)
            if settings.task != "lm-lora":  # label flipping: classifiers only
                flipped = await iso.train_async(init, seed=8, label_flip=True)
                assert any(not torch.equal(flipped.update[k], want.update[k]) for k in init)
        assert reasons == [] and worker.starts == 1
        # the worker keeps its optimizer state file, unnamed, in its scratch directory
        assert worker.pid is not None
        links = [os.readlink(fd) for pid in _tree(worker.pid) for fd in _fds(pid)]
        assert any(link.endswith("(deleted)") and "/scratch/" in link for link in links), links

        # A task error is counted and leaves the worker serving; a DataError in the
        # worker is one in the daemon too; a split the node does not have is refused
        # in the daemon, as the in-process learner does.
        with pytest.raises(DataError, match="unknown split 'nope'"):
            await iso.evaluate_async(init, "nope")  # type: ignore[arg-type]
        no_test = IsolatedLearner(SETTINGS[0], worker, paths[0], None, 300)
        with pytest.raises(DataError, match="no test set"):
            await no_test.evaluate_async(init, "test")
        assert reasons == ["error"] and worker.starts == 1
        assert (await iso.evaluate_async(init, "val")).samples == local.sizes.val
    finally:
        worker.close()
