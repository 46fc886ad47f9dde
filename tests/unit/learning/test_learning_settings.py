"""The task settings' canonical form, configHash, and the mismatch error."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from flocknode.aggregation import AggregationSettings, SettingsError
from flocknode.learning import (
    BUILTIN_TASKS,
    ConfigMismatchError,
    TaskSettings,
    TrainingSettings,
    check_config,
)
from flocknode.learning.lm_lora import LMLoRA
from flocknode.learning.settings import DEFAULT_FLAG_THRESHOLD_PPM, flat_settings


def _changed(value: Any) -> Any:
    """Another valid value of the same kind."""
    if isinstance(value, bool):
        raise AssertionError("no boolean settings expected")
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value > 0 else 0.1
    if value is None:
        return 3
    swaps = {"digits": "my.data:loader", "dirichlet": "iid", "fedavg": "median", "adam": "sgd"}
    swaps[""] = "ab" * 32  # training.base_model_hash: none -> a SHA-256
    return swaps.get(value, value + "x")


def _with(settings: TaskSettings, dotted: str, value: Any) -> TaskSettings:
    if "." not in dotted:
        return dataclasses.replace(settings, **{dotted: value})
    section, name = dotted.split(".")
    inner = dataclasses.replace(getattr(settings, section), **{name: value})
    return dataclasses.replace(settings, **{section: inner})


def test_canonical_json_is_sorted_compact_and_round_trips() -> None:
    s = TaskSettings()
    raw = s.canonical_json()
    obj = json.loads(raw)
    assert raw == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj["version"] == 1
    assert set(obj) == {"version", "training", "aggregation", "flag_threshold_ppm"}
    assert s.config_hash() == hashlib.sha256(raw).digest()
    assert TaskSettings.from_canonical_json(raw) == s
    # ints given for float settings normalise to one canonical form
    assert (
        _with(s, "training.learning_rate", 1).canonical_json()
        == _with(s, "training.learning_rate", 1.0).canonical_json()
    )


def test_every_setting_changes_the_hash_and_is_named_in_the_error() -> None:
    task = TaskSettings()
    published = task.canonical_json()
    names = list(flat_settings(task))
    # version + 11 training + 9 aggregation + flag threshold; the optional
    # training.task_package and training.base_model_hash appear only when set
    assert len(names) == 22
    assert "training.base_model_hash" not in names
    for name in names:
        if name == "version":
            continue
        old = flat_settings(task)[name]
        node = _with(task, name, _changed(old))
        assert node.config_hash() != task.config_hash(), name
        with pytest.raises(ConfigMismatchError) as e:
            check_config(node, task.config_hash(), published)
        assert [d[0] for d in e.value.differences] == [name]
        assert name in str(e.value)


def test_a_base_model_hash_is_covered_when_set() -> None:
    task = TaskSettings()
    pinned = _with(task, "training.base_model_hash", "ab" * 32)
    assert '"base_model_hash":"' + "ab" * 32 + '"' in pinned.canonical_json().decode()
    assert pinned.config_hash() != task.config_hash()
    with pytest.raises(ConfigMismatchError) as e:
        check_config(task, pinned.config_hash(), pinned.canonical_json())
    assert [d[0] for d in e.value.differences] == ["training.base_model_hash"]


def test_the_learning_rate_decays_per_round_down_to_its_floor() -> None:
    t = TrainingSettings(learning_rate=0.02, lr_decay=0.8, lr_min=0.1)
    rates = [t.for_round(r).learning_rate for r in range(1, 15)]
    assert rates[:3] == [0.02, 0.02 * 0.8, 0.02 * (0.8 * 0.8)]
    assert rates[10] == pytest.approx(0.02 * 0.8**10)  # 0.107 of the start: above the floor
    assert rates[11:] == [0.02 * 0.1] * 3  # 0.8^11 = 0.086: the floor
    assert t.for_round(10**12).learning_rate == 0.02 * 0.1
    assert t.for_round(0) == t.for_round(1) == t
    assert all(t.for_round(r).local_steps == t.local_steps for r in (1, 5, 50))
    assert TrainingSettings().for_round(9) == TrainingSettings()  # no decay: every round alike
    for changes, name in [
        ({"lr_decay": 0.0}, "lr_decay"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"lr_decay": 0.9, "lr_min": 1.5}, "lr_min"),
        ({"lr_decay": 0.9}, "lr_min"),  # a decay without a floor would end training
    ]:
        with pytest.raises(SettingsError) as e:
            TrainingSettings(**changes)  # type: ignore[arg-type]
        assert e.value.name == name


def test_the_schedule_is_covered_when_used_and_absent_otherwise() -> None:
    plain = TaskSettings()
    assert b"lr_decay" not in plain.canonical_json() and b"lr_min" not in plain.canonical_json()
    mlp = TaskSettings.for_task("digits-mlp")
    raw = mlp.canonical_json()
    assert b'"lr_decay":0.8' in raw and b'"lr_min":0.1' in raw
    assert TaskSettings.from_canonical_json(raw) == mlp
    assert TaskSettings.from_canonical_json(plain.canonical_json()) == plain
    assert b'"outer_lr":0.5' in raw and b"outer_lr" not in plain.canonical_json()
    for name in ("training.lr_decay", "training.lr_min", "aggregation.outer_lr"):
        node = _with(mlp, name, _changed(flat_settings(mlp)[name]))
        assert node.config_hash() != mlp.config_hash()
        with pytest.raises(ConfigMismatchError) as e:
            check_config(node, mlp.config_hash(), raw)
        assert [d[0] for d in e.value.differences] == [name]


def test_check_config_accepts_matching_settings_and_explains_mismatches() -> None:
    task = TaskSettings(aggregation=AggregationSettings(rule="median"))
    check_config(task, task.config_hash())
    check_config(task, task.config_hash(), task.canonical_json())
    node = TaskSettings(
        training=TrainingSettings(learning_rate=0.5, local_epochs=9),
        aggregation=AggregationSettings(rule="median"),
    )
    with pytest.raises(ConfigMismatchError, match="published settings JSON") as e:
        check_config(node, task.config_hash())
    assert e.value.differences == [] and e.value.exit_code == 2
    with pytest.raises(ConfigMismatchError) as e:
        check_config(node, task.config_hash(), task.canonical_json().decode())
    assert e.value.differences == [
        ("training.learning_rate", task.training.learning_rate, 0.5),
        ("training.local_epochs", task.training.local_epochs, 9),
    ]
    assert "training.learning_rate: task 0.02, node 0.5" in str(e.value)
    with pytest.raises(ConfigMismatchError, match="do not hash to"):
        check_config(node, task.config_hash(), node.canonical_json())


def test_published_settings_must_be_canonical_and_known() -> None:
    raw = TaskSettings().canonical_json()
    obj = json.loads(raw)
    with pytest.raises(SettingsError, match="canonical form"):
        TaskSettings.from_canonical_json(json.dumps(obj, sort_keys=True, indent=1))
    for mutate, name in [
        (lambda o: o["training"].update(bogus=1), "training.bogus"),
        (lambda o: o["aggregation"].update(rule="mean"), "aggregation.rule"),
        (lambda o: o["training"].update(batch_size=0), "training.batch_size"),
        (lambda o: o["training"].update(local_epochs=2.0), "training.local_epochs"),
        (lambda o: o.update(version=2), "version"),
        (lambda o: o.update(extra={}), "extra"),
    ]:
        bad = json.loads(raw)
        mutate(bad)
        with pytest.raises(SettingsError) as e:
            TaskSettings.from_canonical_json(json.dumps(bad, sort_keys=True, separators=(",", ":")))
        assert e.value.name == name
    for junk in (b"", b"[]", b"{", b'{"training":NaN}', b"\xff"):
        with pytest.raises(SettingsError):
            TaskSettings.from_canonical_json(junk)


def test_left_out_settings_take_the_tasks_defaults() -> None:
    # the flag threshold too: `task create` and `cluster up` build settings this way;
    # the dataclasses' defaults are digits-mlp's but for its learning-rate schedule
    mlp = TaskSettings(
        training=TrainingSettings(lr_decay=0.8, lr_min=0.1),
        aggregation=AggregationSettings(outer_lr=0.5, norm_ceiling=2.0),
    )
    assert TaskSettings.from_dict({}) == mlp == TaskSettings.for_task("digits-mlp")
    assert TaskSettings.from_dict({"training": {"learning_rate": 0.5}}).flag_threshold_ppm == (
        TaskSettings().flag_threshold_ppm
    )
    for name, cls in BUILTIN_TASKS.items():
        own = cls.settings_defaults
        s = TaskSettings.for_task(name)
        for key, value in own.get("training", {}).items():
            assert getattr(s.training, key) == value, (name, key)
        for key, value in own.get("aggregation", {}).items():
            assert getattr(s.aggregation, key) == value, (name, key)
        if "flag_threshold_ppm" in own:
            assert s.flag_threshold_ppm == own["flag_threshold_ppm"]
        # what the creator gives wins over the task's defaults
        given = TaskSettings.from_dict({"training": {"task": name}, "flag_threshold_ppm": -1})
        assert given.flag_threshold_ppm == -1
    assert TaskSettings.for_task("my_tasks:TASK").training == TrainingSettings(task="my_tasks:TASK")


def test_lm_lora_settings_carry_its_own_flag_threshold() -> None:
    # its score is minus the validation loss: digits-mlp's accuracy-based threshold
    # does not apply, and cluster up's settings (the tester training) keep lm-lora's
    own = LMLoRA.settings_defaults["flag_threshold_ppm"]
    assert own != DEFAULT_FLAG_THRESHOLD_PPM
    training = {"task": "lm-lora", **LMLoRA.tester_training, "base_model_hash": "ab" * 32}
    s = TaskSettings.from_dict({"training": training})
    assert s.flag_threshold_ppm == own == TaskSettings.for_task("lm-lora").flag_threshold_ppm
    assert json.loads(s.canonical_json())["flag_threshold_ppm"] == own
    assert TaskSettings.from_canonical_json(s.canonical_json()) == s
