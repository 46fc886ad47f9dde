"""What the proposer and voter paths are given: ``RoleDeps``, and what they read of it.

``RoleDeps`` is built once by the node and passed to ``run_proposer`` /
``run_voter`` by the role runner. References only, no logic. ``RoleReads`` is
what both paths read (``ProposerDeps`` is exactly that; ``VoterDeps`` adds what
only a voter uses), so a test hands a path a stand-in with just those. Two names to keep apart:
``feed`` is the chain follower's feed of published snapshots (reading it never
asks the chain anything; a role waits on it for the chain to move), ``client``
is the task client that sends transactions and reads the chain directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flocknode.chain.client import AsyncTaskClient
from flocknode.chain.types import TaskParams
from flocknode.identity import BoxKey
from flocknode.learning.learner import RoundLearner
from flocknode.learning.settings import TaskSettings
from flocknode.p2p.gossip import TaskGossip
from flocknode.p2p.host import P2PHost
from flocknode.rounds.byzantine import RoleStrategy
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.snapshot import ChainFeed
from flocknode.store import ContentStore, Journal
from flocknode.store.residual import ResidualStore
from flocknode.store.spill import SpillDir


class RoleReads(Protocol):
    """The collaborators both role paths read."""

    @property
    def client(self) -> AsyncTaskClient: ...
    @property
    def feed(self) -> ChainFeed: ...
    @property
    def journal(self) -> Journal: ...
    @property
    def store(self) -> ContentStore: ...
    @property
    def models(self) -> ModelBook: ...
    @property
    def membership(self) -> ChainMembership: ...
    @property
    def learner(self) -> RoundLearner: ...
    @property
    def gossip(self) -> TaskGossip: ...
    @property
    def box_key(self) -> BoxKey: ...
    @property
    def metrics(self) -> RoundMetrics: ...
    @property
    def behaviour(self) -> RoleStrategy: ...
    @property
    def settings(self) -> TaskSettings: ...
    @property
    def residuals(self) -> ResidualStore: ...


@dataclass(frozen=True)
class RoleDeps:
    feed: ChainFeed  # published snapshots: the current round's views, the global model
    client: AsyncTaskClient  # transactions (submit, commit, reveal) and direct reads
    params: TaskParams
    settings: TaskSettings
    wallet: str
    box_key: BoxKey
    behaviour: RoleStrategy  # byzantine.Honest in production
    journal: Journal
    store: ContentStore
    models: ModelBook
    learner: RoundLearner
    p2p: P2PHost
    gossip: TaskGossip
    inbox: Inbox
    membership: ChainMembership
    metrics: RoundMetrics
    residuals: ResidualStore  # the proposer's error feedback for compressed updates
    spill: SpillDir  # the voter's opened updates, on disk
