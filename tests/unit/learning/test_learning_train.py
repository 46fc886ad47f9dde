"""Tasks, the initial model, local training and evaluation over files (real torch)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import trio
from torch import nn

import flocknode.learning.train as train
from flocknode.aggregation import apply_update
from flocknode.learning import (
    DataError,
    DigitsMLP,
    Evaluation,
    Learner,
    PluginError,
    TrainingSettings,
    initial_state,
    load_model_factory,
    model_hash,
    write_shards,
)
from flocknode.learning.models import digits_mlp
from flocknode.learning.task import Samples, Task

SETTINGS = TrainingSettings()

_HASH_SNIPPET = (
    "import torch, sys; torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(999);"
    "from flocknode.learning import Learner, TrainingSettings, model_hash;"
    "from flocknode.learning import task_initial_state;"
    "print(model_hash(task_initial_state(TrainingSettings())).hex())"
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    s = write_shards(DigitsMLP(), tmp_path_factory.mktemp("digits"), 5, "dirichlet", 0.5, 0)
    return list(s.nodes), s.test


@pytest.fixture(scope="module")
def learner(shards: tuple[list[Path], Path]) -> Learner:
    return Learner.from_settings(SETTINGS, shards[0][2], shards[1])


def test_files_and_the_in_memory_shard_give_the_same_learner(learner: Learner) -> None:
    same = Learner.for_shard(SETTINGS, 2, 5)
    for split in ("train", "val", "test"):
        a, b = learner.split(split), same.split(split)  # type: ignore[arg-type]
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    n = len(learner.data.train) + len(learner.data.val)
    assert len(learner.data.val) == -(-n // 10)  # ceil(val_fraction * n)


def test_initial_model_hash_is_stable_across_processes(learner: Learner, restore_threads) -> None:
    here = model_hash(learner.initial_state()).hex()
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    torch.set_num_threads(2)
    there = subprocess.run(
        [sys.executable, "-c", _HASH_SNIPPET, "1"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout.strip()
    assert there == here


def test_initial_state_depends_on_the_seed_only_and_leaves_the_rng_alone() -> None:
    torch.manual_seed(1)
    a = initial_state(digits_mlp, 5)
    marker = torch.rand(1)
    torch.manual_seed(1)
    torch.rand(3)
    b = initial_state(digits_mlp, 5)
    torch.manual_seed(1)
    initial_state(digits_mlp, 5)
    assert torch.equal(torch.rand(1), marker)  # the caller's RNG stream is untouched
    assert model_hash(a) == model_hash(b)
    assert model_hash(initial_state(digits_mlp, 6)) != model_hash(a)
    assert all(t.dtype == torch.float32 for t in a.values())
    assert sum(t.numel() for t in a.values()) == 64 * 64 + 64 + 64 * 10 + 10


def test_training_improves_accuracy_on_the_shard(learner: Learner) -> None:
    learner.warm_up()
    g = learner.initial_state()
    before = learner.evaluate(g, "train")
    result = learner.train(g, seed=1)
    trained = apply_update(g, result.update)
    after = learner.evaluate(trained, "train")
    assert result.samples == len(learner.data.train) and result.seconds > 0
    assert list(result.update) == list(g)
    assert all(u.dtype == torch.float32 and u.shape == g[k].shape for k, u in result.update.items())
    assert before.accuracy < 0.3
    assert after.accuracy > before.accuracy + 0.4
    assert learner.evaluate(trained, "test").accuracy > learner.evaluate(g, "test").accuracy


def test_training_is_deterministic_given_the_seed(learner: Learner) -> None:
    g = learner.initial_state()
    a, b, c = (learner.train(g, seed=s).update for s in (3, 3, 4))
    assert model_hash(a) == model_hash(b)
    assert model_hash(a) != model_hash(c)


def test_label_flip_trains_on_permuted_labels(learner: Learner) -> None:
    g = learner.initial_state()
    honest = apply_update(g, learner.train(g, seed=1).update)
    flipped = apply_update(g, learner.train(g, seed=1, label_flip=True).update)
    data = learner.data.train
    assert (
        learner.evaluate(flipped, "train").accuracy
        < 0.5 * learner.evaluate(honest, "train").accuracy
    )
    with torch.no_grad():
        m = digits_mlp()
        m.load_state_dict(flipped)
        pred = m(data.x).argmax(1)
    flipped_acc = float((pred == 9 - data.y).float().mean())
    assert flipped_acc > 0.6


def test_evaluation_ppm_rounds_the_score_half_up() -> None:
    assert Evaluation(1 / 3, 3).ppm == 333_333
    assert Evaluation(2 / 3, 3).ppm == 666_667
    assert Evaluation(0.125, 8).ppm == 125_000
    assert Evaluation(-0.0000015, 8).ppm == -1
    assert Evaluation(float("nan"), 8).ppm < -(10**12)
    assert Evaluation(0.0, 0).ppm == 0 and Evaluation(0.0, 0).accuracy == 0.0


def test_the_score_is_accuracy_or_minus_the_loss(learner: Learner) -> None:
    g = learner.initial_state()
    ev = learner.evaluate(g, "val")
    assert ev.score == ev.accuracy == ev.metrics["correct"] / len(learner.data.val)
    task = DigitsMLP()
    task.score = "loss"
    by_loss = Learner.from_data(SETTINGS, task, learner.data).evaluate(g, "val")
    assert by_loss.score == -by_loss.metrics["loss"] and by_loss.metrics["loss"] > 1.5
    task.score = "brier"
    by_brier = Learner.from_data(SETTINGS, task, learner.data).evaluate(g, "val")
    assert by_brier.score == -by_brier.metrics["brier"] and 0.8 < by_brier.metrics["brier"] < 2


async def test_async_wrappers_run_in_a_thread(learner: Learner) -> None:
    g = learner.initial_state()
    result = await learner.train_async(g, seed=1)
    assert model_hash(result.update) == model_hash(learner.train(g, seed=1).update)
    ev = await learner.evaluate_async(g, "test")
    assert ev == learner.evaluate(g, "test") and ev.samples == 359


def _float64_model() -> nn.Module:
    return nn.Linear(2, 2).double()


def _not_a_model() -> int:
    return 3


not_callable = 5


def test_model_factory_errors_name_the_spec() -> None:
    mod = __name__
    assert load_model_factory("flocknode.learning.models:digits_mlp") is digits_mlp
    for spec, message in [
        ("no_colon", "expected 'module:function'"),
        ("flocknode.nope:f", "cannot import module"),
        ("flocknode.learning.models:nope", "has no 'nope'"),
        (f"{mod}:not_callable", "is not callable"),
        (f"{mod}:_not_a_model", "not a Module"),
        (f"{mod}:_float64_model", "must be float32, float16"),
    ]:
        with pytest.raises(PluginError, match=message) as e:
            load_model_factory(spec)
        assert spec in str(e.value) or "float16" in message


class _NoEvaluate(DigitsMLP):
    evaluate = Task.evaluate  # still abstract


def test_unknown_task_is_refused(shards: tuple[list[Path], Path]) -> None:
    with pytest.raises(PluginError, match="not built in"):
        Learner.from_settings(TrainingSettings(task="mnist"), shards[0][0])
    with pytest.raises(PluginError, match="cannot import"):
        Learner.from_settings(TrainingSettings(task="nowhere.at_all:TASK"), shards[0][0])
    with pytest.raises(PluginError, match=r"cannot be created .*abstract method evaluate"):
        Learner.from_settings(TrainingSettings(task=f"{__name__}:_NoEvaluate"), shards[0][0])


def test_missing_data_and_too_small_a_validation_split_are_one_line(
    shards: tuple[list[Path], Path], tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="does not exist") as e:
        Learner.from_settings(SETTINGS, tmp_path / "nothing-here")
    assert e.value.exit_code == 2 and "nothing-here" in str(e.value)
    needy = TrainingSettings(min_val_samples=10_000)
    with pytest.raises(DataError, match="needs at least 10000") as e:
        Learner.from_settings(needy, shards[0][0])
    assert str(shards[0][0]) in str(e.value)


def test_batches_by_steps_and_by_epochs() -> None:
    from flocknode.learning.train import _batches

    gen = torch.Generator().manual_seed(0)
    by_steps = list(_batches(20, 6, steps=7, epochs=99, gen=gen))
    assert len(by_steps) == 7 and all(len(b) == 6 for b in by_steps)
    # each pass yields 3 full batches of distinct indices (the tail of 2 is skipped)
    assert len(set(torch.cat(by_steps[:3]).tolist())) == 18
    by_epochs = list(_batches(20, 6, steps=0, epochs=2, gen=gen))
    assert [len(b) for b in by_epochs] == [6, 6, 6, 2] * 2
    assert sorted(torch.cat(by_epochs).tolist()) == sorted(list(range(20)) * 2)
    assert [len(b) for b in _batches(4, 16, steps=3, epochs=1, gen=gen)] == [4, 4, 4]


def test_the_balanced_loss_learns_likelihoods_not_the_nodes_label_mix() -> None:
    """9 of 10 samples of class 0 and inputs that say nothing about the class: plain
    cross-entropy learns to answer 0; with the node's prior on the logits the model
    itself stays near even odds, so it does not drag a global model towards class 0."""
    from flocknode.learning.train import train_classifier

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=gen)
    y = (torch.arange(200) % 10 == 0).long()
    p0 = {}
    for prior in (0, 2):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        train_classifier(
            model, Samples(x, y), steps=200, epochs=1, batch_size=50, optimizer="adam",
            learning_rate=0.05, momentum=0.0, seed=1, prior_classes=prior,
        )  # fmt: skip
        with torch.no_grad():
            p0[prior] = float(model(x).softmax(dim=1)[:, 0].mean())
    assert p0[0] > 0.85 and abs(p0[2] - 0.5) < 0.1, p0


def test_sgd_by_epochs_also_trains() -> None:
    settings = TrainingSettings(optimizer="sgd", local_steps=0, local_epochs=3, learning_rate=0.1)
    lr = Learner.for_shard(settings, 0, 3)
    g = lr.initial_state()
    after = lr.evaluate(apply_update(g, lr.train(g, seed=0).update), "train")
    assert after.accuracy > lr.evaluate(g, "train").accuracy + 0.4


@pytest.mark.parametrize(("limit", "value"), [("EVAL_BATCH", 7), ("EVAL_VALUES", 64 * 7 + 63)])
def test_evaluation_in_batches_counts_every_sample_once(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int
) -> None:
    """The split goes through the model EVAL_BATCH samples at a time, fewer when
    a linear layer's output would hold more than EVAL_VALUES values (activations,
    not the split, bound memory); the figures are those of one pass."""
    from flocknode.learning import train as train_mod

    torch.manual_seed(0)
    model = digits_mlp()  # its widest linear layer: 64 outputs
    data = Samples(torch.randn(45, 64), torch.randint(0, 10, (45,)))
    whole = train_mod.evaluate_classifier(model, data)
    monkeypatch.setattr(train_mod, limit, value)
    assert train_mod.eval_batch(model) == 7  # 6 full batches and one of 3
    parts = train_mod.evaluate_classifier(model, data)
    assert parts.metrics["correct"] == whole.metrics["correct"] and parts.samples == 45
    for k in ("loss", "brier"):
        assert parts.metrics[k] == pytest.approx(whole.metrics[k], rel=1e-6)


def test_a_wide_model_is_evaluated_a_few_samples_at_a_time() -> None:
    # wide-mlp-100mb's 350k hidden units: 64 samples' outputs would be 90 MB a layer
    from flocknode.learning.builtin import BUILTIN_TASKS

    names = ["wide-mlp-100mb", "wide-mlp-25mb", "wide-mlp-1mb", "deep-mlp-100mb", "digits-cnn"]
    with torch.device("meta"):  # shapes only
        batches = {t: train.eval_batch(BUILTIN_TASKS[t]().build_model()) for t in names}
    assert batches["wide-mlp-100mb"] == 12 and batches["wide-mlp-25mb"] == 48
    assert batches["digits-cnn"] == batches["deep-mlp-100mb"] == batches["wide-mlp-1mb"] == 64


def _torch_optim(model: nn.Module, kind: str, momentum: float) -> torch.optim.Optimizer:
    """torch.optim's Adam or SGD at learning rate 0.01, one parameter at a time."""
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.01, foreach=False)
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=momentum, foreach=False)


@pytest.mark.parametrize(("kind", "momentum"), [("adam", 0.0), ("sgd", 0.9), ("sgd", 0.0)])
@pytest.mark.parametrize("in_backward", [False, True])
@pytest.mark.parametrize("spill", [False, True])
def test_optimizer_gives_torch_optims_bits_a_piece_of_a_parameter_at_a_time(
    monkeypatch: pytest.MonkeyPatch, kind: str, momentum: float, in_backward: bool, spill: bool
) -> None:
    # the node's own optimizer (no torch._dynamo import) steps a parameter in pieces so
    # its temporaries stay small, and inside in_backward() as soon as the parameter's
    # gradient is accumulated (then drops it); elementwise, so the bits are torch.optim's,
    # with a large parameter's state in a file (spill: the 27 to 81-value weights) too
    monkeypatch.setattr(train, "ADAM_PIECE", 7)
    monkeypatch.setattr(train, "SPILL_MIN", 27 if spill else 10**9)
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 9), nn.ReLU(), nn.Linear(9, 3))
    theirs = copy.deepcopy(ours)
    opt = train._Optimizer(list(ours.parameters()), kind, 0.01, momentum)
    stateful = kind == "adam" or momentum != 0
    assert sorted(opt.spilled) == ([0, 2, 4] if spill and stateful else [])
    assert (opt.file is not None) == bool(opt.spilled)
    ref = _torch_optim(theirs, kind, momentum)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    with opt.in_backward() if in_backward else contextlib.nullcontext():
        for _ in range(4):
            ours.zero_grad(set_to_none=True)
            if in_backward:
                opt.begin()
            nn.functional.cross_entropy(ours(x), y).backward()
            if not in_backward:
                opt.step()
            theirs.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(theirs(x), y).backward()
            ref.step()
            for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
                assert torch.equal(a, b)
                assert (a.grad is None) == in_backward  # dropped once used
    opt.close()
    plain = train._Optimizer(list(ours.parameters()), "sgd", 0.01, 0.0)
    assert plain.m == [] and plain.v == []  # SGD without momentum holds no state
    assert plain.file is None
    ours(x).sum().backward()  # the hooks are gone: nothing is stepped any more
    assert all(p.grad is not None for p in ours.parameters())
    assert all(
        torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
    )


async def test_task_code_in_the_daemon_runs_one_call_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as in the task worker: a tester's evaluation never runs beside a proposer's
    # training, so their memory never adds up. The first call waits up to 2 s for a
    # second one to start beside it; one at a time, none does.
    learner = Learner.from_settings(SETTINGS, 0, 3)
    lock = threading.Lock()
    active, peak, calls = [0], [0], [0]
    second = threading.Event()

    def fake(self: Learner, state: object, split: str = "val") -> Evaluation:
        with lock:
            active[0] += 1
            calls[0] += 1
            peak[0] = max(peak[0], active[0])
            first = calls[0] == 1
        if first:
            second.wait(2.0)
        else:
            second.set()
        with lock:
            active[0] -= 1
        return Evaluation(0.0, 0, {})

    monkeypatch.setattr(Learner, "evaluate", fake)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(learner.evaluate_async, {})
    assert peak[0] == 1


def _train_both(
    monkeypatch: pytest.MonkeyPatch, make: object, kind: str = "adam", momentum: float = 0.0
) -> tuple[nn.Module, nn.Module, list[tuple[int, slice | None]], list[bool]]:
    """``make()`` trained twice from the same start: with STREAM_MIN at 40 values
    (blocks of 21) and without streaming. Returns both models, the rows the first
    training updated at a time (``None``: all) by parameter index, and for each
    hook call on its first parameter whether it found a whole gradient."""
    assert callable(make)
    monkeypatch.setattr(train, "ADAM_PIECE", 21)
    torch.manual_seed(0)
    ours: nn.Module = make()
    torch.manual_seed(0)
    theirs: nn.Module = make()  # built, not copied: with the task's hooks
    x, y = torch.randn(64, 7), torch.randint(0, 3, (64,))
    blocks: list[tuple[int, slice | None]] = []
    seen: list[bool] = []
    real_rows, real_update = train._Optimizer.update_rows, train._Optimizer._update

    def rows(self: train._Optimizer, i: int, rows: slice | None, grad: torch.Tensor) -> None:
        blocks.append((i, rows))
        real_rows(self, i, rows, grad)

    def update(self: train._Optimizer, i: int) -> None:
        if i == 0:
            seen.append(self.params[0].grad is not None)
        real_update(self, i)

    monkeypatch.setattr(train._Optimizer, "update_rows", rows)
    monkeypatch.setattr(train._Optimizer, "_update", update)
    for model, stream_min in ((ours, 40), (theirs, 10**9)):
        monkeypatch.setattr(train, "STREAM_MIN", stream_min)
        train.train_classifier(
            model, Samples(x, y), steps=3, epochs=1, batch_size=16, optimizer=kind,
            learning_rate=0.01, momentum=momentum, seed=1,
        )  # fmt: skip
        if model is ours:
            mine, hooked = list(blocks), list(seen)
        assert not any("forward" in vars(m) for m in model.modules())  # the patches are gone
    return ours, theirs, mine, hooked


def _same_training(ours: nn.Module, theirs: nn.Module) -> None:
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("kind", "momentum"), [("adam", 0.0), ("sgd", 0.9), ("sgd", 0.0)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_large_linear_weight_is_updated_a_block_of_rows_at_a_time(
    monkeypatch: pytest.MonkeyPatch, kind: str, momentum: float, bias: bool
) -> None:
    # wide-mlp's first layer is 85% of the model: its whole gradient beside the
    # weights and Adam's moments would be the proposer's peak (docs/protocol.md, step 3)
    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(7, 40, bias=bias), nn.ReLU(), nn.Linear(40, 3))

    ours, theirs, blocks, seen = _train_both(monkeypatch, make, kind, momentum)
    assert not any(seen)  # the 40 x 7 weight never held a whole gradient
    mine = [rows for i, rows in blocks if i == 0]
    assert mine[:14] == [slice(r, r + 3) for r in range(0, 40, 3)]  # 21 values a block
    assert len(mine) == 3 * 14  # every step, every block
    torch.manual_seed(0)
    start = make()
    for a, c in zip(ours.parameters(), start.parameters(), strict=True):
        assert not torch.equal(a, c)  # trained
    _same_training(ours, theirs)


@pytest.mark.parametrize(("kind", "momentum"), [("adam", 0.0), ("sgd", 0.9)])
def test_state_in_a_file_gives_the_same_bits_as_in_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, momentum: float
) -> None:
    # a large parameter's optimizer state lives in an unnamed file of the given
    # directory (mode 600), read and written back a piece at a time, also when
    # the weight is stepped a block of rows at a time in backward; same bits.
    # The file is kept for the next training, which reads none of its old values
    monkeypatch.setattr(train, "ADAM_PIECE", 13)
    monkeypatch.setattr(train, "STREAM_MIN", 40)
    x, y = torch.randn(64, 7), torch.randint(0, 3, (64,))
    opened: list[tuple[str, int]] = []
    fresh: list[bool] = []  # per read: zeros rather than the file (nothing written yet)
    real_read = train._StateFile.read

    def read(self: train._StateFile, at: int, n: int, buffer: int, zeros: bool) -> torch.Tensor:
        fd = self._file.fileno()
        opened.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_mode & 0o777))
        fresh.append(zeros)
        return real_read(self, at, n, buffer, zeros)

    monkeypatch.setattr(train._StateFile, "read", read)
    files: list[train._StateFile] = []
    real_init = train._StateFile.__init__

    def init(self: train._StateFile, values: int, directory: Path | None) -> None:
        files.append(self)
        real_init(self, values, directory)

    monkeypatch.setattr(train._StateFile, "__init__", init)
    models = []
    for spill_min in (40, 40, 10**9):
        monkeypatch.setattr(train, "SPILL_MIN", spill_min)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(7, 40), nn.ReLU(), nn.Linear(40, 3))
        with train.optimizer_state_dir(tmp_path):
            train.train_classifier(
                model, Samples(x, y), steps=3, epochs=1, batch_size=16, optimizer=kind,
                learning_rate=0.01, momentum=momentum, seed=1,
            )  # fmt: skip
        models.append(model)
    assert len(files) == 1  # one file, kept open for the next training
    assert train._StateFile._idle.pop(tmp_path) is files[0] and not files[0]._file.closed
    files[0].close()
    assert opened and all(path.startswith(f"{tmp_path}/") for path, _ in opened)
    assert {mode for _, mode in opened} == {0o600}
    # each training, three steps with the same reads: the first gets zeros, the others the file
    k = len(fresh) // 6
    assert k and fresh == 2 * ([True] * k + [False] * (2 * k))
    assert list(tmp_path.iterdir()) == []  # nothing named is left behind
    for other in models[1:]:
        for a, b in zip(models[0].parameters(), other.parameters(), strict=True):
            assert torch.equal(a, b)


def test_the_learner_keeps_optimizer_state_in_its_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the node gives its learner a directory of its data dir (created, mode 700)
    # for the state of large parameters; the same training as without one
    monkeypatch.setattr(train, "SPILL_MIN", 500)
    dirs: list[Path | None] = []
    real_take = train._StateFile.take

    def take(values: int, directory: Path | None) -> train._StateFile:
        dirs.append(directory)
        return real_take(values, directory)

    monkeypatch.setattr(train._StateFile, "take", take)
    plain = Learner.from_settings(SETTINGS, 0, 3)
    state_dir = tmp_path / "optim"
    learner = dataclasses.replace(plain, state_dir=state_dir)
    start = learner.initial_state()
    ours = learner.train(start, seed=3).update
    assert dirs == [state_dir] and state_dir.stat().st_mode & 0o777 == 0o700
    theirs = plain.train(start, seed=3).update
    assert dirs == [state_dir, None]  # digits-mlp's weights: 4,096 and 640 values
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    train._StateFile._idle.pop(state_dir).close()  # kept open for a next training


class _TwiceUsed(nn.Module):
    """One linear layer called twice, its weight also read directly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(7, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.relu(self.fc(x)))
        return self.out(h + x @ self.fc.weight.t())


class _TwiceCalled(_TwiceUsed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(torch.relu(self.fc(x))))


class _Direct(_TwiceUsed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)) + x @ self.fc.weight.t())


class _Autocast(_TwiceUsed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.relu(self.fc(x))
        return self.out(h.float())


@pytest.mark.parametrize("make", [_TwiceUsed, _TwiceCalled, _Direct, _Autocast])
def test_a_weight_used_more_than_once_gets_its_whole_gradient(
    monkeypatch: pytest.MonkeyPatch, make: type[nn.Module]
) -> None:
    # block updates from one use's gradient would step on the partial sums:
    # such a step takes the plain way, the same training as without streaming
    ours, theirs, blocks, seen = _train_both(monkeypatch, make)
    assert seen == [True, True, True]
    assert all(rows is None for _, rows in blocks)
    _same_training(ours, theirs)


class _Shared(nn.Module):
    """Two linear layers holding one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(7, 7), nn.Linear(7, 7)
        self.b.weight = self.a.weight
        self.out = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.b(torch.relu(self.a(x))))


class _OwnLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2.0


def _own() -> nn.Module:
    return nn.Sequential(_OwnLinear(7, 7), nn.ReLU(), nn.Linear(7, 3))


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 3))
    mask = torch.ones(7, 7)
    mask[:3] = 0  # the task freezes the first rows through the gradient
    model[0].weight.register_hook(lambda g: g * mask)
    return model


@pytest.mark.parametrize("make", [_Shared, _own, _hooked])
def test_weights_that_stay_whole(monkeypatch: pytest.MonkeyPatch, make: object) -> None:
    # a weight two modules share, a subclass's own forward, a gradient hook of
    # the task's: the usual training, no blocks
    ours, theirs, blocks, seen = _train_both(monkeypatch, make)
    assert seen == [True, True, True]
    assert all(rows is None for _, rows in blocks)
    _same_training(ours, theirs)
    if make is _hooked:
        torch.manual_seed(0)
        assert torch.equal(next(ours.parameters())[:3], next(_hooked().parameters())[:3])


def test_training_after_an_error_leaves_no_layer_patched() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(7, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("task bug")

    model = Broken()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "STREAM_MIN", 1)
        with pytest.raises(RuntimeError, match="task bug"):
            train.train_classifier(
                model, Samples(torch.randn(8, 7), torch.randint(0, 3, (8,))), steps=1,
                epochs=1, batch_size=4, optimizer="adam", learning_rate=0.01, momentum=0.0,
                seed=1,
            )  # fmt: skip
    assert "forward" not in vars(model.fc)


class _Tempered(nn.Module):
    """A learnt temperature: a parameter with no dimensions, hence no rows."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(7, 3)
        self.temperature = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) / self.temperature


@pytest.mark.parametrize(("kind", "momentum"), [("adam", 0.0), ("sgd", 0.9), ("sgd", 0.0)])
def test_a_parameter_without_dimensions_trains_as_torch_optim_does(
    kind: str, momentum: float
) -> None:
    torch.manual_seed(0)
    ours = _Tempered()
    theirs = copy.deepcopy(ours)
    x, y = torch.randn(16, 7), torch.randint(0, 3, (16,))
    train.train_classifier(
        ours, Samples(x, y), steps=1, epochs=1, batch_size=16, optimizer=kind,
        learning_rate=0.01, momentum=momentum, seed=1,
    )  # fmt: skip
    ref = _torch_optim(theirs, kind, momentum)
    nn.functional.cross_entropy(theirs(x), y).backward()
    ref.step()
    assert float(ours.temperature.detach()) != 1.5
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
