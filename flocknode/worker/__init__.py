"""The task worker: task code (training, evaluation) in a separate, isolated process.

``TaskWorker`` runs ``module:function`` calls in a worker process (tensors in
safetensors files, results as size-capped JSON, never pickles);
``IsolatedLearner`` is the round engine's learner on top of it;
``flocknode.worker.sandbox`` builds the jail (docs/protocol.md, "Task worker").
"""

from flocknode.worker.client import TaskWorker
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.protocol import REASONS, Reason, WorkerFailure
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec

__all__ = [
    "REASONS",
    "IsolatedLearner",
    "IsolationUnavailable",
    "Reason",
    "TaskWorker",
    "WorkerFailure",
    "WorkerSpec",
]
