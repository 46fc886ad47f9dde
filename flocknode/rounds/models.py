"""Global models by hash: stored as canonical bytes, loaded, fetched from peers.

A model's id in the content store is the SHA-256 of its canonical bytes, which
is also the hash the chain records, so a fetched model is verified by the
transfer itself (``fetch`` checks the digest before the file is published).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
import trio
from libp2p.peer.id import ID

from flocknode.crypto import iter_canonical, parse_canonical
from flocknode.p2p.content import FileSink
from flocknode.p2p.framing import PROTOCOL_MODEL
from flocknode.p2p.host import P2PHost
from flocknode.p2p.streams import FetchFailed, fetch
from flocknode.store import ContentStore

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
MAX_MODEL_BYTES = 2 << 30
CACHE = 3


class ModelBook:
    def __init__(self, store: ContentStore, p2p: P2PHost | None) -> None:
        self.store = store
        self.p2p = p2p
        self._cache: OrderedDict[bytes, State] = OrderedDict()
        self._locks: dict[bytes, trio.Lock] = {}

    def has(self, model_hash: bytes) -> bool:
        return model_hash in self._cache or self.store.has(model_hash)

    def put(self, state: Mapping[str, torch.Tensor]) -> bytes:
        """Store a model (blocking); returns its hash."""
        with self.store.writer() as w:
            for piece in iter_canonical(state):
                w.write(piece)
            h = w.commit()
        self._remember(h, dict(state))
        return h

    def load(self, model_hash: bytes) -> State:
        """The model's tensors (blocking; cached). KeyError if the store lacks it."""
        if model_hash in self._cache:
            self._cache.move_to_end(model_hash)
            return self._cache[model_hash]
        state = parse_canonical(self.store.read_bytes(model_hash), max_bytes=MAX_MODEL_BYTES)
        self._remember(model_hash, state)
        return state

    async def load_async(self, model_hash: bytes) -> State:
        return await trio.to_thread.run_sync(self.load, model_hash)

    async def put_async(self, state: Mapping[str, torch.Tensor]) -> bytes:
        return await trio.to_thread.run_sync(self.put, state)

    async def fetch(self, model_hash: bytes, holders: Iterable[ID]) -> bool:
        """Fetch a model from the first holder that delivers it; True when it is held."""
        lock = self._locks.setdefault(model_hash, trio.Lock())
        async with lock:
            if self.has(model_hash):
                return True
            peers = list(dict.fromkeys(holders))
            if not peers or self.p2p is None:
                return False
            sink = FileSink(self.store.object_path(model_hash))
            try:
                res = await fetch(
                    self.p2p, PROTOCOL_MODEL, model_hash, peers, sink, max_size=MAX_MODEL_BYTES
                )
            except FetchFailed as e:
                log.info("model fetch failed model=%s attempts=%s", model_hash.hex()[:12], e)
                return False
            log.info("model fetched model=%s from=%s", model_hash.hex()[:12], res.holder)
            return True

    def forget(self, hashes: Iterable[bytes]) -> None:
        """Drop cached tensors of models removed from the store (has() then says no)."""
        for h in hashes:
            self._cache.pop(h, None)
            lock = self._locks.get(h)
            if lock is not None and not lock.locked():
                del self._locks[h]

    def _remember(self, h: bytes, state: State) -> None:
        self._cache[h] = state
        self._cache.move_to_end(h)
        while len(self._cache) > CACHE:
            self._cache.popitem(last=False)
