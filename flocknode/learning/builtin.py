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

For testers, ``reference_data`` is scikit-learn's digits (1,797 images, read
from the CSV inside the scikit-learn wheel, without importing scikit-learn:
the import alone costs about 50 MB per process), and ``write_data`` writes a
node's shard in the task's format.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

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
    """Cross-entropy training and accuracy/loss evaluation over ``Samples(x, y)``."""

    num_classes = len(DIGIT_CLASSES)
    score = "accuracy"

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
        )

    def evaluate(self, model: nn.Module, data: Samples, device: torch.device) -> Evaluation:
        return evaluate_classifier(model, data, self.score, device)


class DigitsMLP(ClassifierTask):
    name = "digits-mlp"

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
    name = "digits-cnn"

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


BUILTIN_TASKS: dict[str, type[Task]] = {
    "digits-mlp": DigitsMLP,
    "digits-cnn": DigitsCNN,
    "lm-lora": LMLoRA,  # imports transformers and peft only once it builds a model or reads data
}
