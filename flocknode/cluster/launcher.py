"""A local cluster for testers: anvil + token + task + N ``flocknode run`` processes.

``Cluster.create`` lays out a cluster directory (anvil log, task settings, one
data dir per node), writes each node's part of the task's reference data into
``data/node-<i>/`` in the task's own file format (and the shared test split into
``data/test/``, the testers' report), deploys the task, and funds, registers
and stakes every node; ``start_node``/``kill_node`` drive the node processes. The directory's
``cluster.json`` records pids and addresses, so ``flocknode cluster status``,
``down``, ``kill`` and ``logs`` work from another shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account

from flocknode.chain.anvil import AnvilOptions, spawn_anvil
from flocknode.chain.contracts import ChainConnection
from flocknode.cluster import netns
from flocknode.commands.init import init_data_dir
from flocknode.commands.task_create import Funding, TaskPlan, create_task, with_package
from flocknode.config import ENV_PRIVATE_KEY, load_config
from flocknode.connect import connect
from flocknode.datadir import DataDir
from flocknode.errors import FlockError
from flocknode.fsutil import atomic_write_text
from flocknode.identity import load_box_key, load_peer_key
from flocknode.learning.base_model import dir_hash
from flocknode.learning.data import min_shard_for, write_shards
from flocknode.learning.models import load_task
from flocknode.learning.package import PackageCache, build_package
from flocknode.learning.settings import TaskSettings
from flocknode.rounds.byzantine import ENV_BYZANTINE, Behaviour
from flocknode.status import NodeStatus, read_status_file

STATE_FILE = "cluster.json"
TOKENS = 10**18


class ClusterError(FlockError):
    pass


@dataclass
class NodeInfo:
    name: str
    index: int
    wallet: str
    key: str = field(repr=False)
    port: int
    data_dir: str
    behaviour: str = "honest"
    pid: int = 0
    http_port: int = 0  # the node's status page, /metrics, /healthz, /readyz (0: disabled)
    host: str = "127.0.0.1"  # where it listens (p2p and HTTP)
    netns: str = ""  # the network namespace it runs in ("": the launcher's)
    # laid out (wallet funded, config and data written) but neither registered,
    # staked nor started by create_cluster: a participant that joins mid-task
    spare: bool = False
    # the loopback port of its relay (cluster/relay.py), which it registers and
    # the others dial (0: none, they dial ``port``)
    relay_port: int = 0

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}" if self.http_port else ""

    @property
    def layout(self) -> DataDir:
        return DataDir(Path(self.data_dir))


@dataclass
class ClusterState:
    directory: str
    rpc_url: str
    chain_id: int
    anvil_pid: int
    task: str
    token: str
    rounds: int
    rule: str
    nodes: list[NodeInfo]
    settings_file: str
    task_name: str = "digits-mlp"
    test_path: str = ""  # the shared test split (testers' reports)
    package_dir: str = ""  # the launcher's checked copy of the task package, if any
    network: dict[str, Any] = field(default_factory=dict)  # netns.NetPlan's JSON, if any

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        atomic_write_text(path, json.dumps(asdict(self), indent=1))
        self._seen(path)

    @classmethod
    def load(cls, directory: Path) -> ClusterState:
        path = Path(directory) / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"{path}: no cluster here (start one with: cluster up)") from None
        nodes = [NodeInfo(**n) for n in doc.pop("nodes")]
        state = cls(nodes=nodes, **doc)
        state._seen(path)
        return state

    def _seen(self, path: Path) -> None:
        """Note the state file's mtime as this state last read or wrote it (an
        attribute, not a field: the fields are exactly what the file holds)."""
        try:
            self._mtime_ns: int | None = path.stat().st_mtime_ns
        except OSError:
            self._mtime_ns = None

    def refresh_pids(self) -> None:
        """Take the node pids from the state file when another ``cluster``
        command (``cluster chaos``, ``cluster start``) wrote it since this one
        last read or wrote it: it may have restarted a node."""
        path = Path(self.directory) / STATE_FILE
        try:
            if path.stat().st_mtime_ns == getattr(self, "_mtime_ns", None):
                return
            saved = {n["name"]: n["pid"] for n in json.loads(path.read_text())["nodes"]}
        except (OSError, ValueError, KeyError, TypeError):
            return
        for n in self.nodes:
            if isinstance(saved.get(n.name), int):
                n.pid = saved[n.name]
        self._seen(path)

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if name in (n.name, str(n.index)):
                return n
        raise ClusterError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")


def parse_byzantine(specs: list[str]) -> list[Behaviour]:
    """``["3:sign_flip", "1:no_reveal"]`` -> one behaviour per cheating node."""
    out: list[Behaviour] = []
    for spec in specs:
        count, _, name = spec.partition(":")
        try:
            n = int(count)
            b = Behaviour(name)
            if n < 1 or b is Behaviour.HONEST:
                raise ValueError
        except ValueError:
            raise ClusterError(
                f"--byzantine {spec!r}: expected K:BEHAVIOUR with K >= 1 and BEHAVIOUR one of "
                f"{', '.join(Behaviour.names())}"
            ) from None
        out += [b] * n
    return out


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass(frozen=True)
class ClusterSpec:
    nodes: int = 5
    rounds: int = 5
    rule: str = "fedavg"
    byzantine: tuple[Behaviour, ...] = ()
    proposers: int | None = None
    voters: int | None = None
    train_seconds: int = 20
    commit_seconds: int = 15
    reveal_seconds: int = 10
    block_time: float = 1.0
    task: str = "digits-mlp"
    # The task's code package (docs/tasks.md): every node but the last is given
    # it in [task] package; the last fetches it from the others by its hash.
    task_package: str = ""
    split: str = "dirichlet"  # how the reference data is sharded among the nodes
    alpha: float = 0.5
    data_seed: int = 0
    settings_overrides: tuple[tuple[str, str, Any], ...] = ()  # (section, key, value)
    quorum_bps: int = 6666
    stakes: tuple[int, ...] = ()  # tokens per node (tests steer the draw); default 100 each
    # [compute] isolation of every node ("namespace", "process", "none"); empty:
    # the node's default (docs/protocol.md, "Task worker")
    isolation: str = ""
    # every node in a network namespace of its own (cluster/netns.py), for
    # ``--chaos partition``; anvil then listens on the namespaces' bridge
    netns: bool = False
    spares: int = 0  # nodes laid out after the others, to join mid-task (NodeInfo.spare)
    confirmations: int = 0  # every node's chain.confirmations (docs/protocol.md)
    # every node registers a relay's port (p2p.announce) for ``--chaos latency``
    relays: bool = False
    # every node gets the shared test split and reports each global model's
    # accuracy on it (status, metrics); without, only the monitor evaluates
    node_test_split: bool = True


def node_settings(
    spec: ClusterSpec,
    index: int,
    port: int,
    http_port: int,
    settings_file: Path,
    data_path: str = "",
    test_path: str = "",
    base_model: str = "",
    package: str = "",
    host: str = "127.0.0.1",
    relay_port: int = 0,
) -> dict[str, dict[str, Any]]:
    """The config values of a cluster node beyond ``init``'s: its data shard (the
    files ``write_shards`` wrote, and the shared test split), the task settings
    file (and the base model, for a task that has one), and loopback-only p2p
    and HTTP ports (or the node's namespace address: ``host``); with a
    ``relay_port`` the node announces the relay's loopback address instead of
    its own, so the others dial it through the relay."""
    data: dict[str, Any] = {"node_index": index, "num_nodes": spec.nodes + spec.spares}
    if data_path:
        data.update(path=data_path, test_path=test_path)
    task: dict[str, Any] = {"settings": str(settings_file)}
    if base_model:
        task["base_model"] = base_model
    if package:
        task["package"] = package
    out: dict[str, dict[str, Any]] = {
        "data": data,
        "task": task,
        "p2p": {"listen": [f"/ip4/{host}/tcp/{port}"]},
        "http": {"listen": f"{host}:{http_port}"},
    }
    if relay_port:
        out["p2p"]["announce"] = [f"/ip4/127.0.0.1/tcp/{relay_port}"]
    if spec.isolation:
        out["compute"] = {"isolation": spec.isolation}
    if spec.confirmations:
        out["chain"] = {"confirmations": spec.confirmations}
    return out


def create_cluster(directory: Path, spec: ClusterSpec, progress: Any = print) -> ClusterState:
    """Start anvil, deploy the task, lay out and fund every node (and the spares),
    register and stake every node but the spares."""
    directory = Path(directory).resolve()
    if (directory / STATE_FILE).exists():
        old = ClusterState.load(directory)
        if _alive(old.anvil_pid):
            raise ClusterError(f"{directory}: a cluster is running there (cluster down first)")
        tear_down_network(old)  # a run that died before its teardown
    if spec.nodes < 2:
        raise ClusterError("a cluster needs at least 2 nodes")
    if len(spec.byzantine) > spec.nodes:
        raise ClusterError("more byzantine nodes than nodes")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("node-*"), directory / "data"]:
        _rmtree(stale)
    plan: netns.NetPlan | None = None
    if spec.netns:
        plan = netns.draw_plan(spec.nodes + spec.spares, netns.machine_addresses(), random.Random())
        progress(
            f"network namespaces {plan.namespace(0)}.. on {plan.gateway}/24 (bridge {plan.bridge})"
        )
        netns.set_up(plan)
    progress(f"starting anvil (block time {spec.block_time:g} s) ...")
    total = spec.nodes + spec.spares
    opts = AnvilOptions(
        block_time=spec.block_time,
        mixed_mining=True,
        accounts=total + 1,
        host=plan.gateway if plan else "127.0.0.1",
    )
    try:
        proc, chain = spawn_anvil(opts, directory / "anvil", directory / "anvil.log")
    except BaseException:
        if plan is not None:
            netns.tear_down(plan)
        raise
    try:
        return _deploy(directory, spec, chain, proc.pid, progress, plan)
    except BaseException:
        proc.terminate()
        if plan is not None:
            netns.tear_down(plan)
        raise


def _deploy(
    directory: Path,
    spec: ClusterSpec,
    chain: Any,
    anvil_pid: int,
    progress: Any,
    net: netns.NetPlan | None = None,
) -> ClusterState:
    # half the nodes propose, the other half vote (an odd one out votes: an odd
    # number of voters gives the score's median a middle)
    proposers = spec.proposers or max(1, spec.nodes // 2)
    voters = spec.voters or max(1, spec.nodes - proposers)
    package, package_dir, package_src = None, None, ""
    if spec.task_package:
        package_src = str(Path(spec.task_package).resolve())
        package = build_package(Path(package_src))
        package_dir = PackageCache(directory / "packages").install(package.archive, package_src)
        progress(
            f"task package {package.ref}: nodes 0-{spec.nodes - 2} have it, the last fetches it"
        )
    task = load_task(spec.task, package_dir)
    # a task may suggest settings for its small test data (lm-lora: fewer steps)
    training: dict[str, Any] = {"task": spec.task, **getattr(task, "tester_training", {})}
    base_model = ""
    write_base = getattr(task, "write_base_model", None)
    if callable(write_base):  # testers' stand-in for a downloaded model, pinned by its hash
        base_dir = directory / "base-model"
        _rmtree(base_dir)
        progress(f"writing the {spec.task} base model to {base_dir} ...")
        write_base(base_dir)
        training["base_model_hash"] = dir_hash(base_dir)
        base_model = str(base_dir)
    aggregation: dict[str, Any] = {"rule": spec.rule}
    extra: dict[str, Any] = {}
    for section, key, value in spec.settings_overrides:
        {"training": training, "aggregation": aggregation}.get(section, extra)[key] = value
    settings = TaskSettings.from_dict({"training": training, "aggregation": aggregation, **extra})
    if package is not None:
        settings = with_package(settings, package)
    deployer = Account.from_key(chain.private_keys[0])
    conn = ChainConnection(chain.rpc_url, deployer, expected_chain_id=chain.chain_id)
    total = spec.nodes + spec.spares
    keys = chain.private_keys[1 : total + 1]
    wallets = [Account.from_key(k).address for k in keys]
    params = {
        "total_rounds": spec.rounds,
        "proposers_per_round": proposers,
        "voters_per_round": voters,
        "max_participants": 256,
        "min_stake": 10 * TOKENS,
        "train_seconds": spec.train_seconds,
        "commit_seconds": spec.commit_seconds,
        "reveal_seconds": spec.reveal_seconds,
        "quorum_bps": spec.quorum_bps,
        "slash_bps": 1000,
        "idle_slash_bps": 100,
        "reward_per_round": 10 * TOKENS,
        "proposer_share_bps": 5000,
        "seed_delay": 2,
    }
    settings_file = directory / "task-settings.json"
    plan = TaskPlan(
        params=params,
        settings=settings,
        fund=[Funding(w, max(1000, *spec.stakes, 0) * TOKENS, 0) for w in wallets],
        reward_pool=10 * TOKENS * spec.rounds,
        settings_out=settings_file,
        base_model=Path(base_model) if base_model else None,
        package=package,
        package_cache=directory / "packages",
    )
    progress(f"writing each node's {settings.training.task} data files ...")
    shards = write_shards(
        task,
        directory / "data",
        total,
        spec.split,
        spec.alpha,
        spec.data_seed,
        min_shard=min_shard_for(settings.training.val_fraction, settings.training.min_val_samples),
    )
    progress(f"deploying the task: {proposers} proposers and {voters} voters per round ...")
    created = create_task(conn, plan)
    # libp2p ports, HTTP ports, then the relays' ports (drawn at once: distinct)
    ports = free_ports((3 if spec.relays else 2) * total)
    http_ports = ports[total : 2 * total]
    relay_ports = ports[2 * total :] or [0] * total
    behaviours = list(spec.byzantine) + [Behaviour.HONEST] * (total - len(spec.byzantine))
    # cheaters are the first K nodes (registration order does not favour anyone in the draw)
    nodes: list[NodeInfo] = []
    for i in range(total):
        name = f"node-{i}"
        d = directory / name
        host = net.address(i) if net else "127.0.0.1"
        init_data_dir(
            d,
            rpc_url=chain.rpc_url,
            chain_id=chain.chain_id,
            task=created.task,
            port=ports[i],
            force=True,
            settings=node_settings(
                spec,
                i,
                ports[i],
                http_ports[i],
                settings_file,
                str(shards.nodes[i]),
                str(shards.test) if spec.node_test_split else "",
                base_model,
                package_src if i < spec.nodes - 1 else "",
                host,
                relay_ports[i],
            ),
        )
        nodes.append(
            NodeInfo(
                name,
                i,
                wallets[i],
                keys[i],
                ports[i],
                str(d),
                behaviours[i].value,
                http_port=http_ports[i],
                host=host,
                netns=net.namespace(i) if net else "",
                spare=i >= spec.nodes,
                relay_port=relay_ports[i],
            )
        )
    progress(f"registering and staking {spec.nodes} nodes ...")
    for i, n in enumerate(nodes[: spec.nodes]):
        stake = spec.stakes[i] if i < len(spec.stakes) else 100
        cfg = load_config(n.layout.config, environ={})
        client = connect(cfg, Account.from_key(n.key))
        client.register_node(
            load_peer_key(n.layout.peer_key), load_box_key(n.layout.box_key), cfg.announce_addrs()
        )
        client.stake(stake * TOKENS)
    state = ClusterState(
        directory=str(directory),
        rpc_url=chain.rpc_url,
        chain_id=chain.chain_id,
        anvil_pid=anvil_pid,
        task=created.task,
        token=created.token,
        rounds=spec.rounds,
        rule=spec.rule,
        nodes=nodes,
        settings_file=str(settings_file),
        task_name=settings.training.task,
        test_path=str(shards.test),
        package_dir=str(package_dir or ""),
        network=net.to_json() if net else {},
    )
    state.save()
    return state


def start_node(state: ClusterState, name: str) -> NodeInfo:
    state.refresh_pids()
    n = state.node(name)
    if n.pid and _alive(n.pid):
        raise ClusterError(f"{n.name} is already running (pid {n.pid})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOCKNODE_")}
    env[ENV_PRIVATE_KEY] = n.key
    if n.behaviour != "honest":
        env[ENV_BYZANTINE] = n.behaviour
    env.setdefault("OMP_NUM_THREADS", "1")  # N nodes share the machine's cores
    log = open(n.layout.log_file, "ab")  # noqa: SIM115 - handed to the child
    prefix = netns.exec_prefix(n.netns) if n.netns else []
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "flocknode.cli", "run", "-c", str(n.layout.config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    n.pid = proc.pid
    state.save()
    return n


def kill_node(state: ClusterState, name: str, sig: int = signal.SIGKILL) -> NodeInfo:
    state.refresh_pids()
    n = state.node(name)
    if n.pid and _alive(n.pid):
        os.kill(n.pid, sig)
        _reap(n.pid, 10.0)
    state.save()
    return n


@dataclass(frozen=True)
class Stopped:
    """What ``down`` did to one process."""

    name: str  # node name, or "anvil"
    pid: int
    how: str  # "exited" (after SIGTERM), "killed" (SIGKILL after the deadline), "not running"
    running: bool = False  # still there after SIGKILL (should not happen)


def down(state: ClusterState, timeout: float = 10.0) -> list[Stopped]:
    """Stop every node, then anvil; return once each has exited.

    SIGTERM to all nodes, wait up to ``timeout`` seconds for them together,
    SIGKILL the rest; then the same for anvil (nodes first: a stopping node may
    still talk to the chain); then the cluster's network namespaces and bridge,
    if it has them, are deleted.
    """
    state.refresh_pids()
    nodes = [(n.name, n.pid) for n in state.nodes]
    out = _stop_all(nodes, timeout)
    out += _stop_all([("anvil", state.anvil_pid)], timeout)
    tear_down_network(state)
    return out


def tear_down_network(state: ClusterState) -> None:
    """Delete the cluster's namespaces and bridge (none: nothing to do; gone
    already: quiet)."""
    if state.network:
        for line in netns.tear_down(netns.NetPlan.from_json(state.network)):
            print(f"cluster down: {line}", file=sys.stderr)


def _stop_all(procs: list[tuple[str, int]], timeout: float) -> list[Stopped]:
    live = [(name, pid) for name, pid in procs if _alive(pid)]
    for _, pid in live:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for _, pid in live:
        _reap(pid, max(0.0, deadline - time.monotonic()))
    out = [Stopped(name, pid, "not running") for name, pid in procs if (name, pid) not in live]
    for name, pid in live:
        if not _alive(pid):
            out.append(Stopped(name, pid, "exited"))
            continue
        _signal(pid, signal.SIGKILL)
        _reap(pid, 5.0)
        out.append(Stopped(name, pid, "killed", running=_alive(pid)))
    return out


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@dataclass(frozen=True)
class NodeReport:
    """A cluster node as seen from outside: is its process alive, and its last status."""

    alive: bool
    status: NodeStatus | None  # None until the node first wrote its status file

    @property
    def holds(self) -> str:
        """The global model hash the node holds ("" when it holds none, or is down)."""
        s = self.status
        return s.model.global_hash if self.alive and s is not None and s.model.held else ""


def node_status(n: NodeInfo) -> NodeReport:
    return NodeReport(
        alive=bool(n.pid) and _alive(n.pid), status=read_status_file(n.layout.status_file)
    )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _reap(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "ClusterError",
    "ClusterSpec",
    "ClusterState",
    "NodeInfo",
    "NodeReport",
    "Stopped",
    "create_cluster",
    "down",
    "kill_node",
    "node_status",
    "parse_byzantine",
    "start_node",
]
