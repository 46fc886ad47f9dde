"""What a ``latency`` fault does to the bytes of one connection (pure; the relay
that applies it is cluster/relay.py).

A TCP connection delivers every byte, once and in order, however bad the path
under it: loss shows as delay (the sender retransmits after its retransmission
timeout, the receiver's kernel holds what came after the gap until it is
filled). So the relay never drops or reorders bytes inside a connection; per
direction, each chunk it read gets a release time from :class:`Schedule`:

- its arrival plus the fault's one-way delay (drawn once per fault in
  ``LinkFault.delay``) plus a jitter drawn per chunk in ``+-jitter``;
- with probability ``loss``, one retransmission timeout more: ``rto`` for a
  first loss, doubling for each consecutive one up to ``rto_cap`` (TCP's
  exponential backoff), back to ``rto`` after a chunk that got through;
- never earlier than the previous chunk's release (FIFO: a chunk queued behind
  a held one waits for it, as bytes behind a gap do);
- with probability ``cut`` the connection is cut (reset) at that chunk
  instead, as a middlebox that gives up on a flow does.

Without a fault a chunk is released on arrival, still behind the one before.
The draws come from an injected ``random.Random`` and the times from the
caller's clock, so a schedule is a function of the seed and the arrivals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class LinkFault:
    """The settings of a latency fault (seconds, and shares of chunks)."""

    delay: tuple[float, float] = (0.05, 0.30)  # one-way delay, drawn once per fault
    jitter: float = 0.02  # +- per chunk
    loss: float = 0.05  # chunks held back for a retransmission timeout
    rto: float = 0.2  # the first retransmission timeout
    rto_cap: float = 3.2  # the backoff's cap: 0.2, 0.4, ... 3.2 s
    cut: float = 0.002  # chunks at which the connection is cut instead

    def __post_init__(self) -> None:
        lo, hi = self.delay
        if not (0 <= lo <= hi and self.jitter >= 0 and 0 < self.rto <= self.rto_cap):
            raise ValueError(f"not a link fault: {self}")
        if not (0 <= self.loss < 1 and 0 <= self.cut < 1):
            raise ValueError(f"loss and cut are shares below 1: {self}")


@dataclass(frozen=True)
class ActiveFault:
    """A fault as applied: its settings and the one-way delay drawn for it."""

    settings: LinkFault
    delay: float

    @classmethod
    def draw(cls, settings: LinkFault, rng: random.Random) -> ActiveFault:
        return cls(settings, rng.uniform(*settings.delay))


@dataclass(frozen=True)
class Release:
    """When a chunk goes on, and what happened to it."""

    at: float
    lost: int = 0  # retransmission timeouts it was held for (0: none)
    cut: bool = False  # cut the connection here instead of sending it


class Schedule:
    """Release times of the chunks of one direction of one connection."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last = float("-inf")  # the previous chunk's release
        self._losses = 0  # consecutive chunks held for a retransmission timeout

    def release(self, now: float, fault: ActiveFault | None) -> Release:
        """The release of a chunk that arrived at ``now`` while ``fault`` holds."""
        if fault is None:
            self._losses = 0
            self._last = max(now, self._last)
            return Release(self._last)
        f = fault.settings
        rng = self._rng
        if rng.random() < f.cut:
            return Release(max(now, self._last), cut=True)
        at = now + max(0.0, fault.delay + rng.uniform(-f.jitter, f.jitter))
        lost = 0
        if rng.random() < f.loss:
            at += min(f.rto * 2**self._losses, f.rto_cap)
            self._losses += 1
            lost = self._losses
        else:
            self._losses = 0
        self._last = max(at, self._last)
        return Release(self._last, lost=lost)


def local_ports(tcp_table: str, inodes: set[int]) -> set[int]:
    """The local ports of the sockets ``inodes`` names in ``tcp_table`` (the
    text of /proc/net/tcp or tcp6: a header line, then ``sl local_address
    rem_address st ... uid timeout inode``, addresses as ``HEXADDR:HEXPORT``)."""
    out: set[int] = set()
    for line in tcp_table.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            if int(parts[9]) in inodes:
                out.add(int(parts[1].rsplit(":", 1)[1], 16))
        except ValueError:
            continue
    return out
