"""The task interface: what a task's code provides and what the node does with it.

A task is an object with these methods (``Task`` is a base class with the
defaults; any object with the same methods works, see docs/tasks.md):

    build_model() -> nn.Module                      # the model, fresh (weights not yet set)
    load_data(path: Path) -> Samples                # every sample in the participant's files
    train(model, data, settings, seed, device) -> dict[str, float]    # in place; metrics
    evaluate(model, data, device) -> Evaluation     # score (higher is better) + metrics
    exchanged(model) -> list[str]                   # state entries in the global model

The node (``Learner``) does the rest, the same way for every task: it builds
the initial model (``build_model`` after ``torch.manual_seed(init_seed)``),
splits the loaded samples into private training and validation parts
(``private_split``, deterministic given ``data_seed``), loads a global state
into a fresh model before each call, and turns a trained model into an update
(trained minus global, for the exchanged entries). Nothing here touches the
network or a file other than ``load_data``'s, and every argument and result is
plain data (tensors, numbers, strings), so a worker process can run the same
calls and send states back as canonical tensor bytes.

State entries may be float32, float16, bfloat16, int64 or int32 tensors; the
aggregation and the canonical encoding give each a deterministic treatment
(``flocknode.aggregation.core``, ``flocknode.crypto.canonical``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from flocknode.errors import FlockError

if TYPE_CHECKING:
    from flocknode.learning.settings import TrainingSettings

IntArray = npt.NDArray[np.int64]


class DataError(FlockError, ValueError):
    """Data that cannot be used: one line naming the file (or setting) and the problem."""

    exit_code = 2


@dataclass(frozen=True, eq=False)
class Samples:
    """``n`` samples: inputs ``x`` (first dimension n) and targets ``y`` (n, int64 labels
    for classifiers; any tensor with first dimension n for other tasks)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[:1] != self.y.shape[:1]:
            raise ValueError(f"{self.x.shape[0]} inputs but {self.y.shape[0]} targets")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: Sequence[int] | IntArray) -> Samples:
        index = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return Samples(self.x[index], self.y[index])


@dataclass(frozen=True)
class Evaluation:
    """A task's verdict on a model: ``score`` (higher is better) and named metrics.

    ``ppm`` is the score in millionths as an integer, what a voter puts on
    chain (docs/protocol.md, step 6); ``accuracy`` is the ``accuracy`` metric
    (the share of correct predictions) where the task reports one.
    """

    score: float
    samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def ppm(self) -> int:
        if not math.isfinite(self.score):
            return -(2**62)  # a model whose score is not a number is worse than any
        return math.floor(self.score * 1_000_000 + 0.5)

    @property
    def accuracy(self) -> float:
        return float(self.metrics.get("accuracy", 0.0))


class Task(abc.ABC):
    """Defaults for a task: all state entries are exchanged; subclasses implement
    the four abstract methods (a class missing one cannot be instantiated).

    ``name`` is for messages; ``num_classes`` is set by classifiers (the test
    cluster's label-flip cheat needs it) and ``None`` otherwise.
    """

    name: str = "task"
    num_classes: int | None = None
    # What differs from the settings dataclasses' defaults when a task of this
    # kind is created (``flocknode.learning.settings.task_defaults``).
    settings_defaults: ClassVar[Mapping[str, Any]] = {}

    @abc.abstractmethod
    def build_model(self) -> nn.Module: ...

    @abc.abstractmethod
    def load_data(self, path: Path) -> Samples: ...

    @abc.abstractmethod
    def train(
        self,
        model: nn.Module,
        data: Samples,
        settings: TrainingSettings,
        seed: int,
        device: torch.device,
    ) -> dict[str, float]: ...

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, data: Samples, device: torch.device) -> Evaluation: ...

    def exchanged(self, model: nn.Module) -> list[str]:
        """The state entries that make up the global model (default: all of them)."""
        return list(model.state_dict())

    # Testers only (``flocknode cluster up``): write samples in the task's format.
    def write_data(self, path: Path, data: Samples) -> None:
        raise NotImplementedError(f"task {self.name!r} cannot write data files")

    def reference_data(self) -> Samples:
        """A data set the test cluster shards among its nodes (testers only)."""
        raise NotImplementedError(f"task {self.name!r} has no reference data set")


def private_split(n: int, val_fraction: float, seed: int) -> tuple[IntArray, IntArray]:
    """Sample indices (training, validation) of a participant's ``n`` samples.

    A permutation drawn with ``numpy.random.RandomState(seed)`` (a stream numpy
    keeps stable across versions); its first ``ceil(val_fraction * n)``
    indices are the validation split. The same files in the same order always
    give the same split; both parts are returned sorted.
    """
    order = np.random.RandomState(seed % 2**32).permutation(n).astype(np.int64)
    n_val = math.ceil(val_fraction * n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def as_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when present)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe(task: Any) -> str:
    return str(getattr(task, "name", type(task).__name__))
