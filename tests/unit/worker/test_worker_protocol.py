"""The daemon's checks on what a task worker answers (pure), and the [compute] switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flocknode import node as node_module
from flocknode.config import load_config
from flocknode.errors import ConfigError
from flocknode.learning.learner import Learner
from flocknode.learning.settings import TaskSettings
from flocknode.node import node_learner
from flocknode.worker.devices import DeviceUnavailable, resolve_device
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.protocol import (
    MAX_LINE,
    Request,
    WorkerFailure,
    check_tensors,
    decode_answer,
    max_tensor_bytes,
    spec_of,
)
from flocknode.worker.sandbox import (
    IsolationUnavailable,
    WorkerSpec,
    command,
    task_import_path,
    worker_env,
)

FIXTURE_TASKS = Path(__file__).resolve().parents[2] / "fixtures" / "tasks"

STATE = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}


def _line(**body: object) -> bytes:
    return json.dumps(body).encode()


def test_request_is_one_json_line() -> None:
    raw = Request(3, "m:f", {"seed": 1}, 0).encode()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert json.loads(raw)["call"] == "m:f"


def test_good_answers_decode() -> None:
    a = decode_answer(_line(id=5, ok=True, result={"n": 1}, tensor_bytes=40), 5)
    assert a.ok and a.tensor_bytes == 40 and a.result == {"n": 1}
    f = decode_answer(_line(id=5, ok=False, reason="oom", detail="MemoryError()"), 5)
    assert not f.ok and f.reason == "oom" and f.kind == ""
    d = decode_answer(
        _line(id=5, ok=False, reason="error", detail="x.csv: no samples", kind="data"), 5
    )
    assert (d.reason, d.kind, d.detail) == ("error", "data", "x.csv: no samples")
    odd = decode_answer(_line(id=5, ok=False, reason="error", detail="", kind="root"), 5)
    assert odd.kind == ""  # an unknown kind is a plain task error


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        _line(id=4, ok=True, result={}, tensor_bytes=0),  # another request's answer
        _line(id=5, ok=True, result=[], tensor_bytes=0),
        _line(id=5, ok=True, result={}),
        _line(id=5, ok=True, result={}, tensor_bytes=-1),
        _line(id=5, ok=True, result={}, tensor_bytes=True),
        _line(id=5, ok=False, reason="crash", detail=""),  # a reason only the daemon gives
        _line(id=5, result={}),
        b"{" + b" " * MAX_LINE + b"}",
    ],
)
def test_bad_answers_are_garbage(line: bytes) -> None:
    with pytest.raises(WorkerFailure) as e:
        decode_answer(line, 5)
    assert e.value.reason == "garbage"


def test_tensor_checks() -> None:
    spec = spec_of(STATE)
    check_tensors({"w": torch.ones(4, 3), "b": torch.ones(3)}, spec)
    bad = [
        {"w": torch.ones(4, 3)},
        {"w": torch.ones(4, 3), "b": torch.ones(3), "x": torch.ones(1)},
        {"w": torch.ones(3, 4), "b": torch.ones(3)},
        {"w": torch.ones(4, 3, dtype=torch.float64), "b": torch.ones(3)},
        {"w": torch.full((4, 3), float("inf")), "b": torch.ones(3)},
    ]
    for tensors in bad:
        with pytest.raises(WorkerFailure) as e:
            check_tensors(tensors, spec)
        assert e.value.reason == "garbage"
    assert max_tensor_bytes(spec) >= (12 + 3) * 4


def test_worker_gets_none_of_the_daemon_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOCKNODE_PRIVATE_KEY", "0x" + "11" * 32)
    spec = WorkerSpec("process", "/tmp/w")
    env = worker_env(spec)
    assert not any("FLOCKNODE" in k or "11" * 32 in v for k, v in env.items())
    assert env["TMPDIR"] == "/tmp/w/scratch"
    assert command(spec)[-4:] == ["-I", "-m", "flocknode.worker.entry", spec.to_json()]
    assert WorkerSpec.from_json(spec.to_json()) == spec


def _cfg(tmp_path: Path, compute: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(f"data_dir = 'd'\n[data]\npath = 'mine'\n[compute]\n{compute}\n")
    return p


def test_compute_section_is_validated(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, 'isolation = "namespace"\nmemory_mb = 1024\nthreads = 1'))
    assert (cfg.compute.isolation, cfg.compute.memory_mb, cfg.compute.threads) == (
        "namespace",
        1024,
        1,
    )
    with pytest.raises(ConfigError) as e:
        load_config(_cfg(tmp_path, 'isolation = "chroot"'))
    assert e.value.key == "compute.isolation"
    with pytest.raises(ConfigError) as e:
        load_config(_cfg(tmp_path, "memory_mb = 10"))
    assert e.value.key == "compute.memory_mb"


def test_node_learner_follows_the_switch(tmp_path: Path) -> None:
    from flocknode.learning import DigitsMLP, write_shards

    shards = write_shards(DigitsMLP(), tmp_path / "shards", 2)
    shards.nodes[0].rename(tmp_path / "mine")
    settings = TaskSettings()
    none = node_learner(
        load_config(_cfg(tmp_path, 'isolation = "none"')), settings, on_failure=print
    )
    assert isinstance(none, Learner) and not none.has_test
    cfg = load_config(_cfg(tmp_path, 'isolation = "process"\ntimeout_seconds = 20'))
    proc = node_learner(cfg, settings, on_failure=print, phase_seconds=(30, 10))
    assert isinstance(proc, IsolatedLearner) and proc.worker.spec.isolation == "process"
    assert proc.worker.spec.base == str(tmp_path / "d" / "worker")
    assert proc.worker.spec.read_only == (str(tmp_path / "mine"),) and not proc.has_test
    assert proc.data_path == str(tmp_path / "mine") and proc.settings == settings.training
    # a call is killed at its phase's length, or earlier if the config says so
    assert (proc.timeout, proc.train_timeout, proc.eval_timeout) == (20, 20, 10)
    proc.close()


def test_namespace_isolation_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> None:
        raise IsolationUnavailable("cannot create network/mount/PID namespaces (EPERM)")

    monkeypatch.setattr(node_module, "probe", unavailable)
    cfg = load_config(_cfg(tmp_path, ""))
    with pytest.raises(ConfigError) as e:
        node_learner(cfg, TaskSettings(), on_failure=print)
    assert e.value.key == "compute.isolation"
    assert "\n" not in str(e.value) and 'isolation = "process"' in str(e.value)


def test_device_resolution() -> None:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if gpus else "cpu")
    with pytest.raises(DeviceUnavailable):
        resolve_device(f"cuda:{gpus}")
    for bad in ("gpu", "cuda:", "cuda:x", "mps"):
        with pytest.raises(DeviceUnavailable):
            resolve_device(bad)


def test_missing_device_is_one_config_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_cfg(tmp_path, 'device = "gpu"'))
    assert e.value.key == "compute.device"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cfg = load_config(_cfg(tmp_path, f'device = "cuda:{gpus}"\nisolation = "none"'))
    with pytest.raises(ConfigError) as e:
        node_learner(cfg, TaskSettings(), on_failure=print)
    assert e.value.key == "compute.device" and "CUDA device" in str(e.value)


def test_a_third_party_task_is_imported_from_its_own_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert task_import_path("digits-cnn") == ()
    assert task_import_path("flocknode.learning.builtin:DigitsMLP") == ()  # bound anyway
    assert task_import_path("no_such_task_package:TASK") == ()  # the worker says so
    monkeypatch.syspath_prepend(str(FIXTURE_TASKS))
    assert task_import_path("example_task:TASK") == (str(FIXTURE_TASKS),)
    assert task_import_path("example_task.task:RingsTask") == (str(FIXTURE_TASKS),)
