"""``cluster up --chaos``: the spec, the plan of faults and the invariants (pure logic;
the faults themselves run in tests/integration/rounds/test_cluster_chaos.py)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from flocknode.chain.events import Slashed
from flocknode.chain.types import Phase, RoundView, VoteView
from flocknode.cluster.chaos import Chaos, ChaosSpecError, Fault, invariants, parse_chaos
from tests.unit.rounds.views import make_view


def test_spec_names_kinds_and_counts() -> None:
    assert parse_chaos("kill,pause").faults == (("kill", 1), ("pause", 1))
    assert parse_chaos(" kill=2 , pause ").faults == (("kill", 2), ("pause", 1))
    assert parse_chaos("kill,kill=2").faults == (("kill", 3),)
    assert parse_chaos("pause=3", seed=7).text == "pause=3"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "nuke",
            "unknown fault 'nuke' "
            "(known: kill, pause, partition, rpc, join, leave, reorg, latency)",
        ),
        ("kill=0", "kill count must be 1..20"),
        ("kill=21", "kill count must be 1..20"),
        ("kill=two", "'kill=two' needs a whole count"),
        (" , ", "name at least one fault"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ChaosSpecError, match=r"^--chaos ") as e:
        parse_chaos(text)
    assert says in str(e.value)


def _state(*behaviours: str, rounds: int = 5) -> Any:
    nodes = [
        SimpleNamespace(name=f"node-{i}", wallet=f"0x{i + 1:040x}", behaviour=b, pid=0)
        for i, b in enumerate(behaviours)
    ]
    return SimpleNamespace(nodes=nodes, rounds=rounds, node=lambda n: nodes[int(n[5:])])


@contextmanager
def _sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process for the chaos to stop or kill in a node's place."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _tick_until_undone(chaos: Chaos, view: RoundView, seconds: float = 10.0) -> None:
    """Tick on ``view`` until the active fault is undone (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while chaos.active and time.monotonic() < deadline:
        chaos.tick(view)
        time.sleep(0.02)


def test_faults_are_spread_over_the_rounds_between_the_first_and_the_last() -> None:
    for count, rounds, want in [(2, 5, [2, 3]), (3, 5, [2, 3, 4]), (4, 4, [2, 2, 3, 3])]:
        chaos = Chaos(_state("honest"), parse_chaos(f"kill={count}"), rounds, lambda _: None)
        assert [r for r, _, _ in chaos._plan] == want
    a = Chaos(_state("honest"), parse_chaos("kill=2,pause=2", seed=1), 10, lambda _: None)
    b = Chaos(_state("honest"), parse_chaos("kill=2,pause=2", seed=1), 10, lambda _: None)
    assert a._plan == b._plan and sorted(k for _, k, _ in a._plan) == ["kill"] * 2 + ["pause"] * 2


def test_no_fault_without_a_live_honest_seat_holder() -> None:
    state = _state("honest", "sign_flip")
    chaos = Chaos(state, parse_chaos("kill"), 5, lambda _: None)
    view = dataclasses.replace(
        make_view(3, Phase.COMMIT),
        proposers=(state.nodes[1].wallet,),
        voters=(state.nodes[0].wallet,),  # honest but not running (pid 0)
    )
    chaos.tick(view)
    assert chaos.faults == [] and chaos.pending == 1


def test_a_voter_is_faulted_only_while_it_can_still_come_back_and_reveal() -> None:
    state = _state("honest", "honest")
    with _sleeper() as sleeper:
        state.nodes[0].pid = state.nodes[1].pid = sleeper.pid
        now = 1_000_000.0
        voter = {"proposers": (), "voters": (state.nodes[1].wallet,)}
        for kind, room in (("kill", 20.0), ("pause", 8.0)):  # 5 s down, and 15 s or 3 s
            chaos = Chaos(state, parse_chaos(kind), 5, lambda _: None, wall=lambda: now)
            chaos._plan = [(2, kind, Phase.REVEAL)]
            tight = dataclasses.replace(make_view(2, Phase.REVEAL), reveal_end=int(now + room) - 1)
            chaos.tick(dataclasses.replace(tight, **voter))
            assert chaos.faults == [], kind  # too late in the round: it waits
            if kind == "pause":  # (a kill of the sleeper would end it)
                enough = dataclasses.replace(tight, reveal_end=int(now + room))
                chaos.tick(dataclasses.replace(enough, **voter))
                assert [(f.node, f.role) for f in chaos.faults] == [("node-1", "voter")]
                os.kill(sleeper.pid, signal.SIGCONT)
        # a proposer's work is on chain by then: it may be faulted at any time
        chaos = Chaos(state, parse_chaos("pause"), 5, lambda _: None, wall=lambda: now)
        chaos._plan = [(2, "pause", Phase.REVEAL)]
        proposer = {"proposers": (state.nodes[0].wallet,), "voters": ()}
        late = dataclasses.replace(make_view(2, Phase.REVEAL), reveal_end=int(now))
        chaos.tick(dataclasses.replace(late, **proposer))
        assert [(f.node, f.role) for f in chaos.faults] == [("node-0", "proposer")]
        os.kill(sleeper.pid, signal.SIGCONT)


def test_a_pause_is_undone_on_time_and_records_the_rounds_it_spanned() -> None:
    state = _state("honest", "honest")
    with _sleeper() as sleeper:
        state.nodes[1].pid = sleeper.pid
        chaos = Chaos(state, parse_chaos("pause", down_seconds=0.3), 5, lambda _: None)
        chaos._plan = [(2, "pause", Phase.COMMIT)]
        seats = {"proposers": (state.nodes[1].wallet,), "voters": (state.nodes[0].wallet,)}
        round2 = dataclasses.replace(make_view(2, Phase.COMMIT), **seats)
        chaos.tick(dataclasses.replace(round2, phase=Phase.TRAIN))  # before the drawn phase
        assert chaos.faults == []
        chaos.tick(round2)
        assert chaos.active
        _wait_for(lambda: _state_of(sleeper.pid) == "T")
        chaos.tick(dataclasses.replace(make_view(3, Phase.TRAIN), **seats))
        _tick_until_undone(chaos, dataclasses.replace(make_view(3, Phase.COMMIT), **seats))
        (fault,) = chaos.faults
        assert (fault.kind, fault.node, fault.round, fault.role) == (
            "pause",
            "node-1",
            2,
            "proposer",
        )
        assert fault.undone and 0.3 <= fault.seconds < 5 and fault.out_rounds == [2, 3]
        assert _state_of(sleeper.pid) != "T"


def _wait_for(cond: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _state_of(pid: int) -> str:
    """The process state letter in /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


INITIAL = "0x" + "00" * 31 + "01"
M1, M2 = "0x" + "11" * 32, "0x" + "22" * 32


def _round(r: int, model: str, **held: str) -> dict[str, Any]:
    return {"round": r, "voided": False, "model_after": model, "node_hashes": held}


def _slash(r: int, wallet: str, reason: str) -> Slashed:
    return Slashed(1, 0, b"", r, wallet, 10, reason)


def _finalized(r: int, voters: list[tuple[Any, bool]]) -> RoundView:
    """Round ``r`` finalized with these voters, each committed, revealed or not."""
    votes = tuple(VoteView(True, rev, bytes(32), bytes(32), 0, 0, 0, 0) for _, rev in voters)
    return dataclasses.replace(
        make_view(r, Phase.FINALIZED), voters=tuple(n.wallet for n, _ in voters), votes=votes
    )


def test_invariants_hold_for_a_run_whose_faults_cost_only_idle_slashes() -> None:
    state = _state("honest", "honest", "honest", rounds=2)
    rounds = [
        _round(1, M1, **{"node-0": M1, "node-1": M1, "node-2": INITIAL}),  # node-2 behind
        _round(2, M2, **{"node-0": M2, "node-1": M2, "node-2": M2}),
    ]
    # killed in round 1, still restarting when round 2 began
    faults = [Fault("kill", "node-2", 1, "commit", "voter", 3.0, 5.0, True, [1, 2])]
    slashes = [
        _slash(1, state.nodes[2].wallet, "idle: no vote committed"),
        _slash(2, state.nodes[2].wallet, "idle: no update submitted"),
    ]
    views = {2: _finalized(2, [(state.nodes[0], True), (state.nodes[1], True)])}
    checks = invariants(state, rounds, views, slashes, faults, INITIAL)
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["honest_not_slashed"]["idle_slashes_of_stopped_nodes"] == 2
    assert checks["rounds_finalized"] == {"ok": True, "finalized": 2, "voided": 0}


def test_each_broken_promise_is_named() -> None:
    state = _state("honest", "honest", "honest", "no_reveal", rounds=2)
    rounds = [
        _round(1, M1, **{"node-0": M1, "node-1": "0x" + "99" * 32}),  # a model nobody finalized
        _round(2, M2, **{"node-0": M2, "node-1": M1}),  # node-2 down, node-1 behind
    ]
    faults = [Fault("pause", "node-0", 1, "train", "proposer", 1.0, 5.0, True, [1])]
    slashes = [
        _slash(2, state.nodes[0].wallet, "idle: no update submitted"),  # not stopped in round 2
        _slash(1, state.nodes[1].wallet, "update rejected by norm check"),
        _slash(1, state.nodes[3].wallet, "vote committed but not revealed"),  # byzantine
    ]
    views = {1: _finalized(1, [(state.nodes[2], False), (state.nodes[3], False)])}
    checks = invariants(state, rounds, views, slashes, faults, INITIAL)
    assert checks["agreement"] == {
        "ok": False,
        "stray_models": ["round 1: node-1 held 0x9999999999"],
        "not_holding_the_last_model": ["node-1"],
        "honest_nodes_down": ["node-2"],
    }
    assert checks["honest_not_slashed"] == {
        "ok": False,
        "slashes": [
            "round 2: node-0 (idle: no update submitted)",
            "round 1: node-1 (update rejected by norm check)",
        ],
        "idle_slashes_of_stopped_nodes": 0,
    }
    assert checks["committed_votes_revealed"] == {"ok": False, "unrevealed": ["round 1: node-2"]}
    assert checks["rounds_finalized"] == {"ok": True, "finalized": 2, "voided": 0}


def test_a_drawn_phase_that_passed_unseen_moves_the_fault_to_the_next_role_phase() -> None:
    state = _state("honest", "honest")
    with _sleeper() as sleeper:
        state.nodes[1].pid = sleeper.pid
        chaos = Chaos(state, parse_chaos("pause", down_seconds=0.3), 5, lambda _: None)
        chaos._plan = [(2, "pause", Phase.TRAIN)]
        seats = {"proposers": (state.nodes[1].wallet,), "voters": ()}
        chaos.tick(dataclasses.replace(make_view(1, Phase.REVEAL), **seats))  # not due yet
        assert chaos.faults == []
        # the train phase of round 2 passed between two looks: its commit phase takes it
        chaos.tick(dataclasses.replace(make_view(2, Phase.COMMIT), **seats))
        assert [(f.round, f.phase) for f in chaos.faults] == [(2, "commit")]


@pytest.mark.parametrize("kind", ["kill", "pause"])
def test_a_kill_or_pause_pushed_into_the_last_round_is_left_out(kind: str) -> None:
    state = _state("honest", "honest", rounds=4)
    state.refresh_pids = state.save = lambda: None
    with _sleeper() as sleeper:
        state.nodes[0].pid = sleeper.pid
        chaos = Chaos(state, parse_chaos(kind), 4, lambda _: None, wall=lambda: -60.0)
        chaos._plan = [(3, kind, Phase.TRAIN)]  # due in round 3, the one before the last
        seats = {"proposers": (state.nodes[0].wallet,), "voters": ()}
        chaos.tick(dataclasses.replace(make_view(4, Phase.TRAIN), **seats))  # the last round
        assert chaos.faults == [] and chaos.to_json()["not_injected"] == [kind]
        assert sleeper.poll() is None  # not killed
        chaos.tick(dataclasses.replace(make_view(3, Phase.TRAIN), **seats))  # in time: killed
        assert [f.kind for f in chaos.faults] == [kind]
