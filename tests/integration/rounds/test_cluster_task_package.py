"""A third-party task package in a live cluster (docs/protocol.md, "Task packages").

The docs/tasks.md example package runs through the same path a participant's
takes: ``cluster up --task-package`` pins its hash in the task settings (so in
configHash); node-0 and node-1 are given the directory in ``[task] package``,
node-2 is not and fetches the archive by hash from the other two at start.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flocknode.cluster.commands import cluster_summary
from flocknode.cluster.launcher import ClusterSpec
from flocknode.commands.doctor import Doctor
from flocknode.config import ENV_PRIVATE_KEY
from flocknode.learning.package import build_package
from flocknode.learning.settings import TaskSettings
from tests.integration.rounds.harness import cluster

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "tasks" / "example_task"


@pytest.fixture
def no_example_module() -> Iterator[None]:
    """The launcher imports the package from its checked copy: no other copy may be loaded."""

    def drop() -> None:
        for name in [m for m in sys.modules if m.split(".")[0] == "example_task"]:
            del sys.modules[name]

    saved = list(sys.path)
    drop()
    yield
    drop()
    sys.path[:] = saved


@pytest.mark.usefixtures("no_example_module")
def test_example_package_runs_and_a_node_without_it_fetches_it_by_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ClusterSpec(
        nodes=3,
        rounds=1,
        task="example_task:TASK",
        task_package=str(EXAMPLE),
        settings_overrides=(("training", "optimizer", "sgd"), ("training", "learning_rate", 0.5)),
        isolation="namespace",  # the package's code runs in each node's jailed task worker
    )
    ref = build_package(EXAMPLE).ref
    with cluster(tmp_path / "c", spec) as h:
        settings = TaskSettings.from_canonical_json(Path(h.state.settings_file).read_bytes())
        assert settings.training.task_package == ref
        assert h.client.params().config_hash == settings.config_hash()  # the hash is on chain
        v1 = h.wait_finalized(1, timeout=150)
        names = [n.name for n in h.state.nodes]
        h.wait_all_hold(v1.global_model_hash_after, names)
        log = (Path(h.state.node("node-2").data_dir) / "node.log").read_text()
        fetched = re.search(rf"task package {ref}: (\d+) bytes from (\S+)", log)
        assert fetched, h.tails()
        assert int(fetched.group(1)) == len(build_package(EXAMPLE).archive)
        for name in names:  # every node imported the task from its checked copy
            unpacked = Path(h.state.node(name).data_dir) / "packages" / ref.removeprefix("sha256:")
            assert (unpacked / "example_task" / "task.py").read_bytes() == (
                EXAMPLE / "task.py"
            ).read_bytes()
        # the launcher's monitor evaluates the round's model with the same checked code
        assert 0.0 <= h.accuracy(v1.global_model_hash_after) <= 1.0
        summary = cluster_summary(h.state, h.monitor, finished=True)  # cluster up --json
        assert (summary["task"], summary["task_package"]) == ("example_task:TASK", ref)

        # doctor on a data dir without the package fetches it from the members
        node2 = h.state.node("node-2")
        fresh = tmp_path / "fresh-node-2"
        shutil.copytree(node2.data_dir, fresh, ignore=shutil.ignore_patterns("packages", "store"))
        monkeypatch.setenv(ENV_PRIVATE_KEY, node2.key)
        config = fresh / "node.toml"
        config.write_text(config.read_text().replace(node2.data_dir, str(fresh)))
        (data,) = [c for c in Doctor(config, peer_timeout=30).run() if c.name == "data"]
        assert data.status == "PASS" and f"task package {ref} checked" in data.detail, data
        assert (fresh / "packages" / ref.removeprefix("sha256:")).is_dir()
