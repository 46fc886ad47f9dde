"""Built-in tasks: ``digits-mlp`` (CSV files), ``digits-cnn`` (PNG image folders) and
``lm-lora`` (JSONL text on a pinned language model: ``flocknode.learning.lm_lora``).

Both classify 8x8 images of the digits 0-9 and read the participant's files
from ``[data] path`` with the built-in loaders:

- ``digits-mlp``: CSV file(s) with columns ``p0`` .. ``p63`` (pixel values
  0-16, row by row) and ``label`` (``0`` .. ``9``); a 64-64-10 perceptron.
- ``digits-cnn``: a folder per class (``0`` .. ``9``) of grey PNG/JPEG images
  (8x8; others are resized), pixel values 0-255; two 3x3 convolutions with
  BatchNorm and a linear layer. Its state holds BatchNorm running statistics
  and ``num_batches_tracked`` counters (int64) besides the weights.
- ``wide-mlp-1mb``, ``wide-mlp-25mb``, ``wide-mlp-100mb``: the digits CSV
  through one hidden layer wide enough for about 1, 25 or 100 MiB of float32
  weights, two local steps a round (bench/scale.py).

For testers, ``reference_data`` is scikit-learn's digits (1,797 images, read
from the CSV inside the scikit-learn wheel, without importing scikit-learn:
the import alone costs about 50 MB per process), and ``write_data`` writes a
node's shard in the task's format.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from flocknode.learning.lm_lora import LMLoRA
from flocknode.learning.loaders import load_csv, load_image_folder, write_csv, write_image_folder
from flocknode.learning.task import DataError, Evaluation, Samples, Task
from flocknode.learning.train import evaluate_classifier, train_classifier

if TYPE_CHECKING:
    from flocknode.learning.settings import TrainingSettings

DIGIT_CLASSES = tuple(str(i) for i in range(10))
PIXELS = tuple(f"p{i}" for i in range(64))


class ClassifierTask(Task):
    """Cross-entropy training and accuracy/loss evaluation over ``Samples(x, y)``.

    ``label_smoothing`` and ``balanced`` (train with the node's class prior
    added to the logits) are the training recipe (``train_classifier``).
    """

    num_classes = len(DIGIT_CLASSES)
    score = "accuracy"
    label_smoothing = 0.0
    balanced = False

    def train(
        self,
        model: nn.Module,
        data: Samples,
        settings: TrainingSettings,
        seed: int,
        device: torch.device,
    ) -> dict[str, float]:
        return train_classifier(
            model,
            data,
            steps=settings.local_steps,
            epochs=settings.local_epochs,
            batch_size=settings.batch_size,
            optimizer=settings.optimizer,
            learning_rate=settings.learning_rate,
            momentum=settings.momentum,
            seed=seed,
            device=device,
            label_smoothing=self.label_smoothing,
            prior_classes=self.num_classes if self.balanced else 0,
        )

    def evaluate(self, model: nn.Module, data: Samples, device: torch.device) -> Evaluation:
        return evaluate_classifier(model, data, self.score, device)


class DigitsMLP(ClassifierTask):
    """Non-IID shards and 5 of 10 proposers a round make each accepted round a jump
    in a direction only those 5 shards chose. Four things keep that in check
    (bench/accuracy.py, 10 nodes, Dirichlet(0.5), voting, seeds 1-30, round 10):
    the balanced softmax (the node's class prior added to the logits in
    training), label smoothing 0.1, a learning rate that decays by 0.8 a round
    down to a tenth of its start, and an outer learning rate of 0.5. Test
    accuracy min / mean 0.961 / 0.976 with them, 0.922 / 0.953 without;
    accepted rounds that lowered it by more than a point 1 of 300, against 37.
    Honest norms then reach 1.61 of the step scale, hence a ceiling of 2
    (docs/tasks.md).
    """

    name = "digits-mlp"
    label_smoothing = 0.1
    balanced = True
    settings_defaults: ClassVar[Mapping[str, Any]] = {
        "training": {"lr_decay": 0.8, "lr_min": 0.1},
        "aggregation": {"outer_lr": 0.5, "norm_ceiling": 2.0},
    }

    def build_model(self) -> nn.Module:
        return digits_mlp()

    def load_data(self, path: Path) -> Samples:
        x, y = load_csv(path, PIXELS, "label", DIGIT_CLASSES)
        if (x < 0).any() or (x > 16).any():
            raise DataError(f"{path}: pixel values must be in 0..16")
        return Samples(torch.from_numpy((x / 16.0).astype(np.float32)), torch.from_numpy(y))

    def write_data(self, path: Path, data: Samples) -> None:
        pixels = np.rint(data.x.numpy().astype(np.float64) * 16.0)
        write_csv(path / "digits.csv", pixels, data.y.numpy(), PIXELS, "label", DIGIT_CLASSES)

    def reference_data(self) -> Samples:
        x, y = load_digits_arrays()
        return Samples(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()))


class DigitsCNN(ClassifierTask):
    """Its updates alone move a voter's validation accuracy further than the MLP's.

    bench/accuracy.py's ``update_probe`` (10 nodes, Dirichlet(0.5), seed 1),
    after 3 and 6 FedAvg rounds: an honest update alone changes another
    node's validation accuracy by -76 / -69 points at worst (5th percentile
    -50 / -41), a label-flipped one by -50 / -55 at best (95th percentile
    -64 / -67). The MLP's threshold, -45 points, lies inside the honest spread;
    -60 lies between the honest 5th and the label flip's 95th percentile.
    """

    name = "digits-cnn"
    label_smoothing = 0.1
    balanced = True
    settings_defaults: ClassVar[Mapping[str, Any]] = {
        "flag_threshold_ppm": -600_000,
        "training": {"lr_decay": 0.8, "lr_min": 0.1},
    }

    def build_model(self) -> nn.Module:
        return digits_cnn()

    def load_data(self, path: Path) -> Samples:
        images, y = load_image_folder(path, DIGIT_CLASSES, (8, 8), "L")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        return Samples(x, torch.from_numpy(y))

    def write_data(self, path: Path, data: Samples) -> None:
        images = np.rint(data.x.numpy().reshape(-1, 8, 8) * 255.0).astype(np.uint8)
        write_image_folder(path, images, data.y.numpy(), DIGIT_CLASSES)

    def reference_data(self) -> Samples:
        x, y = load_digits_arrays()
        return Samples(torch.from_numpy(x.reshape(-1, 1, 8, 8).copy()), torch.from_numpy(y.copy()))


def digits_mlp() -> nn.Module:
    """64 inputs (8x8 digits), one hidden layer of 64, 10 classes."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def digits_cnn() -> nn.Module:
    """Two 3x3 convolutions (16 and 32 channels) with BatchNorm, 2x2 pooling, 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


@cache
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1] as float32 (n x 64), labels as int64 (loaded once per process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits data set comes with scikit-learn, which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if not path.exists():
        raise DataError(f"{path}: digits data not found")
    raw = np.loadtxt(path, delimiter=",", dtype=np.float64)
    x = (raw[:, :-1] / 16.0).astype(np.float32)
    y = raw[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


class WideMLP(DigitsMLP):
    """The digits data through one very wide hidden layer: a model of a set size
    for measuring what the protocol costs as models grow (bench/scale.py).
    Two local steps a round, so the protocol, not training, takes the time."""

    name = "wide-mlp"
    width: ClassVar[int] = 64
    label_smoothing = 0.0
    balanced = False
    settings_defaults: ClassVar[Mapping[str, Any]] = {
        "training": {"local_steps": 2, "learning_rate": 0.001}
    }

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, self.width), nn.ReLU(), nn.Linear(self.width, 10))


class DeepMLP(WideMLP):
    """The digits data through ``DEPTH`` hidden layers of one width: a model of a
    set size whose largest tensor is a seventh of it, where wide-mlp's first
    layer is 85% of it. What a node holds beyond the weights scales with the
    largest tensor (a gradient at a time, docs/protocol.md step 3), so the two
    shapes bracket that part of the memory (bench/scale.py ``--shape``)."""

    name = "deep-mlp"
    DEPTH: ClassVar[int] = 8

    def build_model(self) -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(64, self.width), nn.ReLU()]
        for _ in range(self.DEPTH - 1):
            layers += [nn.Linear(self.width, self.width), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(self.width, 10))


def _wide(mb: int) -> type[Task]:
    """``wide-mlp-<mb>mb``: 75 x width + 10 float32 parameters, about ``mb`` MiB."""
    width = round(mb * 2**20 / 4 / 75)
    return type(f"WideMLP{mb}", (WideMLP,), {"name": f"wide-mlp-{mb}mb", "width": width})


def _deep(mb: int) -> type[Task]:
    """``deep-mlp-<mb>mb``: 7 w^2 + 82 w + 10 float32 parameters (w the width), about
    ``mb`` MiB."""
    n = mb * 2**20 / 4
    width = round((-82 + math.sqrt(82**2 + 28 * (n - 10))) / 14)
    return type(f"DeepMLP{mb}", (DeepMLP,), {"name": f"deep-mlp-{mb}mb", "width": width})


BUILTIN_TASKS: dict[str, type[Task]] = {
    "digits-mlp": DigitsMLP,
    "digits-cnn": DigitsCNN,
    **{f"wide-mlp-{mb}mb": _wide(mb) for mb in (1, 25, 100)},
    **{f"deep-mlp-{mb}mb": _deep(mb) for mb in (1, 25, 100)},
    "lm-lora": LMLoRA,  # imports transformers and peft only once it builds a model or reads data
}
