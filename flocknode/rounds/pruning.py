"""The prune service: keeps the store and the journal to the last rounds.

Once per finished round, after the node applied (holds) the round's global
model, it names that model in the journal record of the round that produced it
(retention keeps the newest applied models by these records) and runs the
store's retention (``store.retention.StorePruner``) in a worker thread.
A failed prune is counted and retried after the next round; never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Protocol

import trio

from flocknode.chain.types import Phase
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.models import ModelBook
from flocknode.rounds.service import SingleFlight, SnapshotService
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot
from flocknode.store import Journal
from flocknode.store.retention import StorePruner

log = logging.getLogger(__name__)


class ModelRoundReader(Protocol):
    def global_model_round(self) -> Awaitable[int]: ...
    def global_model_hash(self) -> Awaitable[bytes]: ...


def finished_round(snapshot: ChainSnapshot) -> int:
    """The last round that is over: the current one once finalized or voided, else
    the one before (opening a round closes the previous one first)."""
    view = snapshot.view
    done = view is not None and view.phase in (Phase.FINALIZED, Phase.VOIDED)
    return snapshot.current if done else snapshot.current - 1


class PruneService(SnapshotService):
    name = "pruner"

    def __init__(
        self,
        client: ModelRoundReader,
        feed: ChainFeed,
        pruner: StorePruner,
        journal: Journal,
        models: ModelBook,
        metrics: RoundMetrics,
    ) -> None:
        super().__init__(metrics, feed)
        self.client = client
        self.pruner = pruner
        self.journal = journal
        self.models = models
        self._flight = SingleFlight(clock=feed.clock)
        self.pruned_through = 0  # the last finished round the store was pruned for

    def on_snapshot(self, snapshot: ChainSnapshot) -> None:
        if not self.models.has(snapshot.global_model_hash):
            return
        finished = finished_round(snapshot)
        if finished < 1 or finished <= self.pruned_through:
            return
        self._flight.start(
            self.spawn, self._prune, snapshot.current, finished, snapshot.global_model_hash
        )

    async def _prune(self, current: int, finished: int, model: bytes) -> None:
        metrics = self.metrics
        try:
            await self._journal_applied(model)
            # objects not seen before are dated to this round: if the chain moved on
            # while we waited (slow RPC), date them to where it is now, never older
            current = max(current, self.feed.current)
            report = await trio.to_thread.run_sync(self.pruner.prune, current, finished, model)
        except Exception as e:  # housekeeping: retried after the next round, never fatal
            metrics.inc("store_prune_errors")
            log.warning("store prune failed round=%d error=%r", finished, e)
            return
        finally:
            self.pruned_through = max(self.pruned_through, finished)
        self.models.forget(report.removed)
        metrics.inc("store_pruned_objects", n=report.objects)
        metrics.inc("store_pruned_bytes", n=report.bytes_freed)
        metrics.inc("journal_pruned_records", n=report.records)
        if report.objects or report.records:
            log.info(
                "store pruned round=%d objects=%d bytes_freed=%d journal_records=%d "
                "kept_objects=%d kept_bytes=%d",
                finished,
                report.objects,
                report.bytes_freed,
                report.records,
                report.kept_objects,
                report.kept_bytes,
            )

    async def _journal_applied(self, model: bytes) -> None:
        """Name the held global model in the record of the round that produced it."""
        r = await self.client.global_model_round()
        if r < 1 or await self.client.global_model_hash() != model:
            return  # the initial model, or a round finalized meanwhile: next time
        if self.journal.get(r).applied_model != model.hex():
            await self.journal.update_async(r, applied_model=model.hex())
