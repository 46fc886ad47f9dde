"""``IsolatedLearner``: the round engine's learner, with the task's code in the worker.

It offers what the round engine uses of ``Learner`` (``settings``,
``has_test``, ``initial_state``, ``train_async``, ``evaluate_async``; the
``RoundLearner`` protocol) with the same results bit for bit. The task's
code never runs in the daemon: its initial model is built in the worker too
(``initial_state_async``; the node checks its hash against the task's on-chain
initial model), and everything that touches the participant's data (the
task's ``load_data``, ``train``, ``evaluate``) runs there (``TaskWorker``,
``flocknode.worker.calls``). Every result is checked
before it is used: an update must have exactly the global model's names,
shapes and dtypes, all finite; an evaluation a number score, a sample count
and numeric metrics. A failed call is one log line, a count by reason
(``worker_failures`` by reason) and ``WorkerFailure`` to the caller, whose
role ends; the next call starts a fresh worker. Bad data or a task that does
not resolve in the worker is ``DataError``/``PluginError``, one line as in
the daemon (docs/protocol.md, "Task worker").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeGuard

import torch

from flocknode.learning.factory import PluginError
from flocknode.learning.learner import DataSizes, SplitName, TrainResult
from flocknode.learning.models import State
from flocknode.learning.settings import TrainingSettings
from flocknode.learning.task import DataError, Evaluation
from flocknode.logs import PeerLog
from flocknode.worker.client import TaskWorker
from flocknode.worker.protocol import Reason, WorkerFailure, spec_of
from flocknode.worker.sandbox import WorkerSpec

log = logging.getLogger(__name__)
limited_log = PeerLog(log)  # a task failing every call must not flood the log

CALLS = "flocknode.worker.calls"
MAX_METRICS = 64


@dataclass(eq=False)
class IsolatedLearner:
    settings: TrainingSettings
    worker: TaskWorker
    data_path: str
    test_path: str | None  # a tester's held-out set ([data] test_path)
    timeout: float  # load and warm-up; any call's upper bound
    train_timeout: float | None = None  # None: ``timeout``
    eval_timeout: float | None = None
    sizes: DataSizes | None = None  # once the worker has read the data
    base_model: Path | None = None  # the node's copy of the task's base model
    package_dir: Path | None = None  # the task package's checked tree
    _initial: State | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: TrainingSettings,
        data_path: str,
        test_path: str | None,
        spec: WorkerSpec,
        *,
        timeout: float,
        phase_seconds: tuple[float, float] | None = None,
        on_failure: Callable[[Reason], None] | None = None,
        base_model: Path | None = None,
        package_dir: Path | None = None,
    ) -> IsolatedLearner:
        """``phase_seconds``: the task's train and commit phase lengths; a training
        call is killed after the train phase's length at most, an evaluation after
        the commit phase's (no later call of its role could use the result)."""
        worker = TaskWorker(spec, on_failure)
        train_t, eval_t = (min(timeout, p) for p in phase_seconds or (timeout, timeout))
        return cls(
            settings,
            worker,
            data_path,
            test_path or None,
            timeout,
            train_t,
            eval_t,
            base_model=base_model,
            package_dir=package_dir,
        )

    @property
    def has_test(self) -> bool:
        """Whether a tester's test set was given (else evaluating "test" raises)."""
        return self.test_path is not None

    async def initial_state_async(self, max_bytes: int) -> State:
        """The task's initial model, built in the worker (which this starts).

        Any tensors of at most ``max_bytes`` are taken: the caller compares their
        hash with the task's on-chain initial model before using them.
        """
        if self._initial is None:
            self._initial, _ = await self._call("initial", {}, self._args(), max_bytes, None)
        return {k: v.clone() for k, v in self._initial.items()}

    def initial_state(self) -> State:
        """The initial model ``initial_state_async`` built (it must have run)."""
        if self._initial is None:
            raise RuntimeError("initial_state_async has not run")
        return {k: v.clone() for k, v in self._initial.items()}

    def _args(self, **extra: Any) -> dict[str, Any]:
        training = {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}
        return {
            "training": training,
            "data_path": self.data_path,
            "test_path": self.test_path,
            "device": self.worker.spec.device,
            "base_model": None if self.base_model is None else str(self.base_model),
            "package_dir": None if self.package_dir is None else str(self.package_dir),
            **extra,
        }

    async def load(self) -> DataSizes:
        """Start the worker and read the participant's data in it (``DataError`` if unusable)."""
        return await self._sizes(await self._call("load", {}, self._args(), None, self.timeout))

    async def warm_up_async(self) -> DataSizes:
        """``load``, then pay torch's first-step cost before any role."""
        got = await self._call("warm_up", {}, self._args(), None, self.timeout)
        return await self._sizes(got)

    async def train_async(
        self,
        global_state: Mapping[str, torch.Tensor],
        seed: int,
        label_flip: bool = False,
        round_no: int = 1,
        reread: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    ) -> TrainResult:
        """The worker trains on its own copy of ``global_state`` (``reread`` is
        not needed: the daemon's tensors are not changed)."""
        args = self._args(seed=seed, label_flip=label_flip, round=round_no)
        expect = spec_of(global_state)
        update, info = await self._call("train", global_state, args, expect, self.train_timeout)
        seconds, samples = info.get("seconds"), info.get("samples")
        metrics = _metrics(info.get("metrics"))
        if not (_number(seconds) and seconds >= 0 and _count(samples)) or metrics is None:
            raise await self._refuse(f"train result {str(info)[:200]}")
        return TrainResult(update, float(seconds), samples, metrics)

    async def evaluate_async(
        self, state: Mapping[str, torch.Tensor], split: SplitName = "val"
    ) -> Evaluation:
        if split == "test" and not self.has_test:
            raise DataError("no test set ([data] test_path is for testers' reports)")
        args = self._args(split=split)
        _, info = await self._call("evaluate", state, args, None, self.eval_timeout)
        score, samples = info.get("score"), info.get("samples")
        metrics = _metrics(info.get("metrics"))
        # a score that is not a number is allowed: ``Evaluation.ppm`` ranks it below any
        if not (_real(score) and _count(samples)) or metrics is None:
            raise await self._refuse(f"evaluate result {str(info)[:200]}")
        return Evaluation(float(score), samples, metrics)

    def close(self) -> None:
        self.worker.close()

    async def _sizes(self, got: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> DataSizes:
        info = got[1]
        train, val, test = info.get("train"), info.get("val"), info.get("test")
        if not (_count(train) and _count(val) and (test is None or _count(test))):
            raise await self._refuse(f"load result {str(info)[:200]}")
        self.sizes = DataSizes(train, val, test)
        return self.sizes

    async def _call(
        self,
        name: str,
        tensors: Mapping[str, torch.Tensor],
        args: dict[str, Any],
        expect: Mapping[str, tuple[tuple[int, ...], torch.dtype]] | int | None,
        timeout: float | None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        try:
            return await self.worker.call(
                f"{CALLS}:{name}", tensors, args, expect=expect, timeout=timeout or self.timeout
            )
        except WorkerFailure as e:
            # bad data or an unresolvable task is the caller's one line, not a log line too
            if e.kind == "data":
                raise DataError(e.detail) from None
            if e.kind == "plugin":
                raise PluginError(e.detail) from None
            limited_log.warning(e.reason, "task worker %s failed: %s", name, e)
            raise

    async def _refuse(self, detail: str) -> WorkerFailure:
        """A result the worker answered that does not check: counted like any failure."""
        await self.worker.refuse("garbage")
        e = WorkerFailure("garbage", detail)
        limited_log.warning("garbage", "task worker result refused: %s", e)
        return e


def _count(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _real(v: object) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(v: object) -> TypeGuard[int | float]:
    return _real(v) and math.isfinite(v)


def _metrics(v: Any) -> dict[str, float] | None:
    """A task's named metrics as floats; None if they are not that."""
    if not isinstance(v, dict) or len(v) > MAX_METRICS:
        return None
    if not all(isinstance(k, str) and _real(x) for k, x in v.items()):
        return None
    return {k: float(x) for k, x in v.items()}
