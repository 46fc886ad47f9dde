"""Running a round role again while its phase is open.

A role step that raised (a chain error, a seal that failed, a model that left
the store) is run again after a growing pause, for as long as the phase it
serves is open and at most ``max_attempts`` times. The steps themselves are
journal-aware (``run_proposer`` and ``run_voter`` resume from what the journal
and the chain say is done), so a retry never trains twice, resubmits or
commits a second vote: it continues where the failed run stopped.

Time is passed in: ``now`` is the clock ``deadline`` is on (the chain's clock
for roles); pauses are trio sleeps, so a test drives both with MockClock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class RetryPolicy:
    first: float = 0.5  # seconds before the first retry
    factor: float = 2.0
    cap: float = 5.0  # longest pause
    max_attempts: int = 10  # runs in all, the first included

    def pause(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1-based)."""
        return min(self.cap, self.first * self.factor ** (failures - 1))


async def run_with_retries(
    step: Callable[[], Awaitable[None]],
    *,
    deadline: Callable[[], float],
    now: Callable[[], float],
    on_error: Callable[[Exception, int], None],
    policy: RetryPolicy = RetryPolicy(),
) -> bool:
    """Run ``step`` until it returns; True then, False once retrying is over.

    After a failure (``on_error(error, failures)`` is told) the step runs again
    only if the pause ends before ``deadline()`` (read afresh each time: the
    phase may have closed early) and attempts are left. Cancellation is never
    caught.
    """
    failures = 0
    while True:
        try:
            await step()
            return True
        except Exception as e:
            failures += 1
            on_error(e, failures)
        if failures >= policy.max_attempts:
            return False
        pause = policy.pause(failures)
        if now() + pause >= deadline():
            return False
        await trio.sleep(pause)
