"""``Learner``: one node's task, data and training settings in one object.

The round engine builds one per node (``Learner.from_settings``) and calls:

    learner.warm_up()                            # optional: pay torch's lazy imports now
    learner.initial_state()                      # the task's initial global model
    learner.train(global_state, seed=..., round_no=r)  # proposer: TrainResult (update, seconds)
    learner.evaluate(state, "val")               # voter: Evaluation on private validation
    await learner.train_async(...)               # same, in a worker thread (trio)
    await learner.evaluate_async(...)

The node's data is the participant's own files (``[data] path``), read by the
task's ``load_data`` and split privately (``private_split``); a tester may add
a held-out test set (``[data] test_path``) for reporting, never for voting.
``train``/``evaluate`` build a fresh model per call, so calls from several
threads do not share mutable torch state. A global state holds the task's
exchanged entries; an update has the same names, shapes and dtypes.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch
import trio

from flocknode import malloc
from flocknode.learning.base_model import attach_base_model
from flocknode.learning.builtin import ClassifierTask
from flocknode.learning.factory import PluginError
from flocknode.learning.models import State, build_model, initial_state, load_task, model_state
from flocknode.learning.settings import TrainingSettings
from flocknode.learning.task import DataError, Evaluation, Samples, as_device, private_split
from flocknode.learning.train import flipped_labels, optimizer_state_dir

SplitName = Literal["train", "val", "test"]
T = TypeVar("T")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class TrainResult:
    """``update`` = trained minus global (the global's names and dtypes); wall seconds."""

    update: State
    seconds: float
    samples: int
    metrics: Mapping[str, float]

    @property
    def final_loss(self) -> float:
        return float(self.metrics.get("final_loss", float("nan")))


@dataclass(frozen=True, eq=False)
class NodeData:
    """A node's private training and validation samples, and a tester's test set (maybe empty)."""

    train: Samples
    val: Samples
    test: Samples | None = None


@dataclass(frozen=True)
class DataSizes:
    """How many samples a node's splits hold (``test``: None without a test set)."""

    train: int
    val: int
    test: int | None = None


def load_node_data(
    task: Any, settings: TrainingSettings, data_path: Path, test_path: Path | None = None
) -> NodeData:
    """Read the participant's files and split them; ``DataError`` (one line) if unusable."""
    path = Path(data_path)
    if not str(data_path) or not path.exists():
        raise DataError(f"{path}: [data] path does not exist (set it to your data)")
    samples = _checked_samples(task, task.load_data(path), path)
    train_idx, val_idx = private_split(len(samples), settings.val_fraction, settings.data_seed)
    if len(val_idx) < settings.min_val_samples:
        raise DataError(
            f"{path}: {len(samples)} samples give {len(val_idx)} for validation "
            f"(val_fraction {settings.val_fraction}); the task needs at least "
            f"{settings.min_val_samples}"
        )
    if len(train_idx) == 0:
        raise DataError(f"{path}: no samples left for training")
    test = None
    if test_path is not None and str(test_path):
        test = _checked_samples(task, task.load_data(Path(test_path)), Path(test_path))
    return NodeData(samples.subset(train_idx), samples.subset(val_idx), test)


def _checked_samples(task: Any, samples: Any, path: Path) -> Samples:
    if not isinstance(samples, Samples):
        raise PluginError(f"task {task_name(task)!r}: load_data returned {type(samples).__name__}")
    if len(samples) == 0:
        raise DataError(f"{path}: no samples")
    return samples


def task_name(task: Any) -> str:
    return str(getattr(task, "name", type(task).__name__))


class RoundLearner(Protocol):
    """What the round engine, the voter, the proposer and the model keeper use of a
    learner: ``Learner`` (task code in the daemon) or ``flocknode.worker.IsolatedLearner``
    (task code in the task worker, docs/protocol.md, "Task worker")."""

    @property
    def settings(self) -> TrainingSettings: ...

    @property
    def has_test(self) -> bool: ...

    def initial_state(self) -> State: ...

    async def train_async(
        self,
        global_state: Mapping[str, torch.Tensor],
        seed: int,
        label_flip: bool = False,
        round_no: int = 1,
        reread: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> TrainResult: ...

    async def evaluate_async(
        self, state: Mapping[str, torch.Tensor], split: SplitName = "val"
    ) -> Evaluation: ...


@dataclass(frozen=True, eq=False)
class Learner:
    settings: TrainingSettings
    task: Any
    data: NodeData
    names: tuple[str, ...]  # the exchanged state entries
    device: torch.device = CPU
    package_dir: Path | None = None  # the task package's checked tree the task came from
    # where training keeps large parameters' optimizer state (train.optimizer_state_dir)
    state_dir: Path | None = None
    # one training or evaluation at a time, as in the task worker: their memory
    # (a proposer's optimizer state, a scoring's model copy) never adds up
    compute: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: TrainingSettings,
        data_path: str | Path | int,
        test_path: str | Path | int | None = None,
        device: str = "cpu",
        base_model: str | Path | None = None,
        package_dir: Path | None = None,
        state_dir: Path | None = None,
    ) -> Learner:
        """Resolve the task and load this node's files (``PluginError``/``DataError``);
        ``base_model`` is the node's copy of the task's base model (``[task] base_model``).

        ``package_dir``: the checked tree of the settings' task package, if any
        (``load_task``). ``state_dir``: where training keeps the optimizer state
        of large parameters (``train.optimizer_state_dir``; created when needed).

        Testers' shorthand: ``from_settings(settings, node_index, num_nodes)``
        is ``for_shard`` (the node's part of the task's reference data, in memory).
        """
        if isinstance(data_path, int):
            if not isinstance(test_path, int):
                raise TypeError("from_settings(settings, node_index, num_nodes) takes two ints")
            return cls.for_shard(settings, data_path, test_path, device=device)
        if isinstance(test_path, int):
            raise TypeError("test_path must be a path")
        task = load_task(settings.task, _checked_package(settings, package_dir))
        attach_base_model(task, settings.base_model_hash, _opt_path(base_model))
        data = load_node_data(task, settings, Path(data_path), _opt_path(test_path))
        return cls.from_data(settings, task, data, device, package_dir, state_dir)

    @classmethod
    def for_shard(
        cls,
        settings: TrainingSettings,
        node_index: int,
        num_nodes: int,
        split: str = "dirichlet",
        alpha: float = 0.5,
        seed: int = 0,
        test_fraction: float = 0.2,
        device: str = "cpu",
    ) -> Learner:
        """Testers only: node ``node_index``'s part of the task's reference data, split
        privately as a participant's files would be, with the shared test split."""
        from flocknode.learning.data import shard_in_memory

        task = load_task(settings.task, _checked_package(settings, None))
        mine, test = shard_in_memory(
            task.reference_data(), node_index, num_nodes, split, alpha, seed, test_fraction
        )
        train_idx, val_idx = private_split(len(mine), settings.val_fraction, settings.data_seed)
        data = NodeData(mine.subset(train_idx), mine.subset(val_idx), test)
        return cls.from_data(settings, task, data, device)

    @classmethod
    def from_data(
        cls,
        settings: TrainingSettings,
        task: Any,
        data: NodeData,
        device: str = "cpu",
        package_dir: Path | None = None,
        state_dir: Path | None = None,
    ) -> Learner:
        names = exchanged_names(task, settings.init_seed)
        return cls(settings, task, data, names, as_device(device), package_dir, state_dir)

    def warm_up(self) -> None:
        """One throw-away training step: the first optimizer in a process costs about
        1.3 s (torch imports lazily), which would otherwise land in round one's timing."""
        s = self.settings
        one = TrainingSettings(**{**_fields(s), "local_steps": 1, "local_epochs": 1})
        model = build_model(self.task.build_model, self.initial_state(), s.init_seed)
        with self._state_dir():
            self.task.train(model, self.data.train, one, 0, self.device)

    def _state_dir(self) -> contextlib.AbstractContextManager[None]:
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return optimizer_state_dir(self.state_dir)

    def initial_state(self) -> State:
        return initial_state(self.task.build_model, self.settings.init_seed, self.names)

    @property
    def has_test(self) -> bool:
        """Whether a tester's test set was given (``evaluate(state, "test")`` raises if not)."""
        return self.data.test is not None

    @property
    def sizes(self) -> DataSizes:
        d = self.data
        return DataSizes(len(d.train), len(d.val), None if d.test is None else len(d.test))

    def split(self, name: SplitName) -> Samples:
        if name == "test":
            if self.data.test is None:
                raise DataError("no test set ([data] test_path is for testers' reports)")
            return self.data.test
        if name not in ("train", "val"):
            raise DataError(f"unknown split {name!r}")
        return self.data.train if name == "train" else self.data.val

    def train(
        self,
        global_state: Mapping[str, torch.Tensor],
        seed: int,
        label_flip: bool = False,
        round_no: int = 1,
        reread: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> TrainResult:
        """Train on the node's data from ``global_state`` with round ``round_no``'s
        settings (``TrainingSettings.for_round``: its learning rate).

        With ``reread`` (a function that reads the same model again, from the
        content store) the caller hands ``global_state``'s tensors over: the
        model trains on them rather than on a copy (they end up holding the
        update), and the update is taken against ``reread()``'s tensors, one
        entry at a time. Same update, one model's worth less memory while
        training.
        """
        start = time.perf_counter()
        data = self.data.train
        if label_flip:  # the test cluster's cheater: classifiers only
            classes = getattr(self.task, "num_classes", None)
            if not classes:
                raise PluginError(f"task {task_name(self.task)!r} is not a classifier")
            data = Samples(data.x, flipped_labels(data.y, classes))
        share = reread is not None
        model = build_model(
            self.task.build_model, global_state, self.settings.init_seed, share=share
        )
        names = list(global_state)
        if share:
            global_state = {}  # the model holds its tensors now
        settings = self.settings.for_round(round_no)
        with self._state_dir():
            metrics = self.task.train(model, data, settings, seed, self.device)
        model.zero_grad(set_to_none=True)  # gradients left by the task: a model's worth
        # the model's own tensors: the delta is the only new copy of the model
        trained = model_state(model.cpu(), names, copy=False)
        del model
        if reread is None:
            update = state_delta(trained, global_state)
        else:
            update = delta_in_place(trained, dict(reread()))
        del trained
        return TrainResult(update, time.perf_counter() - start, len(data), dict(metrics or {}))

    def evaluate(self, state: Mapping[str, torch.Tensor], split: SplitName = "val") -> Evaluation:
        # the built-in evaluation changes no tensor of the model (eval mode, no_grad):
        # it may run on the state's own tensors rather than a copy of the model
        share = type(self.task).evaluate is ClassifierTask.evaluate
        model = build_model(self.task.build_model, state, self.settings.init_seed, share=share)
        ev = self.task.evaluate(model, self.split(split), self.device)
        if not isinstance(ev, Evaluation):
            raise PluginError(
                f"task {task_name(self.task)!r}: evaluate returned {type(ev).__name__}"
            )
        return ev

    async def train_async(
        self,
        global_state: Mapping[str, torch.Tensor],
        seed: int,
        label_flip: bool = False,
        round_no: int = 1,
        reread: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> TrainResult:
        fn = functools.partial(self.train, global_state, seed, label_flip, round_no, reread)
        return await trio.to_thread.run_sync(self._serialized, fn)

    async def evaluate_async(
        self, state: Mapping[str, torch.Tensor], split: SplitName = "val"
    ) -> Evaluation:
        fn = functools.partial(self.evaluate, state, split)
        return await trio.to_thread.run_sync(self._serialized, fn)

    def _serialized(self, fn: Callable[[], T]) -> T:
        with self.compute:
            # pages freed by what ran since (a fetch, an aggregation) and by the
            # call itself go back before and after it (flocknode.malloc.trim)
            malloc.trim()
            try:
                return fn()
            finally:
                malloc.trim()


def exchanged_names(task: Any, init_seed: int) -> tuple[str, ...]:
    """The task's exchanged entries (all of the model's state unless it says otherwise)."""
    from flocknode.learning.models import seeded_model

    model = seeded_model(task.build_model, init_seed)
    pick = getattr(task, "exchanged", None)
    names = list(pick(model)) if callable(pick) else list(model.state_dict())
    model_state(model, names)  # every name exists and has a usable dtype
    return tuple(names)


def task_initial_state(
    settings: TrainingSettings,
    *,
    base_model: Path | None = None,
    package_dir: Path | None = None,
) -> State:
    """The initial global model of the task these settings name (no data needed)."""
    task = load_task(settings.task, _checked_package(settings, package_dir))
    attach_base_model(task, settings.base_model_hash, base_model)
    return initial_state(
        task.build_model, settings.init_seed, exchanged_names(task, settings.init_seed)
    )


def _checked_package(settings: TrainingSettings, package_dir: Path | None) -> Path | None:
    """Settings that pin the task's code need its checked tree (never ``sys.path``)."""
    if settings.task_package and package_dir is None:
        raise PluginError(
            f"task {settings.task!r} is pinned to package {settings.task_package}; "
            "its checked directory is needed (docs/tasks.md, task packages)"
        )
    return package_dir


def state_delta(trained: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> State:
    """``trained - base`` per entry, in the base's dtype (float deltas computed in float32)."""
    out: State = {}
    for name, g in base.items():
        t = trained[name]
        if g.dtype.is_floating_point:
            d = t.detach().to(torch.float32) - g.detach().to(torch.float32)
        else:
            d = t.detach() - g.detach()
        out[name] = d.to(g.dtype).contiguous()
    return out


def delta_in_place(trained: Mapping[str, torch.Tensor], base: dict[str, torch.Tensor]) -> State:
    """``state_delta(trained, base)``, written into ``trained``'s own tensors where
    that gives the same bits (float32 and integer entries of the base's dtype
    and shape, each with storage of its own), taking ``base``'s entries out as
    it goes so that each is freed once used."""
    # tied entries (one storage under two names) would be subtracted twice; empty
    # tensors all report storage address 0 and hold nothing to subtract
    storages = [t.untyped_storage().data_ptr() for t in trained.values() if t.numel()]
    alone = len(set(storages)) == len(storages)
    out: State = {}
    for name, t in trained.items():
        g = base.pop(name)
        same = t.dtype == g.dtype and t.shape == g.shape and t.is_contiguous()
        if alone and same and (t.dtype == torch.float32 or not t.dtype.is_floating_point):
            out[name] = t.detach().sub_(g)
        else:
            out[name] = state_delta({name: t}, {name: g})[name]
        del g
    return out


def _opt_path(p: str | Path | None) -> Path | None:
    return Path(p) if p is not None and str(p) else None


def _fields(s: TrainingSettings) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(s, f.name) for f in fields(s)}
