"""The calls the task worker answers for ``IsolatedLearner`` (worker side).

Each is ``fn(tensors, args) -> (tensors, result)``. ``args`` carries the
task's training settings, the participant's data paths and the device, so
the worker builds the same ``Learner`` the daemon would (``load_task`` for a
built-in name or ``module:attr``, the task's ``load_data`` on ``[data]
path``) and runs the same task code. The ``Learner`` is kept per process: the
data is read once per worker, not per call. Results are plain JSON numbers;
states go back as tensors (safetensors bytes, ``flocknode.worker.entry``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from flocknode.learning.learner import Learner, task_initial_state
from flocknode.learning.settings import TrainingSettings

Tensors = dict[str, torch.Tensor]
_LEARNERS: dict[str, Learner] = {}


def _learner(args: dict[str, Any]) -> Learner:
    names = ("training", "data_path", "test_path", "device", "base_model", "package_dir")
    key = json.dumps([args.get(k) for k in names], sort_keys=True)
    learner = _LEARNERS.get(key)
    if learner is None:
        settings = TrainingSettings(**args["training"])
        package = args.get("package_dir")
        learner = Learner.from_settings(
            settings,
            args["data_path"],
            args["test_path"],
            args["device"],
            base_model=args.get("base_model"),
            package_dir=None if package is None else Path(package),
        )
        _LEARNERS.clear()
        _LEARNERS[key] = learner
    return learner


def initial(tensors: Tensors, args: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    """The task's initial global model (no data read): the daemon checks its hash
    against the task's on-chain initial model, so the task's import-time code
    runs here and never in the daemon."""
    package = args.get("package_dir")
    state = task_initial_state(
        TrainingSettings(**args["training"]),
        base_model=None if args.get("base_model") is None else Path(args["base_model"]),
        package_dir=None if package is None else Path(package),
    )
    return {k: v.contiguous() for k, v in state.items()}, {}


def load(tensors: Tensors, args: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    """Read and split the participant's files; the split sizes."""
    sizes = _learner(args).sizes
    return {}, {"train": sizes.train, "val": sizes.val, "test": sizes.test}


def warm_up(tensors: Tensors, args: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    """``load``, then one throw-away training step (torch's lazy imports)."""
    _learner(args).warm_up()
    return load(tensors, args)


def train(tensors: Tensors, args: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    res = _learner(args).train(
        tensors, seed=args["seed"], label_flip=args["label_flip"], round_no=args.get("round", 1)
    )
    info = {"seconds": res.seconds, "samples": res.samples, "metrics": dict(res.metrics)}
    return res.update, info


def evaluate(tensors: Tensors, args: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    ev = _learner(args).evaluate(tensors, args["split"])
    return {}, {"score": ev.score, "samples": ev.samples, "metrics": dict(ev.metrics)}


def ping(tensors: Tensors, args: dict[str, Any]) -> tuple[Tensors, dict[str, Any]]:
    """Echo: the tensors and args as given (tests, benchmarks)."""
    return dict(tensors), {"args": args}
