"""The role retry policy: backoff, bounded by attempts and by the phase deadline (MockClock)."""

from __future__ import annotations

import trio
import trio.testing

from flocknode.rounds.retry import RetryPolicy, run_with_retries


def test_finding3_retry_pauses_grow_and_are_capped() -> None:
    p = RetryPolicy(first=0.5, factor=2.0, cap=5.0, max_attempts=10)
    assert [p.pause(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


async def test_finding3_a_failed_step_runs_again_until_it_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []
    errors: list[int] = []

    async def step() -> None:
        runs.append(trio.current_time())
        if len(runs) < 3:
            raise RuntimeError("transient")

    t0 = trio.current_time()
    done = await run_with_retries(
        step,
        deadline=lambda: t0 + 60,
        now=trio.current_time,
        on_error=lambda e, n: errors.append(n),
        policy=RetryPolicy(first=0.5, factor=2.0),
    )
    assert done and errors == [1, 2]
    assert [round(t - t0, 6) for t in runs] == [0.0, 0.5, 1.5]


async def test_finding3_retries_stop_at_the_phase_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []

    async def step() -> None:
        runs.append(trio.current_time())
        raise RuntimeError("always")

    t0 = trio.current_time()
    done = await run_with_retries(
        step,
        deadline=lambda: t0 + 4.0,
        now=trio.current_time,
        on_error=lambda e, n: None,
        policy=RetryPolicy(first=0.5, factor=2.0, max_attempts=100),
    )
    assert not done
    # runs at 0, 0.5, 1.5; the next pause (2 s) would end at 3.5 < 4: a run at 3.5;
    # the one after (4 s) would end past the deadline: none
    assert [round(t - t0, 6) for t in runs] == [0.0, 0.5, 1.5, 3.5]
    assert all(t < t0 + 4.0 for t in runs)


async def test_finding3_retries_stop_after_max_attempts_or_a_closed_phase(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("always")

    policy = RetryPolicy(first=0.1, cap=0.1, max_attempts=4)
    assert not await run_with_retries(
        step, deadline=lambda: 1e9, now=trio.current_time, on_error=lambda e, n: None, policy=policy
    )
    assert runs == 4
    runs = 0
    closed = float("-inf")  # the round left its role phases (voided, finalized)
    assert not await run_with_retries(
        step, deadline=lambda: closed, now=trio.current_time, on_error=lambda e, n: None
    )
    assert runs == 1


async def test_finding3_cancellation_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        await trio.sleep_forever()

    with trio.move_on_after(1):
        await run_with_retries(
            step, deadline=lambda: 1e9, now=trio.current_time, on_error=lambda e, n: None
        )
    assert runs == 1
