"""Local training of a proposer and evaluation of a model on a split.

Blocking torch code: call it through ``trio.to_thread.run_sync`` (``Learner``
has async wrappers). Training is deterministic given the seed: the only
randomness is the batch order, drawn from a private ``torch.Generator``; the
process-wide torch RNG is neither used nor changed. Bit-identical updates also
need the same torch build and thread count (matrix products may block
differently), which is fine because only the proposer trains: voters check the
update against its on-chain hash, never retrain it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from flocknode.learning.data import Split
from flocknode.learning.models import ModelFactory, State, build_model


@dataclass(frozen=True)
class TrainResult:
    """``update`` = trained minus global (float32, the global's names); wall seconds."""

    update: State
    seconds: float
    samples: int
    final_loss: float


@dataclass(frozen=True)
class Evaluation:
    """Correct predictions out of ``total``; ``ppm`` is exact integer arithmetic."""

    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def ppm(self) -> int:
        """Accuracy in parts per million, rounded half up with integers only."""
        return (self.correct * 2_000_000 + self.total) // (2 * self.total) if self.total else 0


def flipped_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The label-flip attack's permutation: class c becomes ``num_classes - 1 - c``."""
    return (num_classes - 1) - y


def train_local(
    factory: ModelFactory,
    global_state: Mapping[str, torch.Tensor],
    data: Split,
    *,
    steps: int,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    momentum: float,
    seed: int,
    num_classes: int,
    label_flip: bool = False,
    device: str = "cpu",
) -> TrainResult:
    """Train from ``global_state`` on ``data``; returns the update and the wall time.

    ``steps`` > 0: exactly that many mini-batches (a new random order after each
    pass over the data); otherwise ``epochs`` full passes. ``optimizer`` is
    ``"adam"`` or ``"sgd"`` (with ``momentum``). ``label_flip`` trains on
    permuted labels (``flipped_labels``): the cheater behaviour of the test
    cluster, off for honest nodes. ``device``: where the model and the data
    live while training; the batch order is drawn on the CPU and the update is
    returned on the CPU whatever the device.
    """
    n = len(data)
    if n == 0:
        raise ValueError("no training samples")
    start = time.perf_counter()
    model = build_model(factory, global_state).to(device)
    model.train()
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    if label_flip:
        y = flipped_labels(y, num_classes)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}")
    opt = _Optimizer(list(model.parameters()), optimizer, learning_rate, momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for idx in _batches(n, batch_size, steps, epochs, gen):
        for p in opt.params:
            p.grad = None
        idx = idx.to(device)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    trained = model.state_dict()
    update = {
        name: (trained[name].detach().cpu() - g.detach()).to(torch.float32).contiguous()
        for name, g in global_state.items()
    }
    return TrainResult(update, time.perf_counter() - start, n, float(loss.detach()))


class _Optimizer:
    """Adam (default betas, eps 1e-8) or SGD with momentum, as ``torch.optim`` computes them.

    Written out because ``torch.optim``'s first ``step()`` imports torch._dynamo
    (measured: +67 MB of resident memory in every node process, for a few lines
    of arithmetic); ten nodes on one machine must fit in a few GB.
    """

    def __init__(self, params: list[nn.Parameter], kind: str, lr: float, momentum: float) -> None:
        self.params, self.kind, self.lr, self.momentum = params, kind, lr, momentum
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params] if kind == "adam" else []
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        if self.kind == "sgd":
            for p, buf in zip(self.params, self.m, strict=True):
                if p.grad is None:
                    continue
                if self.momentum:
                    g = buf.mul_(self.momentum).add_(p.grad) if self.t > 1 else buf.copy_(p.grad)
                else:
                    g = p.grad
                p.add_(g, alpha=-self.lr)
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v.sqrt() / c2**0.5).add_(eps)
            p.addcdiv_(m, denom, value=-self.lr / c1)


def _batches(
    n: int, batch_size: int, steps: int, epochs: int, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """Index batches: ``steps`` of them if > 0 (cycling reshuffled passes), else ``epochs`` passes.

    With a step count every batch is full (a pass ends early rather than
    yielding a short tail), so each proposer's steps have the same size.
    """
    size = min(batch_size, n)
    if steps <= 0:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, size):
                yield order[i : i + size]
        return
    done = 0
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - size + 1, size):
            if done == steps:
                return
            yield order[i : i + size]
            done += 1


def evaluate(
    factory: ModelFactory, state: Mapping[str, torch.Tensor], data: Split, device: str = "cpu"
) -> Evaluation:
    """Accuracy of the model ``state`` on ``data`` (argmax of the outputs)."""
    if len(data) == 0:
        return Evaluation(0, 0)
    model = build_model(factory, state).to(device)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x).to(device)).argmax(dim=1).cpu()
    correct = int((pred == torch.from_numpy(data.y)).sum())
    return Evaluation(correct, len(data))
