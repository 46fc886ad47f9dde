"""Finding 13: per-sender token buckets and the library log limiter, on an injected clock."""

from __future__ import annotations

import logging

from flocknode.logs import LibraryLogLimiter, limit_library_logs
from flocknode.p2p.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_finding13_limiter_bounds_each_sender_and_kind_separately() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=10, clock=clock)
    flood = sum(limiter.allow(("attacker", "UpdateAnnounce")) for _ in range(1000))
    assert flood == 10  # the burst, then nothing while the clock stands still
    assert limiter.allow(("attacker", "ModelAvailable"))  # another kind has its own bucket
    assert limiter.allow(("honest", "UpdateAnnounce"))  # another sender is untouched
    clock.now = 2.5
    assert sum(limiter.allow(("attacker", "UpdateAnnounce")) for _ in range(100)) == 2
    clock.now = 1000.0  # refills up to the burst, never beyond
    assert sum(limiter.allow(("attacker", "UpdateAnnounce")) for _ in range(100)) == 10


def test_finding13_limiter_table_stays_bounded_and_keeps_busy_senders() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_keys=8)
    for _ in range(2):
        limiter.allow("busy")  # empty bucket: must not be forgotten (it would refill)
    for i in range(100):
        clock.now += 0.001
        limiter.allow(f"passer-by-{i}")
    assert len(limiter) <= 8
    assert not limiter.allow("busy")


def test_finding13_library_log_limiter_holds_back_and_counts_per_line() -> None:
    clock = Clock()
    limiter = LibraryLogLimiter(burst=10, interval=60.0, clock=clock)
    logger = logging.getLogger("libp2p.test_finding13")
    logger.propagate = False
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    def flooded_line(i: int) -> None:  # one code location: one kind of line
        logger.warning("Rate limit exceeded for peer %s on topic %s", i, "t")

    logger.addHandler(Keep())
    logger.addFilter(limiter)
    logger.setLevel(logging.INFO)  # not the libp2p level an earlier test left behind
    try:
        for i in range(1000):
            flooded_line(i)
        for _ in range(3):
            logger.debug("asked for by the operator")  # debug is not limited
        logger.setLevel(logging.DEBUG)
        for _ in range(3):
            logger.debug("asked for by the operator")
        assert len(kept) == 10 + 3
        assert limiter.suppressed["libp2p.test_finding13"] == 990
        clock.now = 61.0
        flooded_line(0)
        assert kept[-1].suppressed == 990  # type: ignore[attr-defined]
    finally:
        logger.removeFilter(limiter)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)


def test_finding13_library_limiter_reaches_every_libp2p_logger_once() -> None:
    limiter = LibraryLogLimiter()
    later = logging.getLogger("libp2p.test_finding13.imported_later")
    try:
        limit_library_logs(limiter)
        limit_library_logs(limiter)
        assert later.filters.count(limiter) == 1
        assert limiter in logging.getLogger("libp2p").filters
        assert limiter not in logging.getLogger("flocknode").filters
    finally:
        for name in list(logging.root.manager.loggerDict):
            if name.split(".")[0] == "libp2p":
                logging.getLogger(name).removeFilter(limiter)
