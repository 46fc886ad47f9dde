"""Fetching a task package by hash from members (docs/protocol.md, "Task packages").

Real hosts on loopback: a member serves its package cache next to its models,
as the node wires it; the fetching side is the short-lived host a starting
node runs (``fetch_package``), given the task's registry.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import pytest

from flocknode.chain.registry import Member, Registry
from flocknode.crypto.canonical import MAGIC as MODEL_MAGIC
from flocknode.identity.keys import PeerKey
from flocknode.learning.package import PackageCache, build_package, encode_archive
from flocknode.p2p.content import PrefixedSource, SealedBlobs
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.serve import ContentServer
from flocknode.packages import FirstOf, PackageUnavailable, fetch_package
from flocknode.store import ContentStore
from tests.integration.p2p.p2p_helpers import Node, running_nodes, strip_p2p

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "tasks" / "example_task"


def serve_cache(node: Node, root: Path) -> PackageCache:
    store, cache = ContentStore(root / "store"), PackageCache(root / "packages")
    ContentServer(
        node.p2p,
        SealedBlobs(store, lambda cid, r: False),
        FirstOf(PrefixedSource(store, MODEL_MAGIC), cache),
    ).install()
    return cache


def member(i: int, key: PeerKey, addrs: tuple[str, ...] = ()) -> Member:
    wallet = "0x" + f"{i:040x}"
    pid = key.peer_id
    return Member(wallet, pid, bytes(32), addrs, 100, True)


def addrs_of(node: Node) -> tuple[str, ...]:
    return tuple(str(strip_p2p(a)) for a in node.p2p.listen_addrs())


async def test_a_member_fetches_the_package_by_hash_and_gets_exact_bytes(tmp_path: Path) -> None:
    pkg = build_package(EXAMPLE)
    membership = StaticMembership(0)
    me = PeerKey.generate()
    membership.add(me.peer_id, [])
    async with running_nodes(2, membership) as (holder, empty):
        serve_cache(holder, tmp_path / "holder").install(pkg.archive)
        serve_cache(empty, tmp_path / "empty")
        registry = Registry(
            (
                member(1, empty.key, addrs_of(empty)),
                member(2, holder.key, addrs_of(holder)),
                member(3, me),
            ),
            0,
        )
        got = await fetch_package(me, registry, pkg.digest, timeout=30)
        assert got == pkg.archive
        # nobody holds this one: passes until the timeout, then one line saying why
        other = encode_archive([("x.py", b"X = 1\n")])
        with pytest.raises(
            PackageUnavailable, match=r"no member delivered it in time \(.*not_found"
        ):
            await fetch_package(me, registry, sha256(other).digest(), timeout=4)


async def test_a_node_that_is_not_a_member_is_told_to_register_first() -> None:
    me = PeerKey.generate()
    with pytest.raises(PackageUnavailable, match="this node is not one yet"):
        await fetch_package(me, Registry((), 0), bytes(32), timeout=1)
