"""Learning plug-ins: model factories, each node's data, local training, evaluation.

The task names a model factory (``module:function``) and training settings
(``TrainingSettings``, part of ``TaskSettings`` whose canonical JSON hashes to
the task's ``configHash``); the node's config names its part of the data
(``node_index``, ``num_nodes``). ``Learner`` ties them together for the round
engine. Training and evaluation block: the round engine calls them through
``trio.to_thread`` (``Learner.train_async``/``evaluate_async``).
"""

from flocknode.learning.data import DataError, NodeData, Split, load_digits_node, partition
from flocknode.learning.factory import PluginError, load_callable
from flocknode.learning.learner import Learner, load_node_data
from flocknode.learning.models import (
    State,
    digits_mlp,
    initial_state,
    load_model_factory,
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
from flocknode.learning.train import Evaluation, TrainResult, evaluate, train_local

__all__ = [
    "ConfigMismatchError",
    "DataError",
    "Evaluation",
    "Learner",
    "NodeData",
    "PluginError",
    "Split",
    "State",
    "TaskSettings",
    "TrainResult",
    "TrainingSettings",
    "check_config",
    "digits_mlp",
    "evaluate",
    "flat_settings",
    "initial_state",
    "load_callable",
    "load_digits_node",
    "load_model_factory",
    "load_node_data",
    "model_hash",
    "model_state",
    "partition",
    "train_local",
]
