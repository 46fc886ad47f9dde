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

import collections
import contextlib
import contextvars
import functools
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from flocknode.learning.task import Evaluation, Samples


def flipped_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The label-flip attack's permutation: class c becomes ``num_classes - 1 - c``."""
    return (num_classes - 1) - y


def train_classifier(
    model: nn.Module,
    data: Samples,
    *,
    steps: int,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    momentum: float,
    seed: int,
    device: torch.device | None = None,
    label_smoothing: float = 0.0,
    prior_classes: int = 0,
) -> dict[str, float]:
    """Train ``model`` in place with cross-entropy on ``data``; returns its metrics.

    ``steps`` > 0: exactly that many mini-batches (a new random order after each
    pass over the data); otherwise ``epochs`` full passes. ``optimizer`` is
    ``"adam"`` or ``"sgd"`` (with ``momentum``). ``label_smoothing`` is
    cross-entropy's. ``prior_classes`` > 0 (the number of classes) trains with
    the logits shifted by the log of the node's own class frequencies
    (add-one smoothed), a "balanced softmax": the model learns the classes'
    likelihoods rather than this node's label mix, so a node holding mostly a
    few classes does not pull the global model towards them.
    """
    n = len(data)
    if n == 0:
        raise ValueError("no training samples")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}")
    device = device or torch.device("cpu")
    model.to(device)
    model.train()
    x, y = data.x.to(device), data.y.to(device)
    opt = _Optimizer(list(model.parameters()), optimizer, learning_rate, momentum)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    shift = _log_prior(y, prior_classes) if prior_classes else None
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    # a parameter's gradient is held only until its update; a large linear
    # layer's weight gradient only a block of rows at a time (_streamed)
    with contextlib.closing(opt), opt.in_backward(), _streamed(model, opt) as sites:
        for idx in _batches(n, batch_size, steps, epochs, gen):
            for p in opt.params:
                p.grad = None
            idx = idx.to(device)
            logits = model(x[idx])
            loss = loss_fn(logits if shift is None else logits + shift, y[idx])
            opt.begin()
            _check_sole_use(loss, sites)
            loss.backward()
    model.to("cpu")
    return {"final_loss": float(loss.detach()), "samples": float(n)}


# Samples a forward pass of evaluation takes at most: its activations, not the
# split, bound the memory (wide-mlp-100mb's 359 test samples at once took 1 GB
# more than the model).
EVAL_BATCH = 64
# Values a fully connected layer's output may hold in evaluation: fewer samples
# a pass for wider layers. wide-mlp-100mb's hidden layer (350k wide) takes 12 a
# pass: its output and the ReLU's, 90 MB each at 64 samples, are 17 MB each.
# bench/train_memory.py: scoring 359 samples peaked 178 MB above the model at 64
# samples a pass and 41 MB at 12, and took 0.48 and 0.64 s.
EVAL_VALUES = 1 << 22


def eval_batch(model: nn.Module) -> int:
    """Samples a pass of evaluation takes: ``EVAL_BATCH``, fewer if a linear
    layer's output would hold more than ``EVAL_VALUES`` values (one output row
    a sample: a layer applied to each of a sample's tokens, or a convolution's
    feature maps, hold more)."""
    widest = max((m.out_features for m in model.modules() if isinstance(m, nn.Linear)), default=1)
    return max(1, min(EVAL_BATCH, EVAL_VALUES // max(1, widest)))


def evaluate_classifier(
    model: nn.Module, data: Samples, score: str = "accuracy", device: torch.device | None = None
) -> Evaluation:
    """Accuracy (argmax) and mean cross-entropy loss of ``model`` on ``data``.

    ``score`` picks the voters' score: ``"accuracy"`` (the share correct),
    ``"loss"`` (minus the mean loss, so higher is better) or ``"brier"`` (minus
    the mean Brier score, the squared distance between the predicted
    probabilities and the one-hot label: bounded by 2 per sample, so one
    confidently wrong sample cannot dominate it as it can the log loss). No
    samples: score 0.
    """
    n = len(data)
    if n == 0:
        return Evaluation(0.0, 0, {"accuracy": 0.0, "loss": math.nan})
    device = device or torch.device("cpu")
    model.to(device)
    model.eval()
    correct, loss, brier = 0, 0.0, 0.0
    batch = eval_batch(model)
    with torch.no_grad():
        for start in range(0, n, batch):
            out = model(data.x[start : start + batch].to(device))
            y = data.y[start : start + batch].to(device)
            correct += int((out.argmax(dim=1) == y).sum())
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            onehot = nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
            brier += float(((out.softmax(dim=1) - onehot) ** 2).sum())
    loss, brier = loss / n, brier / n
    model.to("cpu")
    accuracy = correct / n
    value = {"accuracy": accuracy, "loss": -loss, "brier": -brier}[score]
    metrics = {"accuracy": accuracy, "loss": loss, "brier": brier, "correct": float(correct)}
    return Evaluation(value, n, metrics)


def _log_prior(y: torch.Tensor, classes: int) -> torch.Tensor:
    """log of the add-one smoothed class frequencies of labels ``y`` (``classes`` of them)."""
    counts = torch.bincount(y, minlength=classes).to(torch.float32) + 1.0
    return torch.log(counts / counts.sum())


class _Optimizer:
    """Adam (default betas, eps 1e-8) or SGD with momentum, as ``torch.optim`` computes them.

    Written out because ``torch.optim``'s first ``step()`` imports torch._dynamo
    (measured: +67 MB of resident memory in every node process, for a few lines
    of arithmetic); ten nodes on one machine must fit in a few GB.

    ``step()`` updates every parameter from its gradient. Inside
    ``in_backward()`` a parameter is updated instead as soon as backward has
    accumulated its gradient, and the gradient is dropped, so one parameter's
    gradient is held at a time rather than a model's worth: call ``begin()``
    before each ``backward()``. The update is elementwise and per parameter, so
    the bits are the same either way (backward has used a parameter's value
    before it accumulates that parameter's gradient).

    The state of a parameter with ``SPILL_MIN`` values or more (on the CPU) is
    kept in a file instead of memory, same arithmetic; ``close()`` gives the
    file back for the process's next training.
    """

    def __init__(self, params: list[nn.Parameter], kind: str, lr: float, momentum: float) -> None:
        self.params, self.kind, self.lr, self.momentum = params, kind, lr, momentum
        # state only where the update reads it: SGD without momentum keeps none
        stateful = kind == "adam" or momentum != 0
        slots = (2 if kind == "adam" else 1) if stateful else 0
        # a large parameter's state goes to a file (``_StateFile``), the others' in memory
        self.spilled: dict[int, int] = {}  # parameter index -> its first slot's offset
        total = 0
        for i, p in enumerate(params):
            if slots and p.numel() >= SPILL_MIN and p.device.type == "cpu" and p.is_contiguous():
                self.spilled[i] = total
                total += slots * p.numel()
        self.file = _StateFile.take(total, _STATE_DIR.get()) if self.spilled else None
        self.written: set[int] = set()  # spilled parameters whose state the file holds
        self.m = [self._memory(i) for i in range(len(params))] if stateful else []
        self.v = [self._memory(i) for i in range(len(params))] if kind == "adam" else []
        self.t = 0

    def _memory(self, i: int) -> torch.Tensor:
        """Parameter ``i``'s state in memory (zeros; empty where it is in the file)."""
        p = self.params[i]
        return p.new_empty(0) if i in self.spilled else torch.zeros_like(p)

    def close(self) -> None:
        """Give the state file (if any) back for the next training; the optimizer
        steps no more."""
        if self.file is not None:
            self.file.give_back()
            self.file = None

    def begin(self) -> None:
        """Start a step (its bias corrections); ``in_backward``'s hooks then update."""
        self.t += 1

    @torch.no_grad()
    def step(self) -> None:
        self.begin()
        for i in range(len(self.params)):
            self._update(i)

    @contextlib.contextmanager
    def in_backward(self) -> Iterator[None]:
        index = {id(p): i for i, p in enumerate(self.params)}

        @torch.no_grad()
        def hook(p: torch.Tensor) -> None:
            self._update(index[id(p)])
            p.grad = None

        handles = [p.register_post_accumulate_grad_hook(hook) for p in self.params]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _update(self, i: int) -> None:
        grad = self.params[i].grad
        if grad is not None:
            self.update_rows(i, None, grad)

    @torch.no_grad()
    def update_rows(self, i: int, rows: slice | None, grad: torch.Tensor) -> None:
        """Update rows ``rows`` (``None``: all of it) of parameter ``i`` and of its
        state from their gradient."""
        if i in self.spilled:
            self._update_spilled(i, rows, grad)
            return

        def part(t: torch.Tensor) -> torch.Tensor:
            return t if rows is None else t[rows]  # a 0-dim parameter has no rows

        p = part(self.params[i])
        if self.kind == "sgd":
            self._sgd(p, part(self.m[i]) if self.momentum else None, grad)
            return
        for pp, mm, vv, g in _pieces(p, part(self.m[i]), part(self.v[i]), grad):
            self._adam(pp, mm, vv, g)

    def _update_spilled(self, i: int, rows: slice | None, grad: torch.Tensor) -> None:
        """``update_rows`` for a parameter whose state is in the file: a piece of
        ``ADAM_PIECE`` values at a time is read, updated and written back."""
        assert self.file is not None
        whole = self.params[i]
        p = whole.view(-1)
        first, size, last = 0, p.numel(), True
        if rows is not None:  # contiguous rows of a contiguous parameter: one flat range
            start, stop, _ = rows.indices(whole.shape[0])
            first, size = start * whole[0].numel(), max(0, stop - start) * whole[0].numel()
            last = stop >= whole.shape[0]
        g = grad.reshape(-1)
        at = self.spilled[i] + first  # the first slot's offset; the second's is numel() on
        # the state starts at zero, and the file may hold an earlier training's
        # values: a parameter's state is read only once this training wrote it
        fresh = i not in self.written
        for a in range(0, size, ADAM_PIECE):
            n = min(ADAM_PIECE, size - a)
            pp, gg = p[first + a : first + a + n], g[a : a + n]
            mm = self.file.read(at + a, n, 0, fresh)
            if self.kind == "sgd":
                self._sgd(pp, mm, gg)
                self.file.write(at + a, mm)
                continue
            vv = self.file.read(at + p.numel() + a, n, 1, fresh)
            self._adam(pp, mm, vv, gg)
            self.file.write(at + a, mm)
            self.file.write(at + p.numel() + a, vv)
        if last:
            self.written.add(i)  # the whole parameter, or its last block of rows

    def _sgd(self, p: torch.Tensor, buf: torch.Tensor | None, grad: torch.Tensor) -> None:
        g = grad
        if buf is not None:
            g = buf.mul_(self.momentum).add_(grad) if self.t > 1 else buf.copy_(grad)
        p.add_(g, alpha=-self.lr)

    def _adam(self, p: torch.Tensor, m: torch.Tensor, v: torch.Tensor, g: torch.Tensor) -> None:
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / c2**0.5).add_(eps)
        p.addcdiv_(m, denom, value=-self.lr / c1)


class _StateFile:
    """float32 values in an unlinked file of ``directory`` (the system's temporary
    directory if ``None``): the optimizer state of large parameters, read and
    written ``ADAM_PIECE`` values at a time through two buffers. The kernel
    keeps it in its page cache while memory allows, where it counts towards no
    process. It has no name: the process ending frees it.

    A process keeps its file open between trainings (``take``, ``give_back``):
    writing over cached pages of the file is cheap, writing new ones is not
    (on this project's 2-core test machine, 200 MB into a new file took
    0.04-1.3 s alone and about 2 s with five processes at once; over the
    same file again 0.03-0.07 s).
    """

    _idle: ClassVar[dict[Path | None, _StateFile]] = {}  # by directory, open, unused
    _lock = threading.Lock()

    def __init__(self, values: int, directory: Path | None) -> None:
        self.directory = directory
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (close())
        self._size = 0
        self._reserve(values)

    @classmethod
    def take(cls, values: int, directory: Path | None) -> _StateFile:
        """A file of ``directory`` with room for ``values`` values (its contents
        are stale: read only what this training wrote)."""
        with cls._lock:
            f = cls._idle.pop(directory, None)
        if f is None:
            return cls(values, directory)
        f._reserve(values)
        return f

    def give_back(self) -> None:
        """Keep the file open for the process's next training in its directory."""
        with self._lock:
            old = self._idle.pop(self.directory, None)
            self._idle[self.directory] = self
        if old is not None:
            old.close()

    def _reserve(self, values: int) -> None:
        if values * 4 > self._size:  # the disk space now: ENOSPC before training, not in it
            os.posix_fallocate(self._file.fileno(), 0, values * 4)
            self._size = values * 4
        self._buffers = [torch.empty(min(values, ADAM_PIECE)) for _ in range(2)]

    def read(self, at: int, n: int, buffer: int, zeros: bool = False) -> torch.Tensor:
        """Values ``at`` to ``at + n`` into buffer ``buffer`` (0 or 1), which is
        returned; with ``zeros``, zeros instead (values not written yet)."""
        out = self._buffers[buffer][:n]
        if zeros:
            return out.zero_()
        view = out.numpy().data.cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self._file.fileno(), [view[done:]], at * 4 + done)
            if got == 0:
                raise OSError(f"optimizer state file: no value at {at + done // 4}")
            done += got
        return out

    def write(self, at: int, values: torch.Tensor) -> None:
        view = values.numpy().data.cast("B")
        done = 0
        while done < len(view):
            done += os.pwrite(self._file.fileno(), view[done:], at * 4 + done)

    def close(self) -> None:
        self._file.close()


# Elements of a parameter updated at a time: Adam's step is elementwise, so the
# pieces give the same bits as the whole tensor while its temporaries (the
# square root and the denominator) stay at ADAM_PIECE values instead of two
# copies of the largest parameter (wide-mlp-100mb's: 90 MB each).
ADAM_PIECE = 1 << 20


# Weights of a linear layer with at least STREAM_MIN values get their gradient
# a block of rows (of at most ADAM_PIECE values) at a time, each block updated
# as soon as it is computed: wide-mlp-100mb's first layer (85% of the model)
# no longer holds a whole gradient beside the weights and Adam's two moments,
# and no layer of deep-mlp-100mb a 15 MB one. bench/train_memory.py --reps 5,
# two steps from a node's idle state, peak above it in model sizes (median):
# wide-mlp-100mb with Adam 3.60 whole, 3.06 in blocks; with SGD and momentum
# 2.47 and 2.04; deep-mlp-100mb with Adam 2.70 and 2.47.
STREAM_MIN = ADAM_PIECE

# Parameters with at least SPILL_MIN values keep their optimizer state (Adam's
# two moments, SGD's momentum) in a file rather than in memory (``_StateFile``),
# in the directory ``optimizer_state_dir`` names: for wide-mlp-100mb with Adam
# that is two model sizes, most of what a proposer held above its idle memory.
# bench/train_memory.py --reps 5, two Adam steps, peak above idle in model
# sizes (median, two runs): wide-mlp-100mb 1.13-1.22 in a file, 3.05-3.26 in
# memory (0.43-1.12 s and 0.33-0.37 s: a process's first writes to the file
# are slow); deep-mlp-100mb 1.20-1.22 and 2.47-2.48.
SPILL_MIN = ADAM_PIECE
_STATE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "flocknode_optimizer_state_dir", default=None
)


@contextlib.contextmanager
def optimizer_state_dir(directory: Path | None) -> Iterator[None]:
    """Large parameters' optimizer state goes to ``directory`` while inside
    (``None``: the system's temporary directory, as outside)."""
    token = _STATE_DIR.set(directory)
    try:
        yield
    finally:
        _STATE_DIR.reset(token)


@dataclass
class _Site:
    """A linear layer whose weight is updated block by block in backward."""

    opt: _Optimizer
    index: int  # the weight's place in ``opt.params``
    whole: bool = False  # this step: a plain gradient instead (the weight has other uses)


class _StreamedLinear(torch.autograd.Function):
    """``F.linear`` whose backward updates the weight block by block (``_Site``)
    instead of returning its gradient. The input's gradient is computed first,
    from the weight before its update, as ``nn.Linear``'s backward would."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, site: _Site
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.site, ctx.has_bias = site, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        site: _Site = ctx.site
        g2 = grads[0].reshape(-1, grads[0].shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        gx = grads[0] @ weight if ctx.needs_input_grad[0] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        if site.whole:
            return gx, g2.t() @ x2, gb, None
        rows = max(1, ADAM_PIECE // weight.shape[1])
        for r in range(0, weight.shape[0], rows):
            site.opt.update_rows(site.index, slice(r, r + rows), g2[:, r : r + rows].t() @ x2)
        return gx, None, gb, None


@contextlib.contextmanager
def _streamed(model: nn.Module, opt: _Optimizer) -> Iterator[dict[int, _Site]]:
    """Route the large linear layers of ``model`` through ``_StreamedLinear``
    while inside; yields the sites by ``id`` of their weight. Only plain
    ``nn.Linear`` modules (a subclass may compute something else), and not one
    whose weight another module shares."""
    index = {id(p): i for i, p in enumerate(opt.params)}
    uses = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    sites: dict[int, _Site] = {}
    patched: list[nn.Module] = []
    for m in model.modules():
        if type(m) is not nn.Linear or "forward" in vars(m):
            continue
        w = m.weight
        if id(w) not in index or uses[id(w)] != 1 or w.numel() < STREAM_MIN:
            continue
        if not w.requires_grad or w.dim() != 2 or not w.is_contiguous():
            continue
        if _hooked(w):  # hooks of the task's expect the weight's whole gradient
            continue
        site = sites[id(w)] = _Site(opt, index[id(w)])
        m.forward = functools.partial(_streamed_forward, m, site)  # type: ignore[method-assign]
        patched.append(m)
    try:
        yield sites
    finally:
        for m in patched:
            del m.forward


def _hooked(w: torch.Tensor) -> bool:
    """Whether ``w`` has gradient hooks besides ``_Optimizer.in_backward``'s one."""
    post = getattr(w, "_post_accumulate_grad_hooks", None) or {}
    return bool(getattr(w, "_backward_hooks", None)) or len(post) > 1


def _streamed_forward(m: nn.Linear, site: _Site, x: torch.Tensor) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type):
        # the gradient would come back in autocast's dtype; the cast is a second
        # use of the weight in the graph, so the step takes the usual way
        return F.linear(x, m.weight, m.bias)
    out: torch.Tensor = _StreamedLinear.apply(x, m.weight, m.bias, site)
    return out


def _check_sole_use(loss: torch.Tensor, sites: dict[int, _Site]) -> None:
    """Mark each site whose weight this step's graph uses other than through one
    ``_StreamedLinear`` (its layer called twice, the weight read directly): that
    step it gets a whole gradient, and the usual update of the sum."""
    if not sites or loss.grad_fn is None:
        return
    ours = _StreamedLinear._backward_cls  # the node type of a _StreamedLinear call
    streamed: collections.Counter[int] = collections.Counter()
    other: set[int] = set()
    seen: set[Any] = {loss.grad_fn}
    todo = [loss.grad_fn]
    while todo:
        node = todo.pop()
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            variable = getattr(nxt, "variable", None)
            if variable is not None:  # AccumulateGrad: a leaf
                key = id(variable)
                if isinstance(node, ours):
                    streamed[key] += 1
                else:
                    other.add(key)
            elif nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    for key, site in sites.items():
        site.whole = streamed[key] != 1 or key in other


def _pieces(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """Matching flat slices of same-shaped tensors (the tensors whole if one is not contiguous)."""
    if not all(t.is_contiguous() for t in tensors):
        yield tensors
        return
    flat = [t.view(-1) for t in tensors]
    for i in range(0, flat[0].numel(), ADAM_PIECE):
        yield tuple(f[i : i + ADAM_PIECE] for f in flat)


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
