"""FlockNode: the daemon. Checks everything it can before it starts, then runs the
services in dependency order (p2p host, gossip, content server, the round
services of ``flocknode.rounds.engine``, stake sampler, HTTP endpoint) and stops
them in reverse on SIGTERM/SIGINT.

Start-up refuses, with one line naming the cause, a node whose task settings or
initial model differ from the task's, or whose wallet is not registered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from eth_account.signers.local import LocalAccount

from flocknode import malloc
from flocknode.chain.client import AsyncTaskClient, TaskClient
from flocknode.chain.errors import ChainError, ContractRevert
from flocknode.chain.registry import multiaddr_text
from flocknode.config import ENV_PRIVATE_KEY, NodeConfig
from flocknode.connect import connect
from flocknode.crypto.canonical import MAGIC as MODEL_MAGIC
from flocknode.errors import ConfigError, FlockError
from flocknode.fsutil import atomic_write_text
from flocknode.http.app import build_app
from flocknode.http.history import StakeHistory
from flocknode.http.server import HttpService
from flocknode.identity import (
    BoxKey,
    DataDir,
    PeerKey,
    load_or_create_box_key,
    load_or_create_peer_key,
)
from flocknode.identity.wallet import load_wallet, read_password
from flocknode.learning.learner import DataSizes, Learner, RoundLearner
from flocknode.learning.models import State
from flocknode.learning.package import PackageCache
from flocknode.learning.settings import TaskSettings, check_config
from flocknode.logs import PeerLog, redact, redact_bytes
from flocknode.p2p.content import PrefixedSource, SealedBlobs
from flocknode.p2p.gossip import TaskGossip, task_topic
from flocknode.p2p.host import HostConfig, P2PHost
from flocknode.p2p.messages import Message
from flocknode.p2p.metrics import P2PMetrics
from flocknode.p2p.serve import ContentServer
from flocknode.packages import FirstOf, resolve_task_package
from flocknode.rounds.byzantine import Behaviour, behaviour_from_env, strategy_for
from flocknode.rounds.context import RoleDeps
from flocknode.rounds.engine import RoundServices
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import MAX_MODEL_BYTES, ModelBook
from flocknode.rounds.snapshot import ChainFeed
from flocknode.rounds.windows import STATUS_ROLES_SHOWN
from flocknode.status import (
    NO_PHASE,
    ChainStatus,
    ModelStatus,
    NodeStatus,
    P2PStatus,
    RoleRecord,
    RoundStatus,
    Timings,
)
from flocknode.store import ContentStore, Journal
from flocknode.store.residual import ResidualStore
from flocknode.store.retention import StorePruner
from flocknode.store.spill import SpillDir
from flocknode.worker.devices import DeviceUnavailable, resolve_device
from flocknode.worker.learner import IsolatedLearner
from flocknode.worker.protocol import Reason, WorkerFailure
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec, probe, task_import_path

log = logging.getLogger(__name__)
_limited = PeerLog(log)  # lines that could repeat every tick

STOP_TIMEOUT = 8.0  # SIGTERM to exit, within systemd's TimeoutStopSec
GOSSIP_PUBLISHED = "gossip_published"  # P2PMetrics event: messages this node published
STATUS_WRITE_SECONDS = 1.0  # status.json is rewritten this often


class StartupError(FlockError):
    exit_code = 2


@dataclass
class Prepared:
    """Everything checked and loaded before any service starts."""

    cfg: NodeConfig
    layout: DataDir
    account: LocalAccount
    client: TaskClient
    settings: TaskSettings
    learner: RoundLearner
    store: ContentStore
    journal: Journal
    models: ModelBook
    behaviour: Behaviour
    metrics: RoundMetrics


def load_task_settings(cfg: NodeConfig, client: TaskClient, config_hash: bytes) -> TaskSettings:
    """The task's settings, checked against the on-chain configHash.

    With ``task.settings`` set, that file is the node's settings and a mismatch
    names the differing setting (using the copy published on chain); without it
    the published copy is used.
    """
    published = client.published_settings()
    if cfg.task.settings:
        path = cfg.path(cfg.task.settings)
        try:
            raw = path.read_bytes()
        except OSError as e:
            msg = f"cannot read {path}: {e.strerror}"
            raise ConfigError(cfg.source, "task.settings", msg) from None
        try:
            local = TaskSettings.from_canonical_json(raw.strip())
        except Exception as e:
            raise ConfigError(str(path), "task.settings", str(e)) from None
        check_config(local, config_hash, published)
        return local
    if published is None:
        raise ConfigError(
            cfg.source,
            "task.settings",
            "the task has no settings published on chain; set the path of its settings JSON",
        )
    return TaskSettings.from_canonical_json(published)


def node_learner(
    cfg: NodeConfig,
    settings: TaskSettings,
    package_dir: Path | None = None,
    on_failure: Callable[[Reason], None] | None = None,
    phase_seconds: tuple[float, float] | None = None,
) -> RoundLearner:
    """The task's code over this participant's files (``[data] path``; ``test_path``
    for testers' reports), where ``[compute] isolation`` says (docs/protocol.md,
    "Task worker"). A missing path, a device or an isolation this machine lacks is
    one line and exit code 2 here; bad data is too: here with ``isolation = "none"``,
    else when the worker first reads it (``IsolatedLearner.load``, at node start).

    ``package_dir``: the task package's checked tree (``resolve_task_package``);
    without it a package is looked for in ``[task] package`` and the cache only.
    ``phase_seconds``: the task's train and commit phase lengths, which bound a call.
    """
    if not cfg.data.path:
        raise ConfigError(cfg.source, "data.path", "not set: give the path of your data files")
    if package_dir is None:
        package_dir = resolve_task_package(cfg, settings, DataDir(cfg.data_path))
    c = cfg.compute
    try:
        device = resolve_device(c.device)
    except DeviceUnavailable as e:
        raise ConfigError(cfg.source, "compute.device", str(e)) from None
    data = cfg.path(cfg.data.path)
    test = cfg.path(cfg.data.test_path) if cfg.data.test_path else None
    base = cfg.path(cfg.task.base_model) if cfg.task.base_model else None
    if c.isolation == "none":
        return Learner.from_settings(
            settings.training,
            data,
            test,
            device,
            base_model=base,
            package_dir=package_dir,
            state_dir=DataDir(cfg.data_path).optim,
        )
    if c.isolation == "namespace":
        try:
            probe()
        except IsolationUnavailable as e:
            raise ConfigError(
                cfg.source,
                "compute.isolation",
                f"namespace isolation is unavailable here: {e}; "
                'set isolation = "process" to run task code without namespaces',
            ) from None
    read_only = [str(cfg.path(p)) for p in c.read_only]
    read_only += [str(p) for p in (data, test, base, package_dir) if p is not None]
    spec = WorkerSpec(
        isolation=c.isolation,
        base=str(cfg.data_path / "worker"),
        read_only=tuple(read_only),
        python_path=() if package_dir else task_import_path(settings.training.task),
        memory_bytes=c.memory_mb << 20,
        threads=c.threads,
        device=device,
    )
    return IsolatedLearner.from_settings(
        settings.training,
        str(data),
        None if test is None else str(test),
        spec,
        timeout=c.timeout_seconds,
        phase_seconds=phase_seconds,
        on_failure=on_failure,
        base_model=base,
        package_dir=package_dir,
    )


def node_data_sizes(
    cfg: NodeConfig, settings: TaskSettings, package_dir: Path | None = None
) -> DataSizes:
    """Read the participant's data where the node would (``doctor``); ``DataError`` etc."""
    learner = node_learner(cfg, settings, package_dir)
    if isinstance(learner, Learner):
        return learner.sizes
    assert isinstance(learner, IsolatedLearner)
    try:
        return trio.run(learner.load)
    finally:
        learner.close()


def prepare(cfg: NodeConfig) -> Prepared:
    """Blocking start-up checks; every failure is one clear line."""
    layout = DataDir(cfg.data_path)
    layout.create()
    account = load_wallet(cfg)
    metrics = RoundMetrics()
    client = connect(cfg, account, tx_stats=metrics.tx)
    params = client.params()
    settings = load_task_settings(cfg, client, params.config_hash)
    behaviour = behaviour_from_env(cfg)
    package_dir = resolve_task_package(cfg, settings, layout, client)
    learner = node_learner(
        cfg,
        settings,
        package_dir,
        lambda reason: metrics.inc("worker_failures", reason),
        (params.train_seconds, params.commit_seconds),
    )
    store = ContentStore(layout.store)
    models = ModelBook(store, None)
    if isinstance(learner, Learner):  # isolation "none": task code runs in the daemon
        check_initial_model(models, learner.initial_state(), settings, params.initial_model_hash)
    try:
        client.participant(account.address)
    except ContractRevert as e:
        if e.name == "NotRegistered":
            raise StartupError(
                f"wallet {account.address} is not registered in task {client.address}; "
                f"run: flocknode register -c {cfg.source}"
            ) from None
        raise
    return Prepared(
        cfg,
        layout,
        account,
        client,
        settings,
        learner,
        store,
        Journal(layout.journal),
        models,
        behaviour,
        metrics,
    )


def check_initial_model(
    models: ModelBook, init: State, settings: TaskSettings, want: bytes
) -> None:
    """Store the task's initial model (hashing it once) and check that its hash
    is the task's on-chain one."""
    try:
        got = models.put(init)
    except (TypeError, ValueError) as e:  # names or dtypes no model can have
        raise StartupError(f"the task's initial model is not a model state: {e}") from None
    if got != want:
        raise StartupError(
            f"the task {settings.training.task!r} with init seed "
            f"{settings.training.init_seed} gives initial model 0x{got.hex()[:16]}..., "
            f"the task's is 0x{want.hex()[:16]}..."
        )


def redact_key_material(cfg: NodeConfig, account: LocalAccount, *keys: PeerKey | BoxKey) -> None:
    """Mask the wallet key, its password and the node's keys in every log line."""
    redact_bytes(bytes(account.key))
    raw = os.environ.get(ENV_PRIVATE_KEY, "").strip()
    if raw:
        redact(raw)
        redact(raw.removeprefix("0x"))
    else:
        with contextlib.suppress(FlockError):
            redact(read_password(cfg))
    for key in keys:
        redact_bytes(key.seed() if isinstance(key, PeerKey) else key.secret())


class CountingGossip(TaskGossip):
    """TaskGossip that counts what this node publishes (gossip out), by message type."""

    def __init__(self, p2p: P2PHost, topic: str, metrics: P2PMetrics) -> None:
        super().__init__(p2p, topic)
        self._metrics = metrics

    async def publish(self, message: Message) -> None:
        await super().publish(message)
        self._metrics.inc(GOSSIP_PUBLISHED, type(message).__name__)


class FlockNode:
    def __init__(self, prep: Prepared, poll: float = 0.1) -> None:
        self.prep = prep
        cfg = prep.cfg
        self.peer_key = load_or_create_peer_key(prep.layout.peer_key)
        self.box_key = load_or_create_box_key(prep.layout.box_key)
        redact_key_material(cfg, prep.account, self.peer_key, self.box_key)
        self.membership = ChainMembership()
        self.p2p_metrics = P2PMetrics()
        self.p2p = P2PHost(
            self.peer_key,
            self.membership,
            HostConfig(
                listen_addrs=tuple(cfg.p2p.listen),
                announce_addrs=tuple(cfg.p2p.announce),
                bootstrap=tuple(cfg.p2p.bootstrap),
            ),
            self.p2p_metrics,
        )
        prep.models.p2p = self.p2p
        self.client = AsyncTaskClient(prep.client)
        topic = task_topic(cfg.chain.chain_id, prep.client.address)
        self.gossip = CountingGossip(self.p2p, topic, self.p2p_metrics)
        self.server = ContentServer(
            self.p2p,
            SealedBlobs(prep.store, lambda cid, r: prep.journal.get(r).blob_id == cid.hex()),
            FirstOf(PrefixedSource(prep.store, MODEL_MAGIC), PackageCache(prep.layout.packages)),
        )
        self.metrics = prep.metrics
        params = prep.client.params()
        self.wallet = prep.account.address
        self.feed = ChainFeed()
        self.deps = RoleDeps(
            feed=self.feed,
            client=self.client,
            params=params,
            settings=prep.settings,
            learner=prep.learner,
            p2p=self.p2p,
            gossip=self.gossip,
            store=prep.store,
            models=prep.models,
            journal=prep.journal,
            inbox=Inbox(self.box_key.public_bytes, params.proposers_per_round),
            membership=self.membership,
            box_key=self.box_key,
            wallet=self.wallet,
            behaviour=strategy_for(prep.behaviour),
            metrics=self.metrics,
            # per task: a residual belongs to the task whose updates it came from
            residuals=ResidualStore(prep.layout.residual / prep.client.address.lower()),
            spill=SpillDir(prep.layout.spill),
        )
        pruner = (
            StorePruner(prep.store, prep.journal, cfg.store.keep_rounds)
            if cfg.store.keep_rounds
            else None
        )
        self.rounds = RoundServices(self.deps, pruner, poll=poll)
        self.stake = StakeHistory(self.client, self.wallet, lambda: self.feed.current)
        self.http = (
            HttpService(build_app(self.status), cfg.http.listen) if cfg.http.enabled else None
        )
        self.http_urls: list[str] = []
        self.started_at = time.time()
        self.stop_signal_at: float | None = None  # monotonic time SIGTERM/SIGINT arrived

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.prep.cfg
        if self.prep.behaviour is not Behaviour.HONEST:
            log.warning("BYZANTINE TEST NODE behaviour=%s", self.prep.behaviour.value)
        await self._read_registry()
        worker_ready = trio.Event()
        async with trio.open_nursery() as nursery:
            if isinstance(self.prep.learner, IsolatedLearner):
                nursery.start_soon(self._warm_up_worker, self.prep.learner, worker_ready)
            else:
                worker_ready.set()
            addrs = await nursery.start(self.p2p.run)
            await self._sync_registration([str(a) for a in self.p2p.host.get_transport_addrs()])
            self.server.install()
            await nursery.start(self.gossip.run)
            # Services that run no task code start now: a vote journaled before a
            # restart is committed and revealed while the worker warms up. The
            # others (the keeper that opens rounds among them) start once task
            # code can run; a role elected meanwhile waits for the worker.
            early = self.rounds.without_task_code
            for service in early:
                await nursery.start(service.run)
            await worker_ready.wait()
            for service in self.rounds.services:
                if service not in early:
                    await nursery.start(service.run)
            await nursery.start(self.stake.run)
            if self.http is not None:
                self.http_urls = await nursery.start(self.http.run)
            log.info(
                "node started wallet=%s peer=%s task=%s addrs=%s http=%s",
                self.wallet,
                self.p2p.peer_id,
                cfg.chain.task,
                [str(a) for a in addrs],
                self.http_urls,
            )
            task_status.started()
            nursery.start_soon(self._write_status_loop)
            nursery.start_soon(self._wait_for_signal, nursery)

    async def _warm_up_worker(self, learner: IsolatedLearner, ready: trio.Event) -> None:
        """Start the task worker, build the task's initial model and read the data
        in it while the node starts (p2p, registration); ``ready`` is set when it
        is done or failed.

        A worker that cannot build the initial model or warm up (one training
        step on the participant's data: out of memory, a crash, a timeout), an
        initial model other than the task's, bad data or a task that does not
        resolve (``DataError``/``PluginError``) stop the node with one line and
        exit code 2 (``run_node``): a node that cannot run the task must not take
        roles and be slashed for idling. Failures after the start are counted by
        the learner; the next role's call starts the worker again.
        """
        prep = self.prep
        try:
            try:
                init = await learner.initial_state_async(MAX_MODEL_BYTES)
            except WorkerFailure as e:
                raise StartupError(
                    f"the task worker could not build the task's initial model: {e}"
                ) from None
            await trio.to_thread.run_sync(
                check_initial_model,
                prep.models,
                init,
                prep.settings,
                prep.client.params().initial_model_hash,
            )
            try:
                sizes = await learner.warm_up_async()
            except WorkerFailure as e:
                raise StartupError(f"the task worker could not warm up on the data: {e}") from None
            log.info("task worker ready train=%d val=%d", sizes.train, sizes.val)
        finally:
            ready.set()

    async def _wait_for_signal(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.stop_signal_at = time.monotonic()
                log.info("stopping on %s", signal.Signals(signum).name)
                break
        await self.stop(nursery)

    async def stop(self, nursery: trio.Nursery) -> None:
        """Stop in reverse order of start; journal writes are atomic, so none is torn."""
        if self.http is not None:
            self.http.stop()
        self.stake.stop()
        for service in reversed(self.rounds.services):
            service.stop()
        self.gossip.stop()
        self.p2p.stop()
        with trio.move_on_after(STOP_TIMEOUT):
            await self.p2p.stopped.wait()
        self._write_status()
        if isinstance(self.prep.learner, IsolatedLearner):
            self.prep.learner.close()
        nursery.cancel_scope.cancel()

    async def _read_registry(self) -> None:
        """The first registry snapshot. The registry read drops bad registrations
        itself; a chain that cannot be read now is read again by the chain follower."""
        try:
            self.membership.update_registry(await self.client.registry())
        except ChainError as e:
            self.metrics.inc("chain_errors")
            log.warning("cannot read the registry at start, the chain follower retries: %s", e)

    async def _sync_registration(self, bound: list[str]) -> None:
        """Register the node's reachable addresses on chain when they changed.

        A failure here (chain unreachable, transaction refused) is logged and
        counted: the node still runs and can dial out; the next start retries.
        """
        cfg = self.prep.cfg
        try:
            me = await self.client.participant(self.wallet)
            want = cfg.announce_addrs(bound)
            old = [multiaddr_text(a) for a in me.multiaddrs]
            if old != want:
                log.info("registered addresses changed old=%s new=%s", old, want)
                await self.client.update_multiaddrs(want)
            eligible = await self.client.is_eligible(self.wallet)
        except ChainError as e:
            self.metrics.inc("chain_errors")
            log.warning("cannot check or update the registered addresses: %s", e)
            return
        if not eligible:
            log.warning(
                "wallet stake is below the task minimum; stake with: flocknode stake -c %s AMOUNT",
                cfg.source,
            )

    # -- status -------------------------------------------------------------
    def status(self) -> NodeStatus:
        """The node's one snapshot: status.json, /status.json, /metrics, /readyz, the page."""
        deps, chain, metrics = self.deps, self.feed.latest, self.metrics
        view = chain.view
        role = view.role_of(deps.wallet) if view else None
        return NodeStatus(
            wallet=deps.wallet,
            peer_id=str(self.p2p.peer_id),
            task=self.prep.client.address,
            uptime=time.time() - self.started_at,
            behaviour=self.prep.behaviour.value,
            http=tuple(self.http_urls),
            chain=ChainStatus(
                block=chain.block,
                age_seconds=self.feed.age(),
                error=self.rounds.last_error,
            ),
            round=RoundStatus(
                number=chain.current,
                total=deps.params.total_rounds,
                phase=view.phase.label if view else NO_PHASE,
                role=role[0] if role else None,
                seat=role[1] if role else None,
                complete=self.rounds.complete,
            ),
            model=ModelStatus(
                global_hash="0x" + chain.global_model_hash.hex(),
                held=self.rounds.ready,
                accuracy=dict(metrics.accuracy),
            ),
            p2p=P2PStatus(
                peers=tuple(str(p) for p in self.p2p.connected_peers()),
                members=len(self.membership.members()),
                events=self.p2p_metrics.snapshot(),
            ),
            stake=self.stake.snapshot(),
            roles=tuple(
                RoleRecord(r["round"], r["role"], r["seat"], r["at"])
                for r in metrics.roles[-STATUS_ROLES_SHOWN:]
            ),
            counters=dict(metrics.counters),
            counters_by_label=metrics.by_label(),
            registry_ignored=dict(self.membership.registry.ignored),
            timings=Timings.from_json(metrics.timings()),  # RoundMetrics keeps JSON form
        )

    async def _write_status_loop(self) -> None:
        while True:
            await trio.sleep(STATUS_WRITE_SECONDS)
            self._write_status()

    def _write_status(self) -> None:
        """Write status.json; never raises (it runs in the node's nursery)."""
        try:
            atomic_write_text(self.status_path, json.dumps(self.status().to_json()))
        except OSError as e:
            log.warning("cannot write status file: %s", e)
        except Exception as e:
            self.metrics.inc("status_errors")
            _limited.warning("status_error", "cannot build the status snapshot: %r", e)

    @property
    def status_path(self) -> Path:
        return self.prep.layout.status_file


def run_node(cfg: NodeConfig) -> int:
    malloc.tune()  # before any model-sized array (flocknode.malloc)
    prep = prepare(cfg)
    malloc.trim()  # the start-up's models (the seeded initial one, its checks) are gone
    node = FlockNode(prep)
    try:
        trio.run(node.run)
        if node.stop_signal_at is not None:
            took = time.monotonic() - node.stop_signal_at
            log.info("node stopped in %.2f s after the signal", took)
    except BaseExceptionGroup as group:
        # A service that cannot start (listen address taken, ...) raises a FlockError
        # inside the nursery: the CLI prints it as one line with its exit code.
        errors, rest = group.split(FlockError)
        if errors is None or rest is not None:
            raise
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return 0
