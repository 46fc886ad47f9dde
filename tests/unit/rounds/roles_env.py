"""A proposer's or voter's surroundings for the role unit tests.

Real journal, content store, model book, inbox, membership, box keys and
learner (tiny); in-memory stand-ins for the chain client (it records calls and
can be told to fail) and the gossip publisher (it records messages). The chain
view's clock is trio's, so ``MockClock`` drives every deadline. A "restart" is
a new ``Role`` over the same directories: the journal is read back from disk.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
from libp2p.peer.id import ID

from flocknode.chain.errors import ContractRevert
from flocknode.chain.registry import Member, Registry
from flocknode.chain.types import Phase, RoundView, UpdateView, VoteView
from flocknode.identity import BoxKey, PeerKey
from flocknode.learning import Learner
from flocknode.learning.settings import TaskSettings
from flocknode.p2p.content import FileSink
from flocknode.p2p.fetch import FetchFailed
from flocknode.p2p.gossip import Received
from flocknode.rounds.byzantine import Honest, RoleStrategy
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.store import ContentStore, Journal
from flocknode.store.journal import VoteRecord
from flocknode.store.residual import ResidualStore
from flocknode.store.spill import SpillDir
from tests.unit.rounds.views import make_view

R = 7
# a journaled vote, as a voter's path writes it before commitVote
VOTE = VoteRecord(
    aggregate_hash=os.urandom(32).hex(),
    included_bits=0b101,
    rejected_bits=0b100,
    flag_bits=0,
    score=1234,
    salt=os.urandom(32).hex(),
)
TRAIN_END = 100.0
# Long phases in virtual time: while a worker thread runs (training, opening,
# aggregating) every waiting task's timeout fires at once under MockClock, so
# a collection window must outlast many such jumps. Tests about deadlines move
# the clock past them on purpose.
COMMIT_SECONDS = 600
COMMIT_END = TRAIN_END + COMMIT_SECONDS
REVEAL_END = COMMIT_END + 20

_LEARNERS: dict[int, Learner] = {}


def learner() -> Learner:
    """A digits learner training a handful of steps (shared: loading data costs ~1 s)."""
    if not _LEARNERS:
        s = TaskSettings()
        s = dataclasses.replace(s, training=dataclasses.replace(s.training, local_steps=5))
        _LEARNERS[0] = Learner.from_settings(s.training, 0, 5)
    return _LEARNERS[0]


class TrioChainView(ChainFeed):
    """The chain's clock is trio's clock; ``phase_waits`` counts the waits for a
    view to change phase (a role that started one has nothing to do until then).
    Tests set the global model hash directly; each change is a new snapshot."""

    phase_waits = 0

    def now(self) -> float:
        return trio.current_time()

    @property  # type: ignore[override]
    def global_model_hash(self) -> bytes:
        return self.latest.global_model_hash

    @global_model_hash.setter
    def global_model_hash(self, model_hash: bytes) -> None:
        self.publish(dataclasses.replace(self.latest, global_model_hash=model_hash))

    def publish(self, snapshot: ChainSnapshot | None = None) -> None:
        super().publish(self.latest if snapshot is None else snapshot)

    async def wait_for(
        self, round: int, pred: Callable[[RoundView], bool], timeout: float = math.inf
    ) -> RoundView | None:
        self.phase_waits += 1
        return await super().wait_for(round, pred, timeout)


async def until(cond: Callable[[], object]) -> None:
    """Poll ``cond`` every 10 ms of virtual time. Worker threads (training, journal
    fsyncs) let MockClock jump meanwhile: the roles' deadlines are far apart."""
    while not cond():
        await trio.sleep(0.01)


class Gossip:
    def __init__(self) -> None:
        self.sent: list[tuple[float, Any]] = []  # (time, message)
        self.fail = False
        self.published = trio.Event()
        self.deliver: Callable[[Any], None] | None = None  # to the other nodes' inboxes

    async def publish(self, msg: Any) -> None:
        if self.fail:
            raise RuntimeError("no peers in the mesh")
        self.sent.append((trio.current_time(), msg))
        if self.deliver is not None:
            self.deliver(msg)
        self.published.set()
        self.published = trio.Event()

    def messages(self, kind: type) -> list[Any]:
        return [m for _, m in self.sent if isinstance(m, kind)]


@dataclass
class Client:
    """The chain client's transactions, recorded; ``fail`` maps a method to what it raises."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    called: trio.Event = field(default_factory=trio.Event)
    on_call: Callable[[str, tuple[Any, ...]], None] | None = None  # the chain's side
    views: dict[int, RoundView] = field(default_factory=dict)  # what ``get_round`` reads

    async def _call(self, name: str, *args: Any) -> None:
        if name in self.fail:
            raise self.fail[name]
        self.calls.append((name, args))
        if self.on_call is not None:
            self.on_call(name, args)
        self.called.set()
        self.called = trio.Event()

    async def submit_update(self, r: int, update_hash: bytes, blob_id: bytes, size: int) -> None:
        await self._call("submit_update", r, update_hash, blob_id, size)

    async def vote_commitment(self, r: int, wallet: str, h: bytes, *rest: Any) -> bytes:
        return h  # the commitment's preimage starts with the hash: enough to tell votes apart

    async def commit_vote(self, r: int, commitment: bytes) -> None:
        await self._call("commit_vote", r, commitment)

    async def reveal_vote(self, r: int, h: bytes, *rest: Any) -> None:
        await self._call("reveal_vote", r, h, *rest)

    async def get_round(self, r: int) -> RoundView:
        self.calls.append(("get_round", (r,)))
        return self.views[r]

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


def revert(name: str) -> ContractRevert:
    return ContractRevert(f"reverted: {name}", name=name)


@dataclass
class Peer:
    wallet: str
    peer: ID
    box: BoxKey

    def member(self) -> Member:
        return Member(self.wallet, self.peer, self.box.public_bytes, (), 100, True)


def peer(i: int) -> Peer:
    return Peer(f"0x{i:040x}", PeerKey.generate().peer_id, BoxKey.generate())


@dataclass
class Links:
    """A node's connections as ``P2PHost.peers_connected_for`` reports them:
    every member, connected for as long as asked, but those in ``cut``."""

    membership: ChainMembership
    cut: set[ID] = field(default_factory=set)

    def peers_connected_for(self, seconds: float) -> set[ID]:
        return set(self.membership.members()) - self.cut


@dataclass
class Role:
    """One node's round context (the attributes the roles read)."""

    root: Path
    me: Peer
    feed: ChainFeed
    membership: ChainMembership
    client: Client = field(default_factory=Client)
    gossip: Gossip = field(default_factory=Gossip)
    behaviour: RoleStrategy = field(default_factory=Honest)
    metrics: RoundMetrics = field(default_factory=RoundMetrics)
    settings: TaskSettings = field(default_factory=TaskSettings)
    p2p: Any = None

    def __post_init__(self) -> None:
        if self.p2p is None:
            self.p2p = Links(self.membership)
        self.journal = Journal(self.root / "journal")
        self.store = ContentStore(self.root / "store")
        self.models = ModelBook(self.store, None)
        self.residuals = ResidualStore(self.root / "residual")
        self.spill = SpillDir(self.root / "spill")
        self.inbox = Inbox(self.me.box.public_bytes)
        self.learner = learner()
        self.box_key = self.me.box
        self.wallet = self.me.wallet
        self.params = SimpleNamespace(commit_seconds=COMMIT_SECONDS)

    def restarted(self, **changes: Any) -> Role:
        """The same node after a crash: same directories and keys, fresh in-memory state."""
        return Role(self.root, self.me, self.feed, self.membership, **changes)


def world(root: Path, proposers: int, voters: int) -> tuple[list[Peer], list[Peer], TrioChainView]:
    ps = [peer(i + 1) for i in range(proposers)]
    vs = [peer(0x100 + i) for i in range(voters)]
    chain = TrioChainView()
    return ps, vs, chain


def membership_of(*peers: Peer) -> ChainMembership:
    ms = ChainMembership()
    ms.update_registry(Registry(tuple(p.member() for p in peers), 0))
    return ms


NO_UPDATE = UpdateView(False, bytes(32), bytes(32), 0)
NO_VOTE = VoteView(False, False, bytes(32), bytes(32), 0, 0, 0, 0)


def set_round(
    chain: ChainFeed,
    phase: Phase,
    proposers: list[Peer],
    voters: list[Peer],
    updates: tuple[UpdateView, ...] | None = None,
    votes: tuple[VoteView, ...] | None = None,
    ends: tuple[int, int, int] = (int(TRAIN_END), int(COMMIT_END), int(REVEAL_END)),
) -> RoundView:
    """Publish a view of round ``R`` (phase deadlines ``ends``)."""
    old = chain.rounds.get(R)
    v = dataclasses.replace(
        make_view(R, phase),
        seed=b"\x11" * 32,
        train_end=ends[0],
        commit_end=ends[1],
        reveal_end=ends[2],
        proposers=tuple(p.wallet for p in proposers),
        voters=tuple(v.wallet for v in voters),
        updates=updates
        if updates is not None
        else (old.updates if old else (NO_UPDATE,) * len(proposers)),
        votes=votes if votes is not None else (old.votes if old else (NO_VOTE,) * len(voters)),
    )
    chain.publish(dataclasses.replace(chain.latest.with_round(v), current=R))
    return v


class RoundSim:
    """The contract's side of round ``R`` as the roles see it: the test moves the
    phases (deadlines set from the clock at the move), the clients' transactions
    fill in updates and votes, and every change is published as a new view."""

    def __init__(self, chain: ChainFeed, proposers: list[Peer], voters: list[Peer]) -> None:
        self.feed, self.proposers, self.voters = chain, proposers, voters
        self.updates = [NO_UPDATE] * len(proposers)
        self.votes = [NO_VOTE] * len(voters)
        self.phase = Phase.TRAIN
        self.ends = (math.inf, math.inf, math.inf)  # train, commit, reveal

    def attach(self, role: Role) -> Role:
        role.client.on_call = functools.partial(self._on_call, role.me.wallet)
        return role

    def to(self, phase: Phase) -> RoundView:
        now = trio.current_time()
        train, commit, reveal = self.ends
        if phase is Phase.COMMIT:
            train, commit = now, now + COMMIT_SECONDS
        elif phase is Phase.REVEAL:
            commit, reveal = now, now + 20
        self.phase, self.ends = phase, (train, commit, reveal)
        return self.publish()

    def publish(self) -> RoundView:
        end = [int(t) if math.isfinite(t) else 0 for t in self.ends]
        return set_round(
            self.feed,
            self.phase,
            self.proposers,
            self.voters,
            tuple(self.updates),
            tuple(self.votes),
            ends=(end[0], end[1], end[2]),
        )

    def _on_call(self, wallet: str, name: str, args: tuple[Any, ...]) -> None:
        if name == "submit_update":
            seat = [p.wallet for p in self.proposers].index(wallet)
            self.updates[seat] = UpdateView(True, args[1], args[2], args[3])
        elif name in ("commit_vote", "reveal_vote"):
            seat = [v.wallet for v in self.voters].index(wallet)
            if name == "commit_vote":
                self.votes[seat] = dataclasses.replace(
                    self.votes[seat], committed=True, commitment=args[1]
                )
            else:
                self.votes[seat] = dataclasses.replace(
                    self.votes[seat], revealed=True, aggregate_hash=args[1]
                )
        self.publish()


class Net:
    """Gossip to every other node's inbox, and blob fetches from the holders' stores."""

    def __init__(self) -> None:
        self.nodes: dict[ID, Role] = {}
        self.down: set[ID] = set()  # nodes that serve nothing
        self.fetched_at: list[float] = []  # when each fetch started

    def join(self, role: Role) -> Role:
        self.nodes[role.me.peer] = role
        role.gossip.deliver = functools.partial(self._deliver, role.me.peer)
        return role

    def _deliver(self, origin: ID, msg: Any) -> None:
        for peer_id, node in self.nodes.items():
            if peer_id != origin:
                node.inbox.on_message(Received(origin, msg))

    async def fetch(
        self,
        p2p: Any,
        protocol: str,
        content_id: bytes,
        holders: list[ID],
        sink: FileSink,
        *,
        max_size: int,
        expected_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.fetched_at.append(trio.current_time())
        for h in holders:
            node = self.nodes.get(h)
            if node is None or h in self.down or not node.store.has(content_id):
                continue
            data = node.store.read_bytes(content_id)
            if len(data) > max_size:
                continue
            sink.begin(len(data))
            sink.write([data])
            sink.commit()
            return
        raise FetchFailed(content_id, [])
