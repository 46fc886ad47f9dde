"""Learning: the task interface, each participant's data, local training, evaluation.

The task's settings (``TrainingSettings``, part of ``TaskSettings`` whose
canonical JSON hashes to the task's ``configHash``) name the task's code (a
built-in task or ``module:attr``, see docs/tasks.md); the node's config names
its data (``[data] path``). ``Learner`` ties them together for the round
engine. Training and evaluation block: the round engine calls them through
``trio.to_thread`` (``Learner.train_async``/``evaluate_async``).
"""

from flocknode.learning.builtin import BUILTIN_TASKS, ClassifierTask, DigitsCNN, DigitsMLP
from flocknode.learning.data import Shards, partition, shard_in_memory, write_shards
from flocknode.learning.factory import PluginError, load_callable
from flocknode.learning.learner import (
    Learner,
    NodeData,
    TrainResult,
    load_node_data,
    state_delta,
    task_initial_state,
)
from flocknode.learning.models import (
    State,
    digits_mlp,
    initial_state,
    load_model_factory,
    load_task,
    model_hash,
    model_state,
)
from flocknode.learning.settings import (
    ConfigMismatchError,
    TaskSettings,
    TrainingSettings,
    check_config,
    flat_settings,
)
from flocknode.learning.task import DataError, Evaluation, Samples, Task, private_split

__all__ = [
    "BUILTIN_TASKS",
    "ClassifierTask",
    "ConfigMismatchError",
    "DataError",
    "DigitsCNN",
    "DigitsMLP",
    "Evaluation",
    "Learner",
    "NodeData",
    "PluginError",
    "Samples",
    "Shards",
    "State",
    "Task",
    "TaskSettings",
    "TrainResult",
    "TrainingSettings",
    "check_config",
    "digits_mlp",
    "flat_settings",
    "initial_state",
    "load_callable",
    "load_model_factory",
    "load_node_data",
    "load_task",
    "model_hash",
    "model_state",
    "partition",
    "private_split",
    "shard_in_memory",
    "state_delta",
    "task_initial_state",
    "write_shards",
]
