"""Which holders a global-model fetch tries, in what order, for how long each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import trio
import trio.testing

from flocknode.crypto import canonical_size
from flocknode.identity.keys import PeerKey
from flocknode.rounds import models as models_mod
from flocknode.rounds.models import (
    ATTEMPT_SETUP_SECONDS,
    HOLDER_RATE,
    MIN_ATTEMPT_SECONDS,
    ModelBook,
    attempt_budget,
    holder_order,
)
from flocknode.store import ContentStore


def test_finding3_winning_voters_are_tried_before_announced_holders() -> None:
    w1, w2, a1, a2 = (PeerKey.generate().peer_id for _ in range(4))
    order = holder_order([w1, w2], [a2, w1, a1])
    assert order[:2] == [w1, w2]  # the chain's word first, in the given order
    assert set(order[2:]) == {a1, a2} and len(order) == 4  # announcers after, no repeats
    assert holder_order([], [a1]) == [a1]


def test_finding3_holder_budget_comes_from_the_model_size_and_the_time_left() -> None:
    size = 4 << 20  # 4 MiB
    fair = ATTEMPT_SETUP_SECONDS + size / HOLDER_RATE
    assert attempt_budget(size, 3600.0) == fair  # plenty of time: what the size needs
    assert attempt_budget(size, 12.0) == 4.0  # little time: a third of it
    assert attempt_budget(size, 1.0) == MIN_ATTEMPT_SECONDS
    # a claimed size plays no part: only the task's model size (2 GiB only when unknown)
    assert attempt_budget(None, 60.0) == 20.0


def test_finding3_the_expected_model_size_is_the_canonical_size_of_the_task_model(
    tmp_path: Path,
) -> None:
    state = {"a": torch.zeros(3, 4), "b": torch.ones(7)}
    book = ModelBook(ContentStore(tmp_path), None)
    assert book.model_size is None
    h = book.put(state)
    assert book.model_size == canonical_size(state) == book.store.size(h)


async def test_finding3_waiting_for_another_fetch_of_the_model_ends_at_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    book = ModelBook(ContentStore(tmp_path), None)
    h = bytes(32)
    busy = book._locks.setdefault(h, trio.Lock())

    async def stuck_fetch() -> None:  # another fetch of the same model, stuck on a holder
        async with busy:
            await trio.sleep(3600)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stuck_fetch)
        await trio.sleep(0.1)
        t0 = trio.current_time()
        assert not await book.fetch(h, [PeerKey.generate().peer_id], deadline=t0 + 5)
        assert trio.current_time() - t0 == 5
        nursery.cancel_scope.cancel()


def test_large_models_are_kept_in_memory_once(tmp_path: Path, monkeypatch: Any) -> None:
    """Beyond the newest model, the cache keeps at most CACHE_BYTES of tensors."""
    book = ModelBook(ContentStore(tmp_path), None)
    a, b = ({"w": torch.full((100,), float(i))} for i in range(2))  # 400 bytes each
    monkeypatch.setattr(models_mod, "CACHE_BYTES", 600)
    ha, hb = book.put(a), book.put(b)  # a is dropped from memory, b kept
    first_b = book.load(hb)
    assert book.load(hb) is first_b
    first_a = book.load(ha)  # read from the store again; b is dropped now
    assert torch.equal(first_a["w"], a["w"]) and book.load(ha) is first_a
    assert book.load(hb) is not first_b
    monkeypatch.setattr(models_mod, "CACHE_BYTES", 10_000)
    book.load(ha), book.load(hb)
    assert book.load(ha) is book.load(ha) and book.load(hb) is book.load(hb)  # small: both kept


def test_a_model_stored_without_caching_is_read_from_the_store(tmp_path: Path) -> None:
    """``put(cache=False)`` (a voter's new model): stored, the cache left as it was."""
    book = ModelBook(ContentStore(tmp_path), None)
    old = book.load(book.put({"w": torch.zeros(4)}))
    h = book.put({"w": torch.arange(4.0)}, cache=False)
    assert list(book._cache.values()) == [old] and book.has(h)
    assert torch.equal(book.load(h)["w"], torch.arange(4.0))


def test_a_taken_model_is_the_callers_own_and_empties_the_cache(tmp_path: Path) -> None:
    """A proposer trains on the tensors ``take`` gives: changing them changes no
    cached model, no model stays cached meanwhile, and the next ``load`` reads
    the store again."""
    book = ModelBook(ContentStore(tmp_path), None)
    book.load(book.put({"w": torch.zeros(4)}))  # a voter's candidate, say
    h = book.put({"w": torch.arange(4.0)})
    cached = book.load(h)
    mine = book.take(h)
    assert book._cache == {}  # nothing cached while the caller trains
    assert mine["w"].data_ptr() != cached["w"].data_ptr()
    mine["w"].add_(100.0)
    again = book.load(h)
    assert again is not cached and torch.equal(again["w"], torch.arange(4.0))
    assert torch.equal(book.read(h)["w"], torch.arange(4.0)) and book.read(h) is not again
