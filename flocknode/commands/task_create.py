"""``flocknode task create``: deploy a token (or reuse one) and a FlockTask.

The task's training and aggregation settings are written once in canonical
form; its SHA-256 is the task's ``configHash``. A task whose code is not built
in names a task package (``--task-package``): its hash goes into the settings
(``training.task_package``), so into ``configHash``, and its archive into the
creator's package cache, from which the creator's node serves it to members
(docs/protocol.md, "Task packages"). The initial model comes from the
model factory and the init seed; its hash is the task's initial model hash.
On a local chain the command can also mint tokens and send gas money to given
wallets, and fill the reward pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.deploy import deploy_task, deploy_token
from flocknode.chain.token import TokenClient
from flocknode.chain.types import TaskParams
from flocknode.commands.common import format_amount, progress, report_tx
from flocknode.config import LOCAL_CHAIN_ID
from flocknode.errors import ConfigError
from flocknode.fsutil import atomic_write_bytes
from flocknode.learning.learner import task_initial_state
from flocknode.learning.models import model_hash
from flocknode.learning.package import BUILTIN, Package, PackageCache, PackageError, build_package
from flocknode.learning.settings import SettingsError, TaskSettings


def model_spec_hash(factory_spec: str, state: dict[str, Any]) -> bytes:
    """SHA-256 of the model's identity: the task's name and tensor names, shapes, dtypes."""
    spec = {
        "factory": factory_spec,
        "tensors": [
            [name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in state.items()
        ],
    }
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).digest()


@dataclass(frozen=True)
class Funding:
    wallet: str
    tokens: int
    wei: int


@dataclass(frozen=True)
class TaskPlan:
    """Everything ``create_task`` needs besides the deployer's connection."""

    params: dict[str, int]  # TaskParams fields other than token and the three hashes
    settings: TaskSettings
    token: str | None = None
    fund: Sequence[Funding] = ()
    reward_pool: int = 0
    settings_out: Path | None = None
    base_model: Path | None = None  # the task's base model directory (lm-lora)
    package: Package | None = None  # the task's code (its hash must be in settings)
    package_cache: Path | None = None  # where the creator keeps it (else a temp dir)


@dataclass(frozen=True)
class CreatedTask:
    chain_id: int
    rpc_url: str
    token: str
    task: str
    config_hash: bytes
    initial_model_hash: bytes
    model_spec_hash: bytes
    settings_json: bytes
    funded: list[str] = field(default_factory=list)
    package_files: int = 0
    package_bytes: int = 0
    package_dir: Path | None = None  # the creator's unpacked copy

    @property
    def task_package(self) -> str:
        return str(json.loads(self.settings_json)["training"].get("task_package", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "task_package": self.task_package,
            "package_files": self.package_files,
            "package_bytes": self.package_bytes,
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "token": self.token,
            "task": self.task,
            "config_hash": "0x" + self.config_hash.hex(),
            "initial_model_hash": "0x" + self.initial_model_hash.hex(),
            "model_spec_hash": "0x" + self.model_spec_hash.hex(),
            "settings": json.loads(self.settings_json),
            "funded": self.funded,
        }


def create_task(conn: ChainConnection, plan: TaskPlan) -> CreatedTask:
    chain_id = conn.chain_id
    if (plan.fund or (plan.reward_pool and not plan.token)) and chain_id != LOCAL_CHAIN_ID:
        raise ConfigError(
            "--fund", "", f"minting and funding wallets is for local chains only (chain {chain_id})"
        )
    tspec = plan.settings.training.task
    with contextlib.ExitStack() as scratch:
        package_dir = _creator_copy(plan, scratch)
        state = task_initial_state(
            plan.settings.training, base_model=plan.base_model, package_dir=package_dir
        )
    if plan.package_cache is None:
        package_dir = None  # the scratch copy is gone
    init_hash = model_hash(state)
    spec_hash = model_spec_hash(tspec, state)
    settings_json = plan.settings.canonical_json()

    if plan.token:
        token = TokenClient(conn, plan.token)
        conn.require_code("FlockToken", token.address)
    else:
        progress("deploying FlockToken ...")
        token = deploy_token(conn)
        progress(f"  token at {token.address}")
    params = TaskParams(
        token=token.address,
        model_spec_hash=spec_hash,
        config_hash=plan.settings.config_hash(),
        initial_model_hash=init_hash,
        **plan.params,
    )
    progress("deploying FlockTask ...")
    task = deploy_task(conn, params)
    progress(f"  task at {task.address}")
    report_tx("publishSettings", task.publish_settings(settings_json))

    funded: list[str] = []
    for f in plan.fund:
        progress(f"funding {f.wallet}: {format_amount(f.tokens)} tokens, {f.wei / 1e18:g} ETH")
        token.mint(f.wallet, f.tokens)
        if f.wei:
            conn.send_eth(f.wallet, f.wei)
        funded.append(f.wallet)
    if plan.reward_pool:
        _fill_pool(task, token, plan.reward_pool, mint=not plan.token)
    if plan.settings_out is not None:
        atomic_write_bytes(plan.settings_out, settings_json)
        progress(f"task settings written to {plan.settings_out}")
    return CreatedTask(
        chain_id=chain_id,
        rpc_url=conn.url,
        token=token.address,
        task=task.address,
        config_hash=params.config_hash,
        initial_model_hash=init_hash,
        model_spec_hash=spec_hash,
        settings_json=settings_json,
        funded=funded,
        package_files=len(plan.package.files) if plan.package else 0,
        package_bytes=len(plan.package.archive) if plan.package else 0,
        package_dir=package_dir,
    )


def _creator_copy(plan: TaskPlan, scratch: contextlib.ExitStack) -> Path | None:
    """The checked tree of the plan's package: in ``package_cache``, else a scratch dir."""
    pinned = plan.settings.training.task_package
    if plan.package is None:
        if pinned:
            raise PackageError(
                f"the settings name task package {pinned}: give it (--task-package PATH)"
            )
        if ":" in plan.settings.training.task:
            progress(
                f"warning: task {plan.settings.training.task!r} is not pinned to a package: "
                "each node runs whatever it has installed under that name (--task-package)"
            )
        return None
    if plan.package.ref != pinned:
        raise PackageError(
            f"the settings name task package {pinned!r}, the package given is {plan.package.ref}"
        )
    if plan.package_cache is not None:
        root = plan.package_cache
        progress(f"task package {plan.package.ref} kept in {root}")
    else:
        root = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="flocknode-pkg-")))
    return PackageCache(root).install(plan.package.archive)


def creator_package(spec: str) -> Package | None:
    """``--task-package``: ``builtin`` (None), a path, or an importable package's name."""
    if spec == BUILTIN:
        return None
    path = Path(spec)
    if path.exists():
        return build_package(path)
    found = None
    if spec.replace(".", "").replace("_", "").isalnum():
        try:
            found = importlib.util.find_spec(spec)
        except (ImportError, ValueError):
            found = None
    if found is not None and found.submodule_search_locations:
        return build_package(Path(next(iter(found.submodule_search_locations))))
    if found is not None and found.origin and found.origin.endswith(".py"):
        return build_package(Path(found.origin))
    raise PackageError(
        f"--task-package {spec!r}: no such file or directory, and no importable package "
        f"of that name (or '{BUILTIN}' for a built-in task)"
    )


def with_package(settings: TaskSettings, package: Package | None) -> TaskSettings:
    """``settings`` with ``training.task_package`` set to the package's hash (or '')."""
    try:
        training = dataclasses.replace(
            settings.training, task_package=package.ref if package else ""
        )
    except SettingsError as e:
        raise PackageError(f"--task-package: {e.message}") from None
    return dataclasses.replace(settings, training=training)


def _fill_pool(task: TaskClient, token: TokenClient, amount: int, mint: bool) -> None:
    progress(f"filling the reward pool with {format_amount(amount)} tokens ...")
    if mint:
        token.mint(task.wallet, amount)
    report_tx("fundRewards", task.fund_rewards(amount))
