"""Each cluster node in a network namespace of its own, so the chaos can cut the
network between nodes (``cluster up --chaos partition``; docs/protocol.md,
"Faults and the promises kept under them").

The layout of a cluster whose network id is ``<id>`` (6 hex digits, drawn per
cluster, so clusters side by side never share a name) on subnet
``10.213.<S>.0/24`` (``S`` free on this machine when drawn):

- a bridge ``fnb<id>`` in the root namespace holds ``10.213.S.1``: anvil listens
  there, and the launcher, the monitor and the chaos reach the chain and the
  nodes through it;
- node ``i`` runs in the namespace ``flocknode-<id>-node-<i>`` at
  ``10.213.S.<i+2>``, on a veth ``fnn<id>-<i>`` whose root end ``fnh<id>-<i>``
  is a port of the bridge.

A partition adds, in each node's namespace, a blackhole route to every node of
the other side (``ip route add blackhole ADDR/32``): packets between the sides
are dropped while both still reach the bridge address (the chain). The heal
deletes those routes. Deleting the namespaces and the bridge tears everything
down (a namespace takes its veth pair with it). Needs root and iproute2; the
commands are built by pure functions here, run by ``run_commands``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flocknode.errors import FlockError

NET_PREFIX = "10.213"
IP_CANDIDATES = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")


class NetnsError(FlockError):
    """A namespace command failed: the message names it and its output."""


@dataclass(frozen=True)
class NetPlan:
    """Names and addresses of one cluster's namespaces (see the module docstring)."""

    net_id: str
    subnet: int  # S in 10.213.S.0/24
    nodes: int

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{6}", self.net_id):
            raise ValueError(f"network id must be 6 hex digits: {self.net_id!r}")
        if not 0 <= self.subnet <= 255 or not 1 <= self.nodes <= 250:
            raise ValueError(f"subnet 0..255 and 1..250 nodes: {self.subnet}, {self.nodes}")

    @property
    def bridge(self) -> str:
        return f"fnb{self.net_id}"

    @property
    def gateway(self) -> str:
        """The bridge's address: where anvil listens."""
        return f"{NET_PREFIX}.{self.subnet}.1"

    def namespace(self, i: int) -> str:
        return f"flocknode-{self.net_id}-node-{i}"

    def address(self, i: int) -> str:
        return f"{NET_PREFIX}.{self.subnet}.{i + 2}"

    def veth_root(self, i: int) -> str:
        return f"fnh{self.net_id}-{i}"

    def veth_node(self, i: int) -> str:
        return f"fnn{self.net_id}-{i}"

    def setup_commands(self) -> list[list[str]]:
        cidr = "/24"
        cmds = [
            ["link", "add", self.bridge, "type", "bridge"],
            ["addr", "add", self.gateway + cidr, "dev", self.bridge],
            ["link", "set", self.bridge, "up"],
        ]
        for i in range(self.nodes):
            ns, root, node = self.namespace(i), self.veth_root(i), self.veth_node(i)
            cmds += [
                ["netns", "add", ns],
                ["link", "add", root, "type", "veth", "peer", "name", node, "netns", ns],
                ["link", "set", root, "master", self.bridge],
                ["link", "set", root, "up"],
                ["-n", ns, "addr", "add", self.address(i) + cidr, "dev", node],
                ["-n", ns, "link", "set", node, "up"],
                ["-n", ns, "link", "set", "lo", "up"],
            ]
        return cmds

    def teardown_commands(self) -> list[list[str]]:
        """Deleting a namespace deletes its veth pair; the bridge goes last."""
        return [["netns", "delete", self.namespace(i)] for i in range(self.nodes)] + [
            ["link", "delete", self.bridge]
        ]

    def _routes(self, verb: str, side_a: Iterable[int], side_b: Iterable[int]) -> list[list[str]]:
        a, b = sorted(set(side_a)), sorted(set(side_b))
        return [
            ["-n", self.namespace(i), "route", verb, "blackhole", f"{self.address(j)}/32"]
            for here, there in ((a, b), (b, a))
            for i in here
            for j in there
        ]

    def cut_commands(self, side_a: Iterable[int], side_b: Iterable[int]) -> list[list[str]]:
        """Blackhole routes both ways between the two sides' nodes."""
        return self._routes("add", side_a, side_b)

    def heal_commands(self, side_a: Iterable[int], side_b: Iterable[int]) -> list[list[str]]:
        return self._routes("delete", side_a, side_b)

    def to_json(self) -> dict[str, Any]:
        return {"net_id": self.net_id, "subnet": self.subnet, "nodes": self.nodes}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NetPlan:
        return cls(str(doc["net_id"]), int(doc["subnet"]), int(doc["nodes"]))


def used_subnets(addresses: str) -> set[int]:
    """The S of every ``10.213.S.x`` in ``ip -o addr`` / ``ip route`` output."""
    pattern = re.compile(re.escape(NET_PREFIX) + r"\.(\d{1,3})\.")
    return {int(m.group(1)) for m in pattern.finditer(addresses) if int(m.group(1)) <= 255}


def draw_plan(nodes: int, in_use: str, rng: random.Random) -> NetPlan:
    """A plan with a fresh id on a subnet that ``in_use`` (the machine's
    addresses and routes, as ``ip`` prints them) does not mention."""
    free = sorted(set(range(256)) - used_subnets(in_use))
    if not free:
        raise NetnsError(f"no free {NET_PREFIX}.S.0/24 subnet on this machine")
    return NetPlan(f"{rng.getrandbits(24):06x}", rng.choice(free), nodes)


def draw_sides(
    names: Sequence[str], keep: Iterable[str], rng: random.Random
) -> tuple[list[str], list[str]]:
    """Split ``names`` into (minority, majority): a minority of 1 up to less than
    half the nodes, drawn from the nodes outside ``keep`` (the current round's
    voters, who stay together so a quorum of them reaches each other); the
    majority is the rest. Raises ValueError when no node can be cut off."""
    keep = set(keep)
    movable = [n for n in names if n not in keep]
    most = min(len(movable), (len(names) - 1) // 2)
    if most < 1:
        raise ValueError(f"no node can be cut off: {len(names)} nodes, voters {sorted(keep)}")
    minority = sorted(rng.sample(movable, rng.randint(1, most)))
    return minority, [n for n in names if n not in minority]


def ip_binary() -> str:
    found = shutil.which("ip")
    if found:
        return found
    for path in IP_CANDIDATES:
        if shutil.which(path):
            return path
    raise NetnsError("iproute2's ip command is not installed")


def run_commands(cmds: Iterable[Sequence[str]], *, check: bool = True) -> list[str]:
    """Run ``ip`` with each argument list in turn; with ``check`` the first
    failure raises NetnsError, otherwise failures are returned as lines (a
    teardown goes on past a namespace that is already gone)."""
    ip = ip_binary()
    failed: list[str] = []
    for args in cmds:
        done = subprocess.run(
            [ip, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            line = f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}"
            if check:
                raise NetnsError(line)
            failed.append(line)
    return failed


def machine_addresses() -> str:
    """This machine's IPv4 addresses and routes, as ``ip`` prints them."""
    ip = ip_binary()
    out = []
    for args in (["-o", "-4", "addr", "show"], ["-4", "route", "show", "table", "all"]):
        done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30)
        out.append(done.stdout)
    return "\n".join(out)


def set_up(plan: NetPlan) -> None:
    """Create the bridge and the namespaces; on a failure remove what was made."""
    try:
        run_commands(plan.setup_commands())
    except BaseException:
        tear_down(plan)
        raise


def tear_down(plan: NetPlan) -> list[str]:
    """Delete the namespaces and the bridge; returns the commands that failed
    for another reason than the thing being gone already."""
    failed = run_commands(plan.teardown_commands(), check=False)
    return [f for f in failed if "No such file" not in f and "Cannot find device" not in f]


def exec_prefix(namespace: str) -> list[str]:
    """Run a command in ``namespace``: ``ip netns exec`` keeps the process id
    (it execs the command after joining the namespace)."""
    return [ip_binary(), "netns", "exec", namespace]


def can_create_namespaces() -> str:
    """ "" when this process may create network namespaces and bridges (root
    with iproute2); otherwise why not, in one line."""
    if os.geteuid() != 0:
        return "--chaos partition needs root (network namespaces and a bridge per cluster)"
    try:
        ip_binary()
    except NetnsError as e:
        return f"--chaos partition: {e}"
    return ""


__all__ = [
    "NetPlan",
    "NetnsError",
    "can_create_namespaces",
    "draw_plan",
    "draw_sides",
    "exec_prefix",
    "machine_addresses",
    "run_commands",
    "set_up",
    "tear_down",
    "used_subnets",
]
