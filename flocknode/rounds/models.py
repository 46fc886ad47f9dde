"""Global models by hash: stored as canonical bytes, loaded, fetched from peers.

A model's id in the content store is the SHA-256 of its canonical bytes, which
is also the hash the chain records, so a fetched model is verified by the
transfer itself (``fetch`` checks the digest before the file is published).

Every model of a task has the initial model's tensors and shapes (aggregation
keeps them), so its canonical size is known before a fetch starts: ``put``
records it (the node stores the initial model before any service starts) and
a fetch refuses a holder that announces any other size. A fetch serves a
deadline: the round phase that needs the model. The round's winning voters are
tried first, then nodes that only announced the model; each holder gets a
budget from the model's size and the time left (``attempt_budget``), so a
holder that dribbles is dropped for the next one while there is time.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
import trio
from libp2p.peer.id import ID

from flocknode.crypto import CanonicalReader, iter_canonical
from flocknode.p2p.content import FileSink
from flocknode.p2p.fetch import FetchFailed, fetch
from flocknode.p2p.framing import PROTOCOL_MODEL
from flocknode.p2p.host import P2PHost
from flocknode.store import ContentStore

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
MAX_MODEL_BYTES = 2 << 30
# Parsed models kept in memory: at most CACHE, and beyond the newest one at most
# CACHE_BYTES of tensors (a 100 MB model is kept once; the others are read
# from the store again when needed).
CACHE = 3
CACHE_BYTES = 128 << 20
READ_PIECE = 1 << 20
# A holder has SETUP seconds to answer (dial, negotiate, the size and hash) and
# must then deliver the model at HOLDER_RATE on average; it never gets more
# than SHARE of the time left, so one bad holder cannot use up the deadline.
ATTEMPT_SETUP_SECONDS = 5.0
HOLDER_RATE = float(1 << 20)  # bytes/s
ATTEMPT_SHARE = 1 / 3
MIN_ATTEMPT_SECONDS = 2.0


def attempt_budget(expected_size: int | None, time_left: float) -> float:
    """Seconds one holder may take to deliver a model of ``expected_size`` bytes."""
    size = MAX_MODEL_BYTES if expected_size is None else expected_size
    fair = ATTEMPT_SETUP_SECONDS + size / HOLDER_RATE
    return max(MIN_ATTEMPT_SECONDS, min(fair, time_left * ATTEMPT_SHARE))


def holder_order(winners: Sequence[ID], announced: Iterable[ID]) -> list[ID]:
    """The winning voters first (the chain says they hold the model), then the
    nodes that only announced it (anyone can announce any hash); no repeats."""
    return list(dict.fromkeys([*winners, *sorted(announced, key=str)]))


class ModelBook:
    def __init__(self, store: ContentStore, p2p: P2PHost | None) -> None:
        self.store = store
        self.p2p = p2p
        self._cache: OrderedDict[bytes, State] = OrderedDict()
        # loads run in worker threads (load_async, take_async): one cache change at a time
        self._cache_lock = threading.Lock()
        self._locks: dict[bytes, trio.Lock] = {}
        self.model_size: int | None = None  # canonical bytes of the task's models

    def has(self, model_hash: bytes) -> bool:
        return model_hash in self._cache or self.store.has(model_hash)

    def put(self, state: Mapping[str, torch.Tensor], cache: bool = True) -> bytes:
        """Store a model (blocking); returns its hash. ``cache``: also keep its
        tensors in memory (else ``load`` reads it from the store)."""
        size = 0
        with self.store.writer() as w:
            for piece in iter_canonical(state):
                w.write(piece)
                size += piece.nbytes
            h = w.commit()
        self.model_size = size
        if cache:
            self._remember(h, dict(state))
        return h

    def load(self, model_hash: bytes) -> State:
        """The model's tensors (blocking; cached). KeyError if the store lacks it."""
        with self._cache_lock:
            state = self._cache.get(model_hash)
            if state is not None:
                self._cache.move_to_end(model_hash)
                return state
        state = self.read(model_hash)
        self._remember(model_hash, state)
        return state

    def read(self, model_hash: bytes) -> State:
        """The model's tensors read from the store, never cached (blocking)."""
        # fed in pieces: the bytes land in the tensors, never all in memory twice
        reader = CanonicalReader(max_bytes=MAX_MODEL_BYTES)
        with self.store.open(model_hash) as f:
            while piece := f.read(READ_PIECE):
                reader.feed(piece)
        return reader.finish()

    def take(self, model_hash: bytes) -> State:
        """The model's tensors for the caller to change (a proposer trains on them),
        read from the store. The cache is emptied first: the caller is about to
        use the most memory a node uses, and the cached models (this one, or a
        voter's candidate that did not become the global model) are one read
        away. Later ``load`` calls read the store again."""
        with self._cache_lock:
            self._cache.clear()
        return self.read(model_hash)

    async def load_async(self, model_hash: bytes) -> State:
        return await trio.to_thread.run_sync(self.load, model_hash)

    async def take_async(self, model_hash: bytes) -> State:
        return await trio.to_thread.run_sync(self.take, model_hash)

    async def put_async(self, state: Mapping[str, torch.Tensor], cache: bool = True) -> bytes:
        return await trio.to_thread.run_sync(self.put, state, cache)

    async def fetch(
        self,
        model_hash: bytes,
        winners: Sequence[ID],
        announced: Iterable[ID] = (),
        *,
        deadline: float = math.inf,
    ) -> bool:
        """Fetch a model from the first holder that delivers it, by ``deadline``
        (trio's clock, waiting for another fetch of the same model included);
        True when it is held."""
        lock = self._locks.setdefault(model_hash, trio.Lock())
        acquired = False
        with trio.move_on_at(deadline):
            await lock.acquire()
            acquired = True
        if not acquired:
            return self.has(model_hash)
        try:
            return await self._fetch_locked(model_hash, holder_order(winners, announced), deadline)
        finally:
            lock.release()

    async def _fetch_locked(self, model_hash: bytes, peers: list[ID], deadline: float) -> bool:
        if self.has(model_hash):
            return True
        if not peers or self.p2p is None:
            return False
        sink = FileSink(self.store.object_path(model_hash))
        size = self.model_size
        try:
            res = await fetch(
                self.p2p,
                PROTOCOL_MODEL,
                model_hash,
                peers,
                sink,
                max_size=MAX_MODEL_BYTES if size is None else size,
                expected_size=size,
                deadline=deadline,
                attempt_seconds=lambda left: attempt_budget(size, left),
            )
        except FetchFailed as e:
            log.info("model fetch failed model=%s attempts=%s", model_hash.hex()[:12], e)
            return False
        log.info("model fetched model=%s from=%s", model_hash.hex()[:12], res.holder)
        return True

    def forget(self, hashes: Iterable[bytes]) -> None:
        """Drop cached tensors of models removed from the store (has() then says no)."""
        for h in hashes:
            with self._cache_lock:
                self._cache.pop(h, None)
            lock = self._locks.get(h)
            if lock is not None and not lock.locked():
                del self._locks[h]

    def _remember(self, h: bytes, state: State) -> None:
        with self._cache_lock:
            self._cache[h] = state
            self._cache.move_to_end(h)
            while len(self._cache) > CACHE or (
                len(self._cache) > 1 and sum(map(_nbytes, self._cache.values())) > CACHE_BYTES
            ):
                self._cache.popitem(last=False)


def _nbytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())
