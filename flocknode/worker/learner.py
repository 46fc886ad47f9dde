"""``IsolatedLearner``: the round engine's learner, with training and evaluation in the worker.

Same interface as ``Learner`` for the round engine (``initial_state``,
``train_async``, ``evaluate_async``). The initial model is built in the daemon
(it is pinned by the task's initial-model hash and gives the expected tensor
shapes); everything that touches the participant's data runs in the task
worker (``TaskWorker``), and every result is checked before it is used: an
update must have exactly the global model's names, shapes and dtype, finite;
an evaluation two integers with ``0 <= correct <= total``. A failed call is
one log line, a count by reason (``worker_failures_<reason>``), and
``WorkerFailure`` to the caller, whose role ends; the next call starts a
fresh worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from flocknode.config import NodeConfig
from flocknode.errors import ConfigError
from flocknode.learning.learner import Learner, RoundLearner, SplitName
from flocknode.learning.models import ModelFactory, State, initial_state, load_model_factory
from flocknode.learning.settings import TrainingSettings
from flocknode.learning.train import Evaluation, TrainResult
from flocknode.logs import PeerLog
from flocknode.worker.client import TaskWorker
from flocknode.worker.devices import DeviceUnavailable, resolve_device
from flocknode.worker.protocol import Reason, WorkerFailure, spec_of
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec, probe

log = logging.getLogger(__name__)
limited_log = PeerLog(log)  # a task failing every call must not flood the log

TASKS = "flocknode.worker.tasks"


@dataclass(eq=False)
class IsolatedLearner:
    settings: TrainingSettings
    factory: ModelFactory
    node_index: int
    num_nodes: int
    worker: TaskWorker
    timeout: float  # warm-up; any call's upper bound
    train_timeout: float | None = None  # None: ``timeout``
    eval_timeout: float | None = None

    @classmethod
    def from_settings(
        cls,
        settings: TrainingSettings,
        node_index: int,
        num_nodes: int,
        spec: WorkerSpec,
        *,
        timeout: float,
        phase_seconds: tuple[float, float] | None = None,
        on_failure: Callable[[Reason], None] | None = None,
    ) -> IsolatedLearner:
        """``phase_seconds``: the task's train and commit phase lengths; a training
        call is killed after the train phase's length at most, an evaluation after
        the commit phase's (no later call of its role could use the result)."""
        factory = load_model_factory(settings.model_factory)
        worker = TaskWorker(spec, on_failure)
        train_t, eval_t = (min(timeout, p) for p in phase_seconds or (timeout, timeout))
        return cls(settings, factory, node_index, num_nodes, worker, timeout, train_t, eval_t)

    def initial_state(self) -> State:
        return initial_state(self.factory, self.settings.init_seed)

    def _args(self, **extra: Any) -> dict[str, Any]:
        training = {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}
        return {
            "training": training,
            "node_index": self.node_index,
            "num_nodes": self.num_nodes,
            "device": self.worker.spec.device,
            **extra,
        }

    async def warm_up_async(self) -> None:
        """Start the worker, load its data and pay torch's first-step cost before any role."""
        await self._call("warm_up", {}, self._args(), None, self.timeout)

    async def train_async(
        self, global_state: Mapping[str, torch.Tensor], seed: int, label_flip: bool = False
    ) -> TrainResult:
        expect = {n: (shape, torch.float32) for n, (shape, _) in spec_of(global_state).items()}
        args = self._args(seed=seed, label_flip=label_flip)
        update, info = await self._call("train", global_state, args, expect, self.train_timeout)
        try:
            seconds, samples, loss = info["seconds"], info["samples"], info["final_loss"]
            if not (_number(seconds) and seconds >= 0 and _int(samples) and _number(loss)):
                raise TypeError
        except (KeyError, TypeError):
            raise self._failed("garbage", f"train result {str(info)[:200]}") from None
        return TrainResult(update, float(seconds), int(samples), float(loss))

    async def evaluate_async(
        self, state: Mapping[str, torch.Tensor], split: SplitName = "val"
    ) -> Evaluation:
        _, info = await self._call(
            "evaluate", state, self._args(split=split), None, self.eval_timeout
        )
        correct, total = info.get("correct"), info.get("total")
        if not (isinstance(correct, int) and isinstance(total, int)) or not (
            _int(correct) and _int(total) and 0 <= correct <= total
        ):
            raise self._failed("garbage", f"evaluate result {str(info)[:200]}")
        return Evaluation(correct, total)

    def close(self) -> None:
        self.worker.close()

    async def _call(
        self,
        name: str,
        tensors: Mapping[str, torch.Tensor],
        args: dict[str, Any],
        expect: Mapping[str, tuple[tuple[int, ...], torch.dtype]] | None,
        timeout: float | None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        try:
            return await self.worker.call(
                f"{TASKS}:{name}", tensors, args, expect=expect, timeout=timeout or self.timeout
            )
        except WorkerFailure as e:
            limited_log.warning(e.reason, "task worker %s failed: %s", name, e)
            raise

    def _failed(self, reason: Reason, detail: str) -> WorkerFailure:
        """A result the worker answered that does not check: counted like any failure."""
        self.worker.kill()
        self.worker.count(reason)
        e = WorkerFailure(reason, detail)
        limited_log.warning(reason, "task worker result refused: %s", e)
        return e


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def node_learner(
    cfg: NodeConfig,
    settings: TrainingSettings,
    on_failure: Callable[[Reason], None],
    phase_seconds: tuple[float, float] | None = None,
) -> RoundLearner:
    """The learner ``[compute] isolation`` asks for; ``ConfigError`` (one line) if the
    machine cannot give namespace isolation. ``phase_seconds``: the task's train and
    commit phase lengths (``IsolatedLearner.from_settings``)."""
    c = cfg.compute
    try:
        device = resolve_device(c.device)
    except DeviceUnavailable as e:
        raise ConfigError(cfg.source, "compute.device", str(e)) from None
    if c.isolation == "none":
        return Learner.from_settings(settings, cfg.data.node_index, cfg.data.num_nodes, device)
    if c.isolation == "namespace":
        try:
            probe()
        except IsolationUnavailable as e:
            raise ConfigError(
                cfg.source,
                "compute.isolation",
                f"namespace isolation is unavailable here: {e}; "
                'set isolation = "process" or "none" to run task code without it',
            ) from None
    read_only = [str(cfg.path(p)) for p in c.read_only]
    if cfg.data.path:
        read_only.append(str(cfg.path(cfg.data.path)))
    spec = WorkerSpec(
        isolation=c.isolation,
        base=str(cfg.data_path / "worker"),
        read_only=tuple(read_only),
        memory_bytes=c.memory_mb << 20,
        threads=c.threads,
        device=device,
    )
    return IsolatedLearner.from_settings(
        settings,
        cfg.data.node_index,
        cfg.data.num_nodes,
        spec,
        timeout=c.timeout_seconds,
        phase_seconds=phase_seconds,
        on_failure=on_failure,
    )
