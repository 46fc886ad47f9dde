"""The model keeper: makes sure the node holds the current global model, and says so.

On every published snapshot:
- a global model the node lacks is fetched (one fetch at a time; after a
  failed one, the next starts ``MODEL_FETCH_PAUSE`` later) from the round's
  winning voters first, then any node that announced it, by the deadline of the
  phase that needs it (``model_needed_by``);
- a held global model is evaluated once on the test split (status, plots),
  when the node has one (a tester's ``[data] test_path``; a participant has
  none and evaluates nothing), and announced (``ModelAvailable``) every ``MODEL_ANNOUNCE_SECONDS``.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Protocol

import trio
from libp2p.peer.id import ID

from flocknode.chain.errors import ChainError
from flocknode.chain.types import Phase, RoundView, TaskParams
from flocknode.learning.learner import RoundLearner
from flocknode.p2p.messages import ModelAvailable
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.roles import model_needed_until
from flocknode.rounds.service import Every, SingleFlight, SnapshotService, limited_log
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.rounds.windows import EVALUATED_MODELS_KEPT

log = logging.getLogger(__name__)

MODEL_ANNOUNCE_SECONDS = 5.0
MIN_MODEL_FETCH_SECONDS = 10.0  # the shortest deadline a global-model fetch gets
MODEL_FETCH_PAUSE = 1.0  # between a failed global-model fetch and the next


class ModelChainReader(Protocol):
    def global_model_round(self) -> Awaitable[int]: ...
    def get_round(self, round_number: int, /) -> Awaitable[RoundView]: ...


class Publisher(Protocol):
    def publish(self, message: ModelAvailable) -> Awaitable[None]: ...


def model_needed_by(snapshot: ChainSnapshot, chain_now: float, wallet: str, train: int) -> float:
    """Seconds until this node needs the global model: until the end of the phase
    its role in the current round works in, else one train phase (``train``
    seconds; the next round trains from it). Never less than MIN_MODEL_FETCH_SECONDS."""
    view = snapshot.view
    need = chain_now + train
    role = view.role_of(wallet) if view is not None else None
    if view is not None and role is not None and view.phase in (Phase.TRAIN, Phase.COMMIT):
        need = model_needed_until(role[0], view)
    return max(need - chain_now, MIN_MODEL_FETCH_SECONDS)


class ModelKeeper(SnapshotService):
    name = "models"

    def __init__(
        self,
        client: ModelChainReader,
        feed: ChainFeed,
        models: ModelBook,
        inbox: Inbox,
        gossip: Publisher,
        learner: RoundLearner | None,
        params: TaskParams,
        wallet: str,
        metrics: RoundMetrics,
    ) -> None:
        super().__init__(metrics, feed)
        self.client = client
        self.models = models
        self.inbox = inbox
        self.gossip = gossip
        self.learner = learner
        self.params = params
        self.wallet = wallet
        self._fetch = SingleFlight(after_failure=MODEL_FETCH_PAUSE, clock=feed.clock)
        self._announce = Every(MODEL_ANNOUNCE_SECONDS, feed.clock)
        self._evaluated: OrderedDict[bytes, None] = OrderedDict()

    def holds_global_model(self) -> bool:
        return self.models.has(self.feed.global_model_hash)

    def on_snapshot(self, snapshot: ChainSnapshot) -> None:
        h = snapshot.global_model_hash
        if not self.models.has(h):
            self._fetch.start(self.spawn, self._fetch_model, h)
            return
        if h not in self._evaluated and self.learner is not None and self.learner.has_test:
            self._evaluated[h] = None
            while len(self._evaluated) > EVALUATED_MODELS_KEPT:
                self._evaluated.popitem(last=False)
            self.spawn(self._evaluate_model, h)
        if self._announce.due():
            self._announce.mark()
            self.spawn(self._announce_model, h)

    async def _fetch_model(self, h: bytes) -> bool:
        """Fetch ``h`` by the time the node needs it; True once it is held."""
        feed = self.feed
        left = model_needed_by(feed.latest, feed.now(), self.wallet, self.params.train_seconds)
        deadline = trio.current_time() + left
        try:
            winners = await self._winning_voters(h)
            announced = self.inbox.model_holders.get(h, ())
            fetched = await self.models.fetch(h, winners, announced, deadline=deadline)
        except ChainError as e:
            limited_log.warning("chain", "model fetch: chain error %s", e)
            return False
        if fetched:
            log.info("global model applied model=%s", h.hex()[:12])
            self._announce.expire()
        return fetched

    async def _winning_voters(self, h: bytes) -> list[ID]:
        """The peers of the voters whose revealed aggregate was ``h`` (shuffled)."""
        r = await self.client.global_model_round()
        if r == 0:
            return []
        latest = self.feed.latest
        view = latest.rounds.get(r) or await self.client.get_round(r)
        peers = []
        for wallet, vote in zip(view.voters, view.votes, strict=True):
            if vote.revealed and vote.aggregate_hash == h:
                m = latest.registry.by_wallet(wallet)
                if m is not None:
                    peers.append(m.peer_id)
        random.shuffle(peers)
        return peers

    async def _announce_model(self, h: bytes) -> None:
        size = self.models.store.size(h)
        if not size:
            return
        rnd = max(self.feed.current, 1)
        try:
            await self.gossip.publish(ModelAvailable(rnd, h, size))
        except Exception as e:
            log.debug("model announce failed: %r", e)

    async def _evaluate_model(self, h: bytes) -> None:
        """Test-split accuracy of each global model this node applies (status, plots)."""
        assert self.learner is not None  # on_snapshot evaluates only with a test split
        try:
            r = await self.client.global_model_round()
            state = await self.models.load_async(h)
            ev = await self.learner.evaluate_async(state, "test")
            self.metrics.model_accuracy(r, ev.accuracy)
            log.info("global model round=%d test_accuracy=%.4f", r, ev.accuracy)
        except Exception as e:
            log.warning("evaluating the global model failed: %r", e)
