"""Factories for real p2p nodes on 127.0.0.1 (no mocked network)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from flocknode.identity.keys import PeerKey
from flocknode.p2p.content import MemorySink, Pieces
from flocknode.p2p.gossip import Received, TaskGossip, task_topic
from flocknode.p2p.host import HostConfig, P2PHost
from flocknode.p2p.membership import StaticMembership

TOPIC = task_topic(31337, "0x" + "5a" * 20)
LOOPBACK = HostConfig(
    listen_addrs=("/ip4/127.0.0.1/tcp/0",),
    discovery_interval=0.5,
    redial_base=0.2,
    redial_cap=2.0,
    dial_timeout=5.0,
)


@dataclass
class Node:
    key: PeerKey
    p2p: P2PHost
    gossip: TaskGossip

    @property
    def peer_id(self) -> ID:
        return self.p2p.peer_id


def strip_p2p(addr: Multiaddr) -> Multiaddr:
    return Multiaddr(str(addr).split("/p2p/")[0])


async def start_node(
    nursery: trio.Nursery,
    membership: StaticMembership,
    *,
    member: bool = True,
    key: PeerKey | None = None,
    config: HostConfig = LOOPBACK,
) -> Node:
    key = key or PeerKey.generate()
    p2p = P2PHost(key, membership, config)
    addrs = await nursery.start(p2p.run)
    if member:
        membership.add(p2p.peer_id, [strip_p2p(a) for a in addrs])
    gossip = TaskGossip(p2p, TOPIC)
    await nursery.start(gossip.run)
    return Node(key, p2p, gossip)


@asynccontextmanager
async def running_nodes(
    n: int, membership: StaticMembership, config: HostConfig = LOOPBACK
) -> AsyncIterator[list[Node]]:
    """``n`` member nodes, started in order; all stopped (and awaited) on exit."""
    async with trio.open_nursery() as nursery:
        nodes = [await start_node(nursery, membership, config=config) for _ in range(n)]
        try:
            yield nodes
        finally:
            for node in nodes:
                node.gossip.stop()
                node.p2p.stop()


async def wait_until(pred: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.05)


async def wait_connected(nodes: list[Node], timeout: float = 15.0) -> None:
    ids = {n.peer_id for n in nodes}

    def all_connected() -> bool:
        return all(ids - {n.peer_id} <= set(n.p2p.connected_peers()) for n in nodes)

    await wait_until(all_connected, timeout)


async def wait_mesh(nodes: list[Node], timeout: float = 15.0) -> None:
    """Every node sees every other one subscribed and in its mesh for TOPIC."""
    ids = {n.peer_id for n in nodes}

    def meshed() -> bool:
        for n in nodes:
            others = ids - {n.peer_id}
            subscribed = set(n.p2p.pubsub.peer_topics.get(TOPIC, ()))
            mesh = set(n.p2p.router.mesh.get(TOPIC, ()))
            if not others <= subscribed or not others <= mesh:
                return False
        return True

    await wait_until(meshed, timeout)


def drain(node: Node) -> list[Received]:
    out: list[Received] = []
    while True:
        try:
            out.append(node.gossip.messages.receive_nowait())
        except trio.WouldBlock:
            return out


def write_blob(directory: Path, size: int, seed: int = 0) -> bytes:
    """A pseudo-random blob of ``size`` bytes stored under its SHA-256; returns the id."""
    directory.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    tmp = directory / f".blob-{seed}"
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * (1 << 15)  # 1 MiB
    with open(tmp, "wb") as f:
        left = size
        i = 0
        while left:
            chunk = (i.to_bytes(8, "big") + block)[: min(left, 1 << 20)]
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
            i += 1
    cid = h.digest()
    tmp.rename(directory / cid.hex())
    return cid


class RecordingSink(MemorySink):
    """A memory sink that records what it was asked to allocate and calls a hook per write."""

    def __init__(self, on_write: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.begins: list[int] = []
        self.written = 0
        self._on_write = on_write

    def begin(self, size: int) -> None:
        self.begins.append(size)
        self.written = 0
        super().begin(size)

    def write(self, pieces: Pieces) -> None:
        super().write(pieces)
        self.written += sum(len(p) for p in pieces)
        if self._on_write is not None:
            self._on_write(self.written)


NODE_PROC = Path(__file__).with_name("p2p_node_proc.py")


def spawn_node_process(
    seed: bytes,
    members: dict[ID, list[Multiaddr]],
    voters: list[ID],
    blob_dir: Path,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], list[Multiaddr]]:
    """A node in its own process serving ``blob_dir``; returns it and its bound addrs.
    ``prefix``: a command that runs it (``ip netns exec NS``)."""
    args = {
        "seed": seed.hex(),
        "members": {str(p): [str(a) for a in addrs] for p, addrs in members.items()},
        "voters": [str(v) for v in voters],
        "blob_dir": str(blob_dir),
        "listen": listen,
    }
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(NODE_PROC), json.dumps(args)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"node process exited with {proc.wait()}")
    return proc, [Multiaddr(a) for a in json.loads(line)["addrs"]]
