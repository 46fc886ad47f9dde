"""Journal writes from the event loop run in a worker thread and are durable on return."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from flocknode.store import journal as journal_mod
from flocknode.store.journal import Journal


async def test_a_write_runs_off_the_event_loop_and_is_durable_when_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(tmp_path)
    loop_ran = threading.Event()  # set by a trio task while the write is in progress
    real_write = journal_mod.atomic_write_text
    writer_threads: list[int] = []

    def write_once_the_loop_ran(path: Path, text: str) -> None:
        writer_threads.append(threading.get_ident())
        assert loop_ran.wait(timeout=30), "the event loop was blocked by the write"
        real_write(path, text)

    monkeypatch.setattr(journal_mod, "atomic_write_text", write_once_the_loop_ran)
    async with trio.open_nursery() as nursery:

        async def other_task() -> None:
            await trio.sleep(0)
            loop_ran.set()

        nursery.start_soon(other_task)
        rec = await j.update_async(7, role="voter", committed=True)
    assert writer_threads and writer_threads[0] != threading.get_ident()
    assert rec.committed and j.get(7).committed
    assert Journal(tmp_path).get(7).committed  # on disk, read back by a fresh journal


async def test_a_cancelled_caller_still_gets_its_write_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(tmp_path)
    started, release = threading.Event(), threading.Event()
    real_write = journal_mod.atomic_write_text

    def slow_write(path: Path, text: str) -> None:
        started.set()
        release.wait(timeout=30)
        real_write(path, text)

    monkeypatch.setattr(journal_mod, "atomic_write_text", slow_write)
    acted = False
    with trio.CancelScope() as scope:

        async def cancel_when_writing() -> None:
            await trio.to_thread.run_sync(started.wait)
            scope.cancel()
            release.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_writing)
            await j.update_async(3, revealed=True)
            acted = True  # what a role does after the write: never reached here
    assert scope.cancelled_caught and not acted
    assert Journal(tmp_path).get(3).revealed  # the write that started was completed
