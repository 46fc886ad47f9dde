"""The one lifecycle every round service has, and the single-flight helper.

A service is started with ``await nursery.start(service.run)``: ``run`` opens
the service's own nursery, starts its loops, reports started and returns once
``stop()`` was called (its tasks cancelled) or the enclosing scope is
cancelled. The node starts the services in dependency order and stops them in
reverse.

No exception from one loop iteration or one spawned task ends a service (the
node): it is counted (``engine_errors`` labelled with where it failed), logged
at most a few times a minute per kind, and the service goes on. Only
cancellation stops it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from flocknode.logs import PeerLog
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.snapshot import ChainFeed, ChainSnapshot

log = logging.getLogger(__name__)
limited_log = PeerLog(log)  # lines input from others can cause: a few per minute per kind

Job = Callable[..., Awaitable[Any]]


def count_error(metrics: RoundMetrics, where: str, e: BaseException) -> None:
    """Count and log (rate-limited) a failure a service survives."""
    metrics.inc("engine_errors", where)
    limited_log.warning(where, "engine %s failed, going on: %r", where, e)
    log.debug("engine %s failed", where, exc_info=e)


class Service:
    """Base of the round services: ``run(task_status=...)`` in a nursery, ``stop()``.

    A subclass implements ``start(nursery)`` (start its loops; it may await
    set-up) and uses ``spawn`` for tasks whose failure must not end it.
    """

    name = "service"

    def __init__(self, metrics: RoundMetrics) -> None:
        self.metrics = metrics
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.start(nursery)
                task_status.started()
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    async def start(self, nursery: trio.Nursery) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def spawn(self, fn: Job, *args: Any, where: str | None = None) -> None:
        """Start ``fn(*args)`` in the service's nursery; an exception it raises is
        counted under ``where`` (default: the function's name) and ends only that task."""
        assert self._nursery is not None, f"{self.name} is not running"
        label = where or getattr(fn, "__name__", "task").lstrip("_")
        self._nursery.start_soon(self._guarded, fn, args, label, name=label)

    async def _guarded(self, fn: Job, args: tuple[Any, ...], where: str) -> None:
        try:
            await fn(*args)
        except Exception as e:
            count_error(self.metrics, where, e)


class SnapshotService(Service):
    """A service that reacts to each snapshot the chain feed publishes.

    ``on_snapshot`` runs for the latest snapshot each time the feed moves (a
    snapshot published while it ran is skipped for the newest one,
    ``ChainFeed.snapshots``); it does not await: work that does goes to
    ``spawn`` or a ``SingleFlight``.
    """

    def __init__(self, metrics: RoundMetrics, feed: ChainFeed) -> None:
        super().__init__(metrics)
        self.feed = feed

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._follow)

    async def _follow(self) -> None:
        async for snapshot in self.feed.snapshots():
            self.on_snapshot(snapshot)

    def on_snapshot(self, snapshot: ChainSnapshot) -> None:
        raise NotImplementedError


class SingleFlight:
    """At most one run of a job at a time, optionally with a pause before the next.

    ``start`` claims the slot and spawns the job unless a run is in flight or
    the pause after the previous run has not passed (on ``clock``, trio's by
    default). The job's result decides the pause: a truthy result (or ``None``)
    waits ``after_success``, a falsy one or an exception ``after_failure``.
    """

    def __init__(
        self,
        *,
        after_success: float = 0.0,
        after_failure: float = 0.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.after_success = after_success
        self.after_failure = after_failure
        self.clock = clock
        self.busy = False
        self.next_at = -math.inf

    def ready(self) -> bool:
        return not self.busy and self.clock() >= self.next_at

    def start(self, spawn: Callable[..., None], fn: Job, *args: Any) -> bool:
        """Spawn ``fn(*args)`` through ``spawn`` if the slot is free; True if it was."""
        if not self.ready():
            return False
        self.busy = True
        spawn(self._run, fn, *args, where=getattr(fn, "__name__", "task").lstrip("_"))
        return True

    def allow_now(self) -> None:
        """Drop the pause: the next ``start`` may run at once (if no run is in flight)."""
        self.next_at = -math.inf

    async def _run(self, fn: Job, *args: Any) -> None:
        ok = False
        try:
            result = await fn(*args)
            ok = result is None or bool(result)
        finally:
            self.busy = False
            self.next_at = self.clock() + (self.after_success if ok else self.after_failure)


class Every:
    """A throttle: ``due()`` once ``seconds`` passed since the last ``mark()`` (on ``clock``)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = trio.current_time) -> None:
        self.seconds = seconds
        self.clock = clock
        self._at = -math.inf

    def due(self) -> bool:
        return self.clock() - self._at >= self.seconds

    def mark(self) -> None:
        self._at = self.clock()

    def expire(self) -> None:
        """Make the next ``due()`` true."""
        self._at = -math.inf
