"""A task's training and aggregation settings, their canonical JSON and ``configHash``.

Canonical form (version 1): the JSON object

    {"aggregation": {...}, "flag_threshold_ppm": int, "training": {...}, "version": 1}

with every setting present, keys sorted at every level, no whitespace
(``separators=(",", ":")``), ASCII only, integers as integers and floats as
Python's shortest round-trip ``repr`` (``0.05``, ``1e-05``). One exception to
"every setting present": ``training.task_package`` and
``training.base_model_hash`` appear only when they are set, so settings
without a task package or a base model keep the bytes and hash they always had
(docs/protocol.md, "Task packages"). ``configHash`` is
the SHA-256 of those UTF-8 bytes. Whoever creates a task publishes the
canonical JSON next to the task address (the cluster launcher writes it into
each node's directory); a node checks the published bytes against the on-chain
``configHash`` before it uses them, and ``check_config`` compares a node's own
settings with them so that a mismatch names the setting that differs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from flocknode.aggregation.settings import (
    OPTIONAL_AGGREGATION,
    AggregationSettings,
    SettingsError,
)
from flocknode.errors import FlockError

CANONICAL_VERSION = 1
_PACKAGE_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
# Left out of the canonical JSON while they hold these values (the settings of
# tasks that do not use them keep the bytes and hash they always had).
OPTIONAL_TRAINING: dict[str, object] = {
    "task_package": "",
    "base_model_hash": "",
    "lr_decay": 1.0,
    "lr_min": 0.0,
}
DEFAULT_TASK = "digits-mlp"
DEFAULT_FLAG_THRESHOLD_PPM = -450_000


@dataclass(frozen=True)
class TrainingSettings:
    """The task, each participant's private split, and a proposer's local training.

    ``task`` is a built-in task (``digits-mlp``, ``digits-cnn``) or
    ``module:attr`` naming a task's code (docs/tasks.md); it builds the model
    and reads each participant's own files (``[data] path``).
    ``task_package`` pins that code: ``sha256:<hex>`` of the task package's
    canonical archive (``flocknode.learning.package``), whose tree holds
    ``task``'s module (so only with ``module:attr``); empty for built-in tasks
    and for code the nodes have installed themselves (not pinned). ``data_seed``
    and ``val_fraction`` decide how a participant splits their samples into
    training and validation (``flocknode.learning.task.private_split``); a
    node refuses to start with fewer than ``min_val_samples`` validation
    samples, which voters score with (the default, 5, is what the smallest of
    ``cluster up``'s digits shards gives at 2 to 12 nodes with ``val_fraction``
    0.1). ``init_seed`` makes the initial model.
    Training: ``local_steps`` mini-batches of ``batch_size`` (the same
    number for every proposer whatever its shard size, reshuffling after each
    pass), or ``local_epochs`` full passes when ``local_steps`` is 0;
    ``optimizer`` is ``adam`` (default betas) or ``sgd`` (with ``momentum``,
    which Adam ignores). ``base_model_hash``: for a task that starts from a
    base model (``lm-lora``), the SHA-256 (64 hex digits) of the model's
    directory (``flocknode.learning.base_model.dir_hash``); empty otherwise.
    ``lr_decay`` and ``lr_min``: round ``r``'s learning rate is
    ``learning_rate x max(lr_min, lr_decay^(r-1))`` (``for_round``), which
    every node computes from the round number (the norm band's step scale
    follows it); a decay below 1 needs a floor above 0.

    The defaults are digits-mlp's but for the schedule (no decay here; the
    digits tasks declare ``lr_decay`` 0.8 and ``lr_min`` 0.1, see
    ``flocknode.learning.builtin.DigitsMLP``), a built-in task may declare
    others (``task_defaults``), and they come from bench/accuracy.py (10 nodes,
    Dirichlet(0.5), 5 proposers a round): a fixed step count and Adam keep
    honest update norms within about 1.4x of their median, so the norm check
    (factor 3) leaves honest proposers alone and catches updates scaled by 4,
    and they give the norm band its step scale; SGD by epochs reached a
    similar accuracy but spread honest norms up to 5.9x and got honest
    proposers rejected. Round-10 test accuracy, seeds 1-5 (accepting every
    round unless said): the defaults 0.957 mean, 0.950 min (with the vote
    and the norm check 0.953 / 0.922, 4 of 50 rounds not accepted and 4
    accepted rounds costing over a point: ``bench/accuracy.py --seeds
    1,2,3,4,5 --rounds 10 --only fedavg_half,fedavg_all``); Adam at learning
    rate 0.01 / 0.005 0.954 / 0.951
    mean; 25 / 50 / 200 steps 0.949 / 0.952 / 0.953; batch 32 0.955; a hidden
    layer of 128 0.956; SGD (momentum 0.9) at 0.2 0.968 mean, 0.964 min with
    the vote and the norm check, but without a step scale there is no norm
    band, and the factor-3 check then rejected (and would slash) at least 11
    of 250 honest updates. Plain FedAvg of all 10 nodes each round reaches 0.965,
    the same MLP trained centrally on all of it about 0.97: with 5 of 10
    non-IID proposers a round the defaults stay about a point short of it.
    Those figures are for plain cross-entropy at a constant rate; digits-mlp's
    recipe (balanced softmax, label smoothing, the schedule, outer_lr) takes the vote's
    round-10 figure to 0.976 mean, 0.961 min over seeds 1-30 (docs/tasks.md).
    """

    task: str = DEFAULT_TASK
    task_package: str = ""
    data_seed: int = 0
    val_fraction: float = 0.1
    min_val_samples: int = 5
    init_seed: int = 0
    optimizer: str = "adam"
    local_steps: int = 100
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.02
    momentum: float = 0.9
    base_model_hash: str = ""
    lr_decay: float = 1.0
    lr_min: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise SettingsError("task", f"expected a non-empty string, got {self.task!r}")
        h = self.base_model_hash
        if not isinstance(h, str) or (h and re.fullmatch(r"[0-9a-f]{64}", h) is None):
            raise SettingsError("base_model_hash", f"expected 64 lowercase hex digits, got {h!r}")
        pkg = self.task_package
        if not isinstance(pkg, str) or (pkg and not _PACKAGE_HASH.match(pkg)):
            raise SettingsError("task_package", f"expected 'sha256:<64 hex>' or '', got {pkg!r}")
        if pkg and ":" not in self.task:
            raise SettingsError("task_package", f"task {self.task!r} is built in: no package")
        if self.optimizer not in ("adam", "sgd"):
            raise SettingsError("optimizer", f"must be 'adam' or 'sgd', got {self.optimizer!r}")
        _number("val_fraction", self.val_fraction, lambda v: 0 <= v < 1, "must be in [0, 1)")
        _number("learning_rate", self.learning_rate, lambda v: v > 0, "must be > 0")
        _number("momentum", self.momentum, lambda v: 0 <= v < 1, "must be in [0, 1)")
        _number("lr_decay", self.lr_decay, lambda v: 0 < v <= 1, "must be in (0, 1]")
        _number("lr_min", self.lr_min, lambda v: 0 <= v <= 1, "must be in [0, 1]")
        if self.lr_decay < 1 and self.lr_min == 0:
            raise SettingsError("lr_min", "must be > 0 when lr_decay < 1 (a floor)")
        for name, low in (
            ("data_seed", 0),
            ("min_val_samples", 1),
            ("init_seed", 0),
            ("local_epochs", 1),
            ("batch_size", 1),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SettingsError(name, f"expected an integer >= {low}, got {v!r}")
        for name in ("val_fraction", "learning_rate", "momentum", "lr_decay", "lr_min"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def for_round(self, round_no: int) -> TrainingSettings:
        """These settings with round ``round_no``'s learning rate (rounds count from 1).

        The power is taken by repeated squaring in IEEE doubles, so every node
        gets the same bits whatever its C library's ``pow``.
        """
        if self.lr_decay == 1.0:
            return self
        factor = max(self.lr_min, _power(self.lr_decay, max(0, round_no - 1)))
        return replace(self, learning_rate=self.learning_rate * factor)


@dataclass(frozen=True)
class TaskSettings:
    """Everything ``configHash`` covers: training, aggregation and the flag threshold.

    ``flag_threshold_ppm``: a voter flags an update whose validation score
    change (alone on the old global, parts per million of the task's score:
    accuracy for the digits tasks) is below this value.
    The default, -450000, is digits-mlp's, for Dirichlet(0.5) shards, where
    one honest update alone costs another node's validation accuracy up to 67
    points (5th percentile -42) and a label-flipped one 33 to 100 points (95th
    percentile -45): bench/accuracy.py's ``update_probe``. Other tasks declare
    their own (``task_defaults``): digits-cnn -600000; lm-lora -400000, a
    validation loss 0.4 nats higher, as its score is minus the loss
    (bench/lora.py --probe; the figures are at ``LMLoRA.settings_defaults``).
    For digits-mlp, a threshold of 0 flags any update that alone costs a
    voter one validation sample, which on non-IID shards is most honest ones:
    in an honest 6-node run (3 proposers, 3 voters, seeds 1-5) it flagged 100
    of 150 honest proposals and left 8 accepted rounds with every honest
    proposer flagged; -450000 flagged none.

    The digits tasks' voters score with validation accuracy. Minus the
    validation loss, or accuracy with the loss breaking ties, was stricter and
    slower: non-IID voters see the aggregate raise the loss on their own
    classes while test accuracy rises (10 nodes, seeds 1-5: accuracy 0.956
    mean round-10 with 2 of 50 rounds not accepted; loss 0.950 with 19;
    accuracy-then-loss 0.948 with 17; accepting every round 0.957).
    """

    training: TrainingSettings = field(default_factory=TrainingSettings)
    aggregation: AggregationSettings = field(default_factory=AggregationSettings)
    flag_threshold_ppm: int = DEFAULT_FLAG_THRESHOLD_PPM

    def __post_init__(self) -> None:
        v = self.flag_threshold_ppm
        if isinstance(v, bool) or not isinstance(v, int) or not -1_000_000 <= v <= 1_000_000:
            raise SettingsError("flag_threshold_ppm", f"expected an integer in +-1e6, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CANONICAL_VERSION,
            "training": {
                f.name: getattr(self.training, f.name)
                for f in fields(self.training)
                if f.name not in OPTIONAL_TRAINING
                or getattr(self.training, f.name) != OPTIONAL_TRAINING[f.name]
            },
            "aggregation": self.aggregation.to_dict(),
            "flag_threshold_ppm": self.flag_threshold_ppm,
        }

    def canonical_json(self) -> bytes:
        return json.dumps(
            self.to_dict(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        ).encode("ascii")

    def config_hash(self) -> bytes:
        """SHA-256 of the canonical JSON: the task's ``configHash`` (32 bytes)."""
        return hashlib.sha256(self.canonical_json()).digest()

    @classmethod
    def for_task(cls, task: str = DEFAULT_TASK) -> TaskSettings:
        """The settings a task is created with when its creator changes none of them."""
        return cls.from_dict({"training": {"task": task}})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSettings:
        """Strict: an unknown key or a bad value is a ``SettingsError`` naming it.

        A setting left out takes the task's own default (``task_defaults``:
        what a built-in task declares, else the dataclasses' defaults).
        """
        if not isinstance(data, Mapping):
            raise SettingsError("settings", "expected a JSON object")
        unknown = sorted(set(data) - {"version", "training", "aggregation", "flag_threshold_ppm"})
        if unknown:
            raise SettingsError(unknown[0], "unknown setting")
        if data.get("version", CANONICAL_VERSION) != CANONICAL_VERSION:
            raise SettingsError("version", f"unsupported version {data.get('version')!r}")
        training = data.get("training", {})
        if not isinstance(training, Mapping):
            raise SettingsError("training", "expected an object")
        known = {f.name for f in fields(TrainingSettings)}
        bad = sorted(set(training) - known)
        if bad:
            raise SettingsError(f"training.{bad[0]}", "unknown setting")
        defaults = task_defaults(training.get("task", DEFAULT_TASK))
        try:
            t = TrainingSettings(**{**defaults.get("training", {}), **training})
        except SettingsError as e:
            raise SettingsError(f"training.{e.name}", e.message) from None
        agg = data.get("aggregation", {})
        if not isinstance(agg, Mapping):
            raise SettingsError("aggregation", "expected an object")
        a = AggregationSettings.from_dict({**defaults.get("aggregation", {}), **agg})
        threshold = data.get("flag_threshold_ppm", defaults.get("flag_threshold_ppm"))
        return cls(t, a, DEFAULT_FLAG_THRESHOLD_PPM if threshold is None else threshold)

    @classmethod
    def from_canonical_json(cls, raw: bytes | str) -> TaskSettings:
        """Parse published settings; they must be exactly in canonical form."""
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        try:
            obj = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as e:
            raise SettingsError("settings", f"not valid JSON: {e}") from None
        # an optional setting left out holds its neutral value, not a task's default
        for section, neutral in (
            ("training", OPTIONAL_TRAINING),
            ("aggregation", OPTIONAL_AGGREGATION),
        ):
            part = obj.get(section) if isinstance(obj, dict) else None
            if isinstance(part, dict):
                obj[section] = {**neutral, **part}
        settings = cls.from_dict(obj)
        if settings.canonical_json() != data:
            raise SettingsError("settings", "JSON is not in canonical form (see TaskSettings)")
        return settings


def task_defaults(task: object) -> Mapping[str, Any]:
    """A built-in task's own defaults, in the shape of the canonical JSON's sections.

    ``{"training": {...}, "aggregation": {...}, "flag_threshold_ppm": n}``, each
    part optional (``settings_defaults`` of the task's class in
    ``flocknode.learning.builtin``); ``{}`` for any other task, whose creator
    gives what differs from the dataclasses' defaults.
    """
    from flocknode.learning.builtin import BUILTIN_TASKS

    cls = BUILTIN_TASKS.get(task) if isinstance(task, str) else None
    return getattr(cls, "settings_defaults", {}) if cls is not None else {}


class ConfigMismatchError(FlockError):
    """A node's settings do not hash to the task's ``configHash``.

    ``differences`` lists ``(setting, task value, node value)`` when the task's
    canonical JSON was available to compare with; empty otherwise.
    """

    exit_code = 2

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]) -> None:
        self.differences = differences
        super().__init__(message)


def flat_settings(settings: TaskSettings) -> dict[str, Any]:
    """``{"training.learning_rate": 0.1, ...}``: every setting under its dotted name."""
    out: dict[str, Any] = {}
    for key, value in settings.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def check_config(
    local: TaskSettings, config_hash: bytes, published: bytes | str | None = None
) -> None:
    """Raise ``ConfigMismatchError`` unless ``local`` hashes to ``config_hash``.

    ``published`` is the task's canonical JSON if the node has it: it must hash
    to ``config_hash`` itself, and then the error names every setting that
    differs (``training.learning_rate: task 0.05, node 0.1``). Without it the
    error can only say that the hashes differ.
    """
    if local.config_hash() == bytes(config_hash):
        return
    want, have = bytes(config_hash).hex(), local.config_hash().hex()
    if published is None:
        raise ConfigMismatchError(
            f"settings hash {have} differs from the task's configHash {want}; "
            "give the task's published settings JSON to see which setting differs",
            [],
        )
    raw = published.encode() if isinstance(published, str) else bytes(published)
    if hashlib.sha256(raw).digest() != bytes(config_hash):
        raise ConfigMismatchError(
            f"the published task settings do not hash to the task's configHash {want}", []
        )
    task = flat_settings(TaskSettings.from_canonical_json(raw))
    mine = flat_settings(local)
    keys = sorted(set(task) | set(mine))  # an optional setting may be in one only
    diffs = [(k, task.get(k, ""), mine.get(k, "")) for k in keys if task.get(k) != mine.get(k)]
    detail = "; ".join(f"{k}: task {t!r}, node {n!r}" for k, t, n in diffs)
    if not diffs:
        detail = "no single setting differs (a different canonical form or version?)"
    raise ConfigMismatchError(f"settings differ from the task's: {detail}", diffs)


def _number(name: str, value: object, ok: Any, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(name, f"expected a number, got {value!r}")
    if not (float(value) == float(value) and abs(float(value)) != float("inf")):
        raise SettingsError(name, f"must be finite, got {value!r}")
    if not ok(float(value)):
        raise SettingsError(name, f"{rule}, got {value!r}")


def _power(base: float, n: int) -> float:
    """``base ** n`` for ``0 < base <= 1`` by squaring; stops early once below 1e-300."""
    out = 1.0
    while n > 0 and out > 1e-300:
        if n & 1:
            out *= base
        base *= base
        n >>= 1
    return out


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
