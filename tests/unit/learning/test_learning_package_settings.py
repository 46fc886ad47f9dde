"""The task package in the settings, in task create, and at a node's start (no network)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from flocknode.aggregation import SettingsError
from flocknode.commands.task_create import creator_package, with_package
from flocknode.config import load_config
from flocknode.datadir import DataDir
from flocknode.errors import ConfigError
from flocknode.learning import (
    ConfigMismatchError,
    Learner,
    TaskSettings,
    TrainingSettings,
    check_config,
    write_shards,
)
from flocknode.learning.factory import PluginError
from flocknode.learning.learner import task_initial_state
from flocknode.learning.models import load_task
from flocknode.learning.package import PackageCache, PackageError, build_package
from flocknode.node import node_learner
from flocknode.packages import PackageUnavailable, resolve_task_package

RINGS = TrainingSettings(task="example_task:TASK", optimizer="sgd", learning_rate=0.5)

pytestmark = pytest.mark.usefixtures("fresh_modules")  # every test here may import example_task


def pinned(pkg: Path) -> TaskSettings:
    return with_package(TaskSettings(training=RINGS), build_package(pkg))


def test_settings_without_a_package_keep_their_canonical_bytes() -> None:
    s = TaskSettings(training=RINGS)
    raw = s.canonical_json()
    assert b"task_package" not in raw  # the field appears only when set
    old = json.loads(raw)  # settings published before the field existed
    assert TaskSettings.from_canonical_json(json.dumps(old, sort_keys=True, separators=(",", ":")))
    assert TaskSettings.from_dict(old).config_hash() == s.config_hash()


def test_settings_with_a_package_round_trip_and_hash_it(pkg: Path) -> None:
    s = pinned(pkg)
    ref = build_package(pkg).ref
    assert s.training.task_package == ref
    raw = s.canonical_json()
    assert f'"task_package":"{ref}"'.encode() in raw
    assert TaskSettings.from_canonical_json(raw) == s
    assert s.config_hash() != TaskSettings(training=RINGS).config_hash()
    other = dataclasses.replace(s.training, task_package="sha256:" + "0" * 64)
    with pytest.raises(ConfigMismatchError, match=r"training\.task_package: task 'sha256:"):
        check_config(TaskSettings(training=other), s.config_hash(), raw)
    with pytest.raises(ConfigMismatchError, match=r"task_package: task 'sha256:.*node ''"):
        check_config(TaskSettings(training=RINGS), s.config_hash(), raw)


@pytest.mark.parametrize("bad", ["abc", "sha256:" + "0" * 63, "SHA256:" + "0" * 64, 5])
def test_a_malformed_package_hash_is_refused_by_name(bad: object) -> None:
    with pytest.raises(SettingsError, match=r"training\.task_package"):
        TaskSettings.from_dict({"training": {"task": "m:T", "task_package": bad}})


def test_creator_package_takes_a_path_a_name_or_builtin(
    pkg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert creator_package("builtin") is None
    p = creator_package(str(pkg))
    assert p is not None and p.ref == build_package(pkg).ref
    monkeypatch.syspath_prepend(str(pkg.parent))
    by_name = creator_package("example_task")  # an importable package, found without importing
    assert by_name is not None and by_name.ref == p.ref
    assert "example_task" not in sys.modules
    with pytest.raises(PackageError, match="'no_such_thing_here': no such file or directory"):
        creator_package("no_such_thing_here")
    with pytest.raises(PackageError, match="--task-package: task 'digits-mlp' is built in"):
        with_package(TaskSettings(), p)


def node_cfg(tmp_path: Path, data: Path, package: str = "") -> Path:
    cfg = tmp_path / "node" / "node.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    text = f"data_dir = '.'\n[data]\npath = '{data}'\n"
    if package:
        text += f"[task]\npackage = '{package}'\n"
    cfg.write_text(text)
    return cfg


def test_a_node_with_the_package_file_checks_it_caches_it_and_runs_it(
    tmp_path: Path, pkg: Path
) -> None:
    s = pinned(pkg)
    data = tmp_path / "data"
    cfg = load_config(node_cfg(tmp_path, data / "node-0", str(pkg)), environ={})
    layout = DataDir(cfg.data_path)
    d = resolve_task_package(cfg, s, layout)
    assert d == PackageCache(layout.packages).dir_path(build_package(pkg).digest)
    shards = write_shards(load_task("example_task:TASK", d), data, 2, "iid", 0.5, seed=0)
    learner = node_learner(cfg, s, d)
    assert learner.package_dir == d  # what a worker process imports the task from
    # what the worker runs to build the initial model
    assert sorted(task_initial_state(s.training, package_dir=d)) == ["head.bias", "head.weight"]
    assert Path(sys.modules["example_task"].__file__ or "").is_relative_to(d)
    # next start: no [task] package needed, the cache has it (re-checked)
    cfg2 = load_config(node_cfg(tmp_path, shards.nodes[0]), environ={})
    assert resolve_task_package(cfg2, s, layout) == d


def test_a_package_file_with_another_hash_is_one_line_naming_it(tmp_path: Path, pkg: Path) -> None:
    s = pinned(pkg)
    (pkg / "task.py").write_text((pkg / "task.py").read_text() + "# edited\n")
    cfg_file = node_cfg(tmp_path, tmp_path, str(pkg))
    with pytest.raises(ConfigError) as e:
        resolve_task_package(load_config(cfg_file, environ={}), s, DataDir(tmp_path / "node"))
    msg = str(e.value)
    assert msg.startswith(f"{cfg_file}: task.package: {pkg} hashes to sha256:")
    assert msg.endswith(f"the task's package is {s.training.task_package}")
    assert e.value.exit_code == 2 and "\n" not in msg
    (pkg / "task.py").unlink()
    (pkg / "task.py").symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match=r"task\.package: .*task\.py: a symlink that leaves"):
        resolve_task_package(load_config(cfg_file, environ={}), s, DataDir(tmp_path / "node"))


def test_without_the_file_or_the_cache_or_members_the_node_says_what_to_do(
    tmp_path: Path, pkg: Path
) -> None:
    s = pinned(pkg)
    cfg = load_config(node_cfg(tmp_path, tmp_path), environ={})
    with pytest.raises(PackageUnavailable, match=r"is not in .*packages yet: the node fetches it"):
        resolve_task_package(cfg, s, DataDir(cfg.data_path))
    with pytest.raises(ConfigError, match="the task's settings name no task package"):
        cfg2 = load_config(node_cfg(tmp_path, tmp_path, str(pkg)), environ={})
        resolve_task_package(cfg2, TaskSettings(training=RINGS), DataDir(cfg.data_path))


def test_pinned_settings_never_import_from_sys_path(
    tmp_path: Path, pkg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(pkg.parent))
    with pytest.raises(PluginError, match="is pinned to package sha256:"):
        Learner.from_settings(pinned(pkg).training, tmp_path)
    assert "example_task" not in sys.modules
