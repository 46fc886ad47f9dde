"""Helpers shared by the content server and the fetcher: limits, exact reads, resets."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF


@dataclass(frozen=True)
class StreamLimits:
    """Per-peer stream caps and timeouts of /flock/blob/1 and /flock/model/1."""

    max_pending_per_peer: int = 2  # server: streams of one member whose request is not in
    max_pending_total: int = 512  # server: the same in all (bounded by members x per peer)
    max_streams_per_peer: int = 2  # server: streams served to one member at once
    max_streams_total: int = 64  # server: streams served at once
    request_timeout: float = 10.0  # server: to receive the 41-byte request
    write_timeout: float = 30.0  # server: per block of frames (4 MiB) and for the close
    open_timeout: float = 10.0  # requester: dial and negotiate the stream
    read_timeout: float = 10.0  # requester: per read without progress
    min_rate: float = 1 << 20  # requester: bytes/s a holder must average (else "too_slow")


class Truncated(Exception):
    """The stream ended before the bytes it must carry."""


async def read_exact(stream: INetStream, n: int) -> bytes:
    """Exactly ``n`` bytes (n is small: headers); Truncated at EOF."""
    buf = b""
    while len(buf) < n:
        try:
            piece = await stream.read(n - len(buf))
        except StreamEOF:
            raise Truncated() from None
        if not piece:
            raise Truncated()
        buf += piece
    return buf


RESET_TIMEOUT = 5.0  # a reset is one small frame, but its send waits on the socket


async def reset_quietly(stream: INetStream) -> None:
    """Reset, ignoring errors, for at most RESET_TIMEOUT: a peer that stopped reading
    its socket must not hold the caller (a handler and its slot) forever."""
    with trio.move_on_after(RESET_TIMEOUT), contextlib.suppress(Exception):
        await stream.reset()


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a two-task nursery (the other task was only cancelled)."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return group
