"""Stake and rewards over time: the node samples its participant record from the chain.

``StakeHistory.run`` is a service: every ``interval`` seconds it reads the
wallet's participant record (a view, in a worker thread) and keeps a bounded
history. A sample is kept when a value changed or ``keep_every`` seconds
passed, so weeks of a steady node fit in ``maxlen`` points.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from flocknode.chain.client import AsyncTaskClient
from flocknode.chain.errors import ChainError
from flocknode.logs import PeerLog
from flocknode.status import StakeRecord, StakeStatus

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
_limited = PeerLog(log)


class StakeHistory:
    def __init__(
        self,
        client: AsyncTaskClient,
        wallet: str,
        current_round: Any = lambda: 0,
        interval: float = 10.0,
        keep_every: float = 600.0,
        maxlen: int = 360,
    ) -> None:
        self._client = client
        self._wallet = wallet
        self._current_round = current_round
        self.interval = interval
        self.keep_every = keep_every
        self.samples: deque[StakeRecord] = deque(maxlen=maxlen)
        self.latest: StakeRecord | None = None
        self.min_stake = 0
        self.errors = 0  # samples that failed (chain errors and anything else)
        self._stop = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    def record(self, sample: StakeRecord) -> None:
        """Keep ``sample`` if a value changed or the last kept one is old."""
        self.latest = sample
        last = self.samples[-1] if self.samples else None
        if last is None or sample.values != last.values or sample.at - last.at >= self.keep_every:
            self.samples.append(sample)

    async def sample_once(self) -> None:
        p = await self._client.participant(self._wallet)
        if not self.min_stake:
            self.min_stake = (await self._client.params()).min_stake
        self.record(
            StakeRecord(
                at=time.time(),
                round=int(self._current_round()),
                stake=p.stake,
                rewards=p.rewards,
                slashed=p.slashed,
                pending_unstake=p.pending_unstake,
            )
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stop.is_set():
            try:
                await self.sample_once()
            except ChainError as e:
                self.errors += 1
                log.debug("stake sample failed: %s", e)
            except Exception as e:  # one bad sample never ends the service
                self.errors += 1
                _limited.warning("sample_error", "stake sample failed: %r", e)
            with trio.move_on_after(self.interval):
                await self._stop.wait()

    def snapshot(self) -> StakeStatus:
        return StakeStatus(
            latest=self.latest,
            min_stake=self.min_stake,
            history=tuple(self.samples),
            errors=self.errors,
        )
