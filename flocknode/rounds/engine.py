"""The round engine: the node's round services, composed in start order.

- ``GossipIntake``: validated gossip into the inbox;
- ``ChainFollower``: reads the chain and publishes ``ChainSnapshot``s to the
  ``ChainFeed`` (nobody else writes chain state);
- ``TxWatch``: broadcast again the wallet's transactions a reorganisation dropped;
- ``KeeperService``: open and elect rounds when due, one node at a time;
- ``ModelKeeper``: fetch, evaluate and announce the global model;
- ``RoleRunner``: this node's proposer or voter path when it holds a seat;
- ``PruneService``: store and journal retention (when ``store.keep_rounds`` is set).

Each takes only the collaborators it uses and has the same lifecycle
(``run(task_status=...)`` in a nursery, ``stop()``); the node starts them in
``services`` order and stops them in reverse. All state a service needs after a
crash is on the chain or in the journal.
"""

from __future__ import annotations

from flocknode.chain.types import Phase, TaskParams
from flocknode.rounds.context import RoleDeps
from flocknode.rounds.follower import ChainFollower
from flocknode.rounds.intake import GossipIntake
from flocknode.rounds.keeper_service import KeeperService
from flocknode.rounds.model_keeper import ModelKeeper
from flocknode.rounds.pruning import PruneService
from flocknode.rounds.roles import RoleRunner
from flocknode.rounds.service import Service
from flocknode.rounds.snapshot import ChainSnapshot
from flocknode.rounds.txwatch import TxWatch
from flocknode.store.retention import StorePruner


def task_complete(snapshot: ChainSnapshot, params: TaskParams) -> bool:
    """The task's last round is finalized."""
    view = snapshot.view
    return bool(
        view is not None
        and view.phase is Phase.FINALIZED
        and snapshot.current >= params.total_rounds
    )


class RoundServices:
    """The round services of one node and what the status page asks of them."""

    def __init__(
        self, deps: RoleDeps, pruner: StorePruner | None = None, poll: float = 0.1
    ) -> None:
        self.deps = deps
        self.feed = deps.feed
        self.intake = GossipIntake(deps.gossip.messages, deps.inbox, deps.metrics)
        self.follower = ChainFollower(deps.client, self.feed, deps.membership, deps.metrics, poll)
        self.txwatch = TxWatch(deps.client, self.feed, deps.metrics)
        self.keeper = KeeperService(deps.client, self.feed, deps.params, deps.wallet, deps.metrics)
        self.model_keeper = ModelKeeper(
            deps.client,
            self.feed,
            deps.models,
            deps.inbox,
            deps.gossip,
            deps.learner,
            deps.params,
            deps.wallet,
            deps.metrics,
        )
        self.roles = RoleRunner(deps)
        self.pruner = (
            PruneService(deps.client, self.feed, pruner, deps.journal, deps.models, deps.metrics)
            if pruner is not None
            else None
        )

    @property
    def services(self) -> list[Service]:
        """Start order: the inbox and the chain feed first, their readers after."""
        out: list[Service] = [
            self.intake,
            self.follower,
            self.txwatch,
            self.keeper,
            self.model_keeper,
            self.roles,
        ]
        if self.pruner is not None:
            out.append(self.pruner)
        return out

    @property
    def without_task_code(self) -> list[Service]:
        """The services that never call the task's code, in start order: the node
        starts them while its task worker warms up, so a node restarted in a
        reveal phase reveals its journaled vote at once; the others (opening
        rounds, fetching and evaluating models) start once the worker is ready."""
        return [self.intake, self.follower, self.txwatch, self.roles]

    @property
    def ready(self) -> bool:
        """The chain is readable and the node holds the current global model."""
        return self.follower.healthy and self.model_keeper.holds_global_model()

    @property
    def complete(self) -> bool:
        return task_complete(self.feed.latest, self.deps.params)

    @property
    def last_error(self) -> str:
        return self.follower.last_error
