"""Worker threads run inline under ``MockClock``.

With autojump, the virtual clock jumps whenever every task is blocked, and a
task awaiting ``trio.to_thread.run_sync`` is blocked for as long as the thread
computes: training or aggregating for a real second would let any number of
deadlines pass meanwhile. Running the function on the trio thread instead keeps
virtual time still while real work is done, so deadlines fire only where a
test moves the clock (and no task spins polling while the thread runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio


async def _inline(sync_fn: Callable[..., Any], *args: Any, **_options: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return sync_fn(*args)


@pytest.fixture(autouse=True)
def _threads_inline_under_mock_clock(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "autojump_clock" in request.fixturenames:
        monkeypatch.setattr(trio.to_thread, "run_sync", _inline)
