"""The built-in task functions the worker runs for ``IsolatedLearner`` (worker side).

Each is ``fn(tensors, args) -> (tensors, result)``; ``args`` carries the
task's training settings and this node's part of the data, so the worker
builds the same ``Learner`` the daemon would (cached per process: the data is
loaded once per worker, not per call).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from flocknode.learning.learner import Learner
from flocknode.learning.settings import TrainingSettings

_LEARNERS: dict[str, Learner] = {}


def _learner(args: dict[str, Any]) -> Learner:
    where = [args["training"], args["node_index"], args["num_nodes"], args["device"]]
    key = json.dumps(where, sort_keys=True)
    learner = _LEARNERS.get(key)
    if learner is None:
        settings = TrainingSettings(**args["training"])
        node_index, num_nodes, device = where[1:]
        learner = Learner.from_settings(settings, node_index, num_nodes, device)
        _LEARNERS.clear()
        _LEARNERS[key] = learner
    return learner


def train(
    tensors: dict[str, torch.Tensor], args: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    res = _learner(args).train(tensors, seed=args["seed"], label_flip=args["label_flip"])
    info = {"seconds": res.seconds, "samples": res.samples, "final_loss": res.final_loss}
    return res.update, info


def evaluate(
    tensors: dict[str, torch.Tensor], args: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ev = _learner(args).evaluate(tensors, args["split"])
    return {}, {"correct": ev.correct, "total": ev.total}


def warm_up(
    tensors: dict[str, torch.Tensor], args: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load the data and take one throw-away training step (torch's lazy imports)."""
    _learner(args).warm_up()
    return {}, {}


def ping(
    tensors: dict[str, torch.Tensor], args: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Echo: the tensors and args as given (tests, benchmarks)."""
    return dict(tensors), {"args": args}
