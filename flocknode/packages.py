"""How a node comes to hold its task's package before it runs any task code.

docs/protocol.md, "Task packages". At start, when the settings name a package
hash (``training.task_package``), the node uses, in this order:

1. ``[task] package`` in node.toml: the node builds its canonical archive and
   refuses to start (one line naming the file, exit code 2) unless it hashes
   to the settings' value;
2. its package cache (``DataDir.packages``), re-checked against the hash;
3. the members: a short-lived libp2p host asks the task's registered members
   for the archive over ``/flock/model/1`` (members only, at most
   ``MAX_PACKAGE_BYTES``, verified by hash before it is kept), pass after pass
   until ``PACKAGE_FETCH_SECONDS`` are up.

Either way the archive lands in the cache and is unpacked there; the task's
code is imported only from that checked tree. The running node serves the
archives in its cache to members (``FirstOf`` next to its models).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import trio
from libp2p.peer.id import ID

from flocknode.chain.registry import Registry
from flocknode.config import NodeConfig
from flocknode.datadir import DataDir
from flocknode.errors import ConfigError, FlockError
from flocknode.identity.keys import PeerKey, load_or_create_peer_key
from flocknode.learning.package import (
    MAX_PACKAGE_BYTES,
    PackageCache,
    PackageError,
    build_package,
    package_ref,
    ref_digest,
)
from flocknode.learning.settings import TaskSettings
from flocknode.p2p.content import BlobSource, MemorySink
from flocknode.p2p.fetch import FetchFailed, fetch
from flocknode.p2p.framing import PROTOCOL_MODEL
from flocknode.p2p.host import HostConfig, P2PHost
from flocknode.rounds.membership import ChainMembership

log = logging.getLogger(__name__)

PACKAGE_FETCH_SECONDS = 120.0  # from the first request to giving up
PACKAGE_FETCH_PAUSE = 2.0  # between two passes over the members
FETCH_LISTEN = "/ip4/127.0.0.1/tcp/0"  # the fetching host only dials out


class PackageUnavailable(FlockError):
    exit_code = 2


class FirstOf:
    """A content source made of others: the first one that has the id answers."""

    def __init__(self, *sources: BlobSource) -> None:
        self._sources = sources

    def path(self, content_id: bytes) -> Path | None:
        for s in self._sources:
            p = s.path(content_id)
            if p is not None:
                return p
        return None


class RegistryReader(Protocol):
    def registry(self) -> Registry: ...


def resolve_task_package(
    cfg: NodeConfig,
    settings: TaskSettings,
    layout: DataDir,
    client: RegistryReader | None = None,
    timeout: float = PACKAGE_FETCH_SECONDS,
) -> Path | None:
    """The checked tree of the settings' task package (None when they name none).

    Blocking. Without ``client`` (the task's chain client, for its registry)
    nothing is fetched: a package neither configured nor cached is an error.
    """
    ref = settings.training.task_package
    if not ref:
        if cfg.task.package:
            raise ConfigError(
                cfg.source, "task.package", "the task's settings name no task package; remove it"
            )
        return None
    digest = ref_digest(ref)
    cache = PackageCache(layout.packages)
    if cfg.task.package:
        path = cfg.path(cfg.task.package)
        try:
            pkg = build_package(path)
        except PackageError as e:
            raise ConfigError(cfg.source, "task.package", str(e)) from None
        if pkg.digest != digest:
            raise ConfigError(
                cfg.source,
                "task.package",
                f"{path} hashes to {pkg.ref}, the task's package is {ref}",
            )
        return cache.install(pkg.archive, str(path))
    held = cache.checked_dir(digest)
    if held is not None:
        log.info("task package %s found in %s", ref, held)
        return held
    if client is None:
        raise PackageUnavailable(
            f"task package {ref} is not in {cache.root} yet: the node fetches it from "
            f"members at start, or set [task] package in {cfg.source}"
        )
    peer_key = load_or_create_peer_key(layout.peer_key)
    registry = client.registry()
    bootstrap = tuple(cfg.p2p.bootstrap)
    archive = trio.run(fetch_package, peer_key, registry, digest, bootstrap, timeout)
    return cache.install(archive, f"package {ref} from members")


async def fetch_package(
    peer_key: PeerKey,
    registry: Registry,
    digest: bytes,
    bootstrap: Sequence[str] = (),
    timeout: float = PACKAGE_FETCH_SECONDS,
) -> bytes:
    """The archive ``digest`` from the registry's members (hash checked); else
    ``PackageUnavailable`` naming why, once ``timeout`` seconds are up."""
    ref = package_ref(digest)
    membership = ChainMembership()
    membership.update_registry(registry)
    p2p = P2PHost(
        peer_key, membership, HostConfig(listen_addrs=(FETCH_LISTEN,), bootstrap=tuple(bootstrap))
    )
    if not membership.is_member(p2p.peer_id):
        raise PackageUnavailable(
            f"task package {ref}: members serve it only to members and this node is not one "
            "yet (register and stake first), or set [task] package to the file"
        )
    deadline = trio.current_time() + timeout
    archive: bytes | None = None
    failed: PackageUnavailable | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(p2p.run)
        try:
            archive = await _fetch_passes(p2p, registry, digest, deadline)
        except PackageUnavailable as e:
            failed = e  # raised below, on its own rather than in the nursery's group
        finally:
            p2p.stop()
    if failed is not None:
        raise failed
    assert archive is not None
    return archive


async def _fetch_passes(p2p: P2PHost, registry: Registry, digest: bytes, deadline: float) -> bytes:
    ref = package_ref(digest)
    holders = [m.peer_id for m in registry.members if m.eligible and m.peer_id != p2p.peer_id]
    attempt = 0
    last: FetchFailed | None = None
    while trio.current_time() < deadline:
        attempt += 1
        order: list[ID] = random.sample(holders, len(holders))
        log.info(
            "task package %s: asking %d members (pass %d, %.0f s left)",
            ref,
            len(order),
            attempt,
            deadline - trio.current_time(),
        )
        sink = MemorySink()
        try:
            res = await fetch(
                p2p,
                PROTOCOL_MODEL,
                digest,
                order,
                sink,
                max_size=MAX_PACKAGE_BYTES,
                deadline=deadline,
            )
        except FetchFailed as e:
            last = e
            await trio.sleep_until(min(deadline, trio.current_time() + PACKAGE_FETCH_PAUSE))
            continue
        assert sink.data is not None
        log.info("task package %s: %d bytes from %s", ref, res.size, res.holder)
        return bytes(sink.data)
    why = ", ".join(sorted({a.reason for a in last.attempts})) if last else "no members"
    raise PackageUnavailable(
        f"task package {ref}: no member delivered it in time ({why}); "
        "set [task] package to the file"
    )
