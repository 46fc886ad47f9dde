"""``Learner``: one node's model factory, data and training settings in one object.

The round engine builds one per node (``Learner.from_settings``) and calls:

    learner.warm_up()                            # optional: pay torch's lazy imports now
    learner.initial_state()                      # the task's initial global model
    learner.train(global_state, seed=...)        # proposer: TrainResult (update, seconds)
    learner.evaluate(state, "val")               # voter: Evaluation on private validation
    await learner.train_async(...)               # same, in a worker thread (trio)
    await learner.evaluate_async(...)

``train``/``evaluate`` build a fresh model per call, so calls from several
threads do not share mutable torch state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import trio

from flocknode.learning.data import DataError, NodeData, load_digits_node
from flocknode.learning.factory import PluginError, load_callable
from flocknode.learning.models import ModelFactory, State, initial_state, load_model_factory
from flocknode.learning.settings import TrainingSettings
from flocknode.learning.train import Evaluation, TrainResult, evaluate, train_local

SplitName = Literal["train", "val", "test"]
BUILTIN_DATASETS: dict[str, Callable[..., NodeData]] = {"digits": load_digits_node}


def load_node_data(settings: TrainingSettings, node_index: int, num_nodes: int) -> NodeData:
    """This node's data: a built-in data set by name, or a ``module:function`` loader.

    A loader is called with keyword arguments ``node_index, num_nodes, split,
    alpha, seed, test_fraction, val_fraction`` and returns ``NodeData``.
    """
    loader = BUILTIN_DATASETS.get(settings.dataset)
    if loader is None:
        if ":" not in settings.dataset:
            known = ", ".join(sorted(BUILTIN_DATASETS))
            raise PluginError(
                f"data set {settings.dataset!r}: not built in ({known}) and not 'module:function'"
            )
        loader = load_callable(settings.dataset, "data loader")
    data = loader(
        node_index=node_index,
        num_nodes=num_nodes,
        split=settings.split,
        alpha=settings.alpha,
        seed=settings.data_seed,
        test_fraction=settings.test_fraction,
        val_fraction=settings.val_fraction,
    )
    if not isinstance(data, NodeData):
        raise PluginError(f"data loader {settings.dataset!r} returned {type(data).__name__}")
    return data


class RoundLearner(Protocol):
    """What the round engine needs of a learner: ``Learner`` (in the daemon) or
    ``flocknode.worker.IsolatedLearner`` (in the task worker)."""

    def initial_state(self) -> State: ...

    async def train_async(
        self, global_state: Mapping[str, torch.Tensor], seed: int, label_flip: bool = False
    ) -> TrainResult: ...

    async def evaluate_async(
        self, state: Mapping[str, torch.Tensor], split: SplitName = "val"
    ) -> Evaluation: ...


@dataclass(frozen=True, eq=False)
class Learner:
    settings: TrainingSettings
    factory: ModelFactory
    data: NodeData
    node_index: int
    device: str = "cpu"  # where training and evaluation run (``resolve_device``)

    @classmethod
    def from_settings(
        cls, settings: TrainingSettings, node_index: int, num_nodes: int, device: str = "cpu"
    ) -> Learner:
        """Resolve the model factory and load this node's data (``PluginError``/``DataError``)."""
        factory = load_model_factory(settings.model_factory)
        data = load_node_data(settings, node_index, num_nodes)
        return cls(settings, factory, data, node_index, device)

    def warm_up(self) -> None:
        """One throw-away training step: the first optimizer in a process costs about
        1.3 s (torch imports lazily), which would otherwise land in round one's timing."""
        s = self.settings
        train_local(
            self.factory,
            self.initial_state(),
            self.data.train,
            steps=1,
            epochs=1,
            batch_size=s.batch_size,
            optimizer=s.optimizer,
            learning_rate=s.learning_rate,
            momentum=s.momentum,
            seed=0,
            num_classes=self.data.num_classes,
            device=self.device,
        )

    def initial_state(self) -> State:
        return initial_state(self.factory, self.settings.init_seed)

    def split(self, name: SplitName) -> Any:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}")
        return getattr(self.data, name)

    def train(
        self, global_state: Mapping[str, torch.Tensor], seed: int, label_flip: bool = False
    ) -> TrainResult:
        s = self.settings
        return train_local(
            self.factory,
            global_state,
            self.data.train,
            steps=s.local_steps,
            epochs=s.local_epochs,
            batch_size=s.batch_size,
            optimizer=s.optimizer,
            learning_rate=s.learning_rate,
            momentum=s.momentum,
            seed=seed,
            num_classes=self.data.num_classes,
            label_flip=label_flip,
            device=self.device,
        )

    def evaluate(self, state: Mapping[str, torch.Tensor], split: SplitName = "val") -> Evaluation:
        return evaluate(self.factory, state, self.split(split), self.device)

    async def train_async(
        self, global_state: Mapping[str, torch.Tensor], seed: int, label_flip: bool = False
    ) -> TrainResult:
        fn = functools.partial(self.train, global_state, seed, label_flip)
        return await trio.to_thread.run_sync(fn)

    async def evaluate_async(
        self, state: Mapping[str, torch.Tensor], split: SplitName = "val"
    ) -> Evaluation:
        return await trio.to_thread.run_sync(functools.partial(self.evaluate, state, split))
