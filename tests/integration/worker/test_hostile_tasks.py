"""Hostile task packages (``tests/fixtures/tasks/hostile_task``) run through the
node's own path: ``IsolatedLearner`` -> the jailed worker -> ``load_task`` ->
the task's ``load_data``/``train``/``evaluate``. Each misdeed is contained: the
jail denies it, or the call ends in one log line and one counted failure, and
the next call of an honest task in the same ``TaskWorker`` is served."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flocknode.learning import DigitsMLP, TrainingSettings, write_shards
from flocknode.learning.task import DataError
from flocknode.logs import PeerLog
from flocknode.worker import learner as worker_learner
from flocknode.worker.client import TaskWorker
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.protocol import WorkerFailure
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec, probe, task_import_path

FIXTURE_TASKS = Path(__file__).resolve().parents[2] / "fixtures" / "tasks"
FAILURES = [  # task, the call that misbehaves, the reason counted
    ("Garbage", "evaluate", "garbage"),
    ("Reshape", "train", "garbage"),
    ("Hog", "train", "oom"),
    ("Hang", "train", "timeout"),
]  # a crash: test_worker_isolation.py (the same path below the task)


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(FIXTURE_TASKS))
    yield


async def test_each_hostile_task_is_contained(
    tmp_path: Path,
    on_path: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the failure lines are rate-limited per reason across the process, and an
    # in-process CLI test may have left the root logger at "error": count from a
    # fresh budget, at warning level
    monkeypatch.setattr(worker_learner, "limited_log", PeerLog(worker_learner.log))
    caplog.set_level(logging.WARNING, logger=worker_learner.log.name)
    try:
        probe()
    except IsolationUnavailable as e:
        pytest.skip(f"no namespaces on this machine: {e}")
    data = write_shards(DigitsMLP(), tmp_path / "shards", 4).nodes[0]
    (tmp_path / "shards" / "secret.txt").write_text("not yours")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.csv").write_text("p0,label\n3,1\n")
    reasons: list[str] = []
    spec = WorkerSpec(
        "namespace",
        str(tmp_path / "worker"),
        read_only=(str(data), str(bad)),
        python_path=task_import_path("hostile_task:Prober"),
        memory_bytes=3 << 30,
        # one thread here and in ``honest_update``: with two, a loaded machine can
        # change how a matmul's sums are split, and the last bits with it
        threads=1,
    )
    worker = TaskWorker(spec, reasons.append)

    def learner(task: str, train_timeout: float = 300) -> IsolatedLearner:
        settings = TrainingSettings(task=task, local_steps=5)
        return IsolatedLearner(settings, worker, str(data), None, 300, train_timeout)

    honest = learner("digits-mlp")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        (data / "port.txt").write_text(str(listener.getsockname()[1]))
        try:
            init = await honest.initial_state_async(1 << 30)
            prober = learner("hostile_task:Prober")
            # the task's code runs in the worker only: its initial model too
            assert set(await prober.initial_state_async(1 << 30)) == set(init)
            assert "hostile_task" not in sys.modules
            got = await prober.train_async(init, seed=1)
            assert {k: got.metrics[k] for k in ("connected", "read_outside", "wrote_data")} == {
                "connected": 0.0,  # no network in the jail
                "read_outside": 0.0,  # only the data path is there
                "wrote_data": 0.0,  # read-only
            }
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()  # nothing reached the host's port
            assert (data / "port.txt").read_text() == str(listener.getsockname()[1])
            assert reasons == [] and worker.starts == 1

            # bad data read in the worker is the daemon's one line (exit code 2 at start)
            unusable = IsolatedLearner(TrainingSettings(), worker, str(bad), None, 300)
            caplog.clear()
            with pytest.raises(DataError) as bad_data:
                await unusable.load()
            assert str(bad_data.value) == f"{bad / 'x.csv'}: no column 'p1' (the task needs it)"
            assert bad_data.value.exit_code == 2 and reasons == ["error"]
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
            reasons.clear()

            for n, (task, call, reason) in enumerate(FAILURES, start=1):
                hostile = learner(f"hostile_task:{task}", 3.0 if task == "Hang" else 120)
                caplog.clear()
                pid = worker.pid
                with pytest.raises(WorkerFailure) as e:
                    if call == "train":
                        await hostile.train_async(init, seed=1)
                    else:
                        await hostile.evaluate_async(init, "val")
                assert (task, e.value.reason) == (task, reason)
                assert reasons[-1] == reason and len(reasons) == n  # the metric
                lines = [r for r in caplog.records if r.levelno == logging.WARNING]
                assert len(lines) == 1 and reason in lines[0].getMessage()  # the log line
                assert worker.pid is None and pid is not None
                with pytest.raises(ProcessLookupError):  # killed and reaped, no zombie
                    os.kill(pid, 0)
                ev = await honest.evaluate_async(init, "val")  # the next call is served
                assert ev.samples > 0 and 0.0 <= ev.score <= 1.0
            assert worker.starts == 1 + len(FAILURES)
            assert torch.equal(
                (await honest.train_async(init, seed=1)).update["0.weight"],
                honest_update(data, init),
            )
        finally:
            worker.close()


def honest_update(data: Path, init: dict[str, torch.Tensor]) -> torch.Tensor:
    from flocknode.learning import Learner

    local = Learner.from_settings(TrainingSettings(task="digits-mlp", local_steps=5), data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return local.train(init, seed=1).update["0.weight"]
    finally:
        torch.set_num_threads(threads)
