"""``--chaos latency``: the fault begins on a seat holder's relays, is recorded
with what was drawn, ends on time, and never excuses a slash (pure logic with
stand-in relays; the relay itself: tests/unit/cli/test_linkfault.py and
tests/integration/cli/test_relay.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Any

import pytest

from flocknode.chain.events import Slashed
from flocknode.chain.types import Phase
from flocknode.cluster import chaos as chaos_module
from flocknode.cluster.chaos import Chaos, LatencyFault, invariants, parse_chaos
from flocknode.cluster.linkfault import ActiveFault, LinkFault
from flocknode.cluster.relay import parse_delay_ms
from tests.unit.cli.test_chaos import INITIAL, M1, _round, _state, _tick_until_undone
from tests.unit.rounds.views import make_view


class FakeRelays:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.peers: list[dict[str, int] | None] = []

    def fault(self, name: str, pid: int, peers: dict[str, int] | None = None) -> ActiveFault:
        self.calls.append(("fault", name, pid))
        self.peers.append(peers)
        return ActiveFault(LinkFault(), 0.1234)

    def clear(self, name: str) -> None:
        self.calls.append(("clear", name, 0))

    def to_json(self) -> dict[str, Any]:
        return {"delayed": 7}


def test_latency_is_a_known_fault_kind() -> None:
    assert parse_chaos("latency=2").faults == (("latency", 2),)


def test_a_latency_fault_slows_a_seat_holder_for_its_time_and_never_puts_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chaos_module, "LATENCY_SECONDS", 0.2)
    state = _state("honest", "honest")
    state.nodes[1].pid = os.getpid()  # alive
    relays = FakeRelays()
    chaos = Chaos(state, parse_chaos("latency"), 5, lambda _: None, relays=relays)  # type: ignore[arg-type]
    chaos._plan = [(2, "latency", Phase.COMMIT)]
    chaos.wall = lambda: -60.0  # the reveal deadline (0) leaves a voter room
    seats = {"proposers": (), "voters": (state.nodes[1].wallet,)}
    chaos.tick(dataclasses.replace(make_view(2, Phase.COMMIT), **seats))
    assert relays.calls == [("fault", "node-1", os.getpid())]
    assert chaos.active
    chaos.tick(dataclasses.replace(make_view(3, Phase.TRAIN), **seats))
    _tick_until_undone(chaos, dataclasses.replace(make_view(3, Phase.COMMIT), **seats))
    (fault,) = chaos.faults
    assert isinstance(fault, LatencyFault)
    assert relays.calls[-1] == ("clear", "node-1", 0)
    assert fault.undone and 0.2 <= fault.seconds < 5
    assert fault.out_rounds == []  # slowed, not out: no slash of it is excused
    j = fault.to_json()
    assert (j["kind"], j["node"], j["role"], j["delay_ms"]) == ("latency", "node-1", "voter", 123.4)
    assert (j["loss"], j["rto_ms"], j["rto_cap_ms"]) == (0.05, 200.0, 3200.0)
    assert chaos.to_json()["latency"] == {"delayed": 7}


def test_a_latency_fault_still_active_at_the_end_is_undone() -> None:
    state = _state("honest")
    state.nodes[0].pid = os.getpid()
    relays = FakeRelays()
    chaos = Chaos(state, parse_chaos("latency"), 5, lambda _: None, relays=relays)  # type: ignore[arg-type]
    chaos._plan = [(2, "latency", Phase.TRAIN)]
    view = dataclasses.replace(make_view(2, Phase.TRAIN), proposers=(state.nodes[0].wallet,))
    chaos.tick(view)
    chaos.finish()
    assert [c[0] for c in relays.calls] == ["fault", "clear"] and chaos.faults[0].undone


def test_an_idle_slash_of_a_node_under_latency_breaks_the_promise() -> None:
    state = _state("honest", "honest", rounds=1)
    fault = LatencyFault("latency", "node-1", 1, "commit", "voter", 1.0, 20.0, True)
    slashes = [Slashed(1, 0, b"", 1, state.nodes[1].wallet, 10, "idle: no vote committed")]
    rounds = [_round(1, M1, **{"node-0": M1, "node-1": M1})]
    checks = invariants(state, rounds, {}, slashes, [fault], INITIAL)
    assert checks["honest_not_slashed"] == {
        "ok": False,
        "slashes": ["round 1: node-1 (idle: no vote committed)"],
        "idle_slashes_of_stopped_nodes": 0,
    }


def test_the_delay_range_is_given_in_milliseconds() -> None:
    assert parse_delay_ms("50-300") == (0.05, 0.3)
    assert parse_delay_ms("120") == (0.12, 0.12)
    for bad, says in [
        ("fast", "expected LO-HI milliseconds"),
        ("300-50", "need 0 <= LO <= HI <= 5000"),
        ("0-9000", "need 0 <= LO <= HI <= 5000"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_delay_ms(bad)


def test_a_latency_fault_slows_the_links_to_a_drawn_set_of_the_other_nodes() -> None:
    """Per link: the seed draws which of the other running nodes the slowed
    node's links go to; all of them go to the relays as "every link"."""
    drawn: list[tuple[list[str], dict[str, int] | None]] = []
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    pids = [p.pid for p in sleepers] + [0]  # node-3 is not running (a spare): never a link
    try:
        for seed in range(12):
            state = _state("honest", "honest", "honest", "honest")
            for n, pid in zip(state.nodes, pids, strict=True):
                n.pid = pid
            relays = FakeRelays()
            spec = parse_chaos("latency", seed=seed)
            chaos = Chaos(state, spec, 5, lambda _: None, relays=relays)  # type: ignore[arg-type]
            chaos._plan = [(2, "latency", Phase.TRAIN)]
            seats = {"proposers": (state.nodes[0].wallet,), "voters": ()}
            chaos.tick(dataclasses.replace(make_view(2, Phase.TRAIN), **seats))
            (fault,) = chaos.faults
            assert isinstance(fault, LatencyFault) and fault.node == "node-0"
            drawn.append((fault.links, relays.peers[0]))
            chaos.finish()
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    for links, peers in drawn:
        assert links and set(links) <= {"node-1", "node-2"}, drawn
        assert peers == (None if len(links) == 2 else {m: pids[int(m[5:])] for m in links})
    assert {len(links) for links, _ in drawn} == {1, 2}, drawn  # one link, or every one
