"""``cluster up --chaos join,leave``: the churn's steps and its invariants (pure
logic over a fake chain client; the churn itself runs in
tests/integration/rounds/test_cluster_chaos_churn.py)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flocknode.chain.client import TxResult
from flocknode.chain.errors import ContractRevert
from flocknode.chain.events import Slashed
from flocknode.chain.types import Phase, RoundView, UpdateView, VoteView
from flocknode.cluster import churn as churn_mod
from flocknode.cluster.chaos import Chaos, Fault, invariants, parse_chaos
from flocknode.cluster.churn import Churn, Join, Leave, churn_invariants, seat_of
from tests.unit.rounds.views import make_view

TX = TxResult(b"\x00" * 32, 1, 21000, ())


def _node(i: int, tmp: Path, behaviour: str = "honest", spare: bool = False) -> Any:
    d = tmp / f"node-{i}"
    d.mkdir(exist_ok=True)
    layout = SimpleNamespace(status_file=d / "status.json", config=d / "node.toml")
    return SimpleNamespace(
        name=f"node-{i}",
        index=i,
        wallet=f"0x{i + 1:040x}",
        behaviour=behaviour,
        spare=spare,
        pid=0,
        layout=layout,
    )


def _state(tmp: Path, *nodes: Any, rounds: int = 6) -> Any:
    by_name = {n.name: n for n in nodes}
    return SimpleNamespace(
        nodes=list(nodes),
        rounds=rounds,
        node=lambda name: by_name[name],
        save=lambda: None,
        refresh_pids=lambda: None,
    )


class FakeClient:
    """A participant's wallet: the calls the churn makes, recorded."""

    def __init__(self, eligible: int = 5, seats: int = 4) -> None:
        self.eligible, self.seats = eligible, seats
        self.calls: list[str] = []
        self.refusals: list[str] = []  # withdraw reverts still to give, in order
        self.round = 3
        self.registered = False

    def params(self) -> Any:
        return SimpleNamespace(
            proposers_per_round=self.seats // 2, voters_per_round=self.seats // 2
        )

    def eligible_count(self) -> int:
        return self.eligible

    def current_round(self) -> int:
        return self.round

    def participant(self) -> Any:
        if not self.registered:
            raise ContractRevert("not registered", name="NotRegistered")
        return SimpleNamespace(stake=100)

    def request_unstake(self, amount: int) -> TxResult:
        self.calls.append(f"unstake {amount}")
        return TX

    def withdraw(self) -> TxResult:
        if self.refusals:
            name = self.refusals.pop(0)
            raise ContractRevert(name, name=name)
        self.calls.append("withdraw")
        return TX

    def token(self) -> Any:
        return SimpleNamespace(balance_of=lambda _w: 1000 * 10**18)

    @property
    def wallet(self) -> str:
        return "0x" + "ab" * 20

    def stake(self, amount: int) -> TxResult:
        self.calls.append(f"stake {amount}")
        return TX

    def register_node(self, *_: Any) -> TxResult:
        self.calls.append("register")
        self.registered = True
        return TX


def _churn(state: Any, client: FakeClient) -> Churn:
    c = Churn(state, lambda _: None, client_of=lambda _n: client)  # type: ignore[arg-type,return-value]
    return c


def _seated(r: int, proposers: tuple[str, ...], voters: tuple[str, ...], **kw: Any) -> RoundView:
    return dataclasses.replace(make_view(r, Phase.TRAIN), proposers=proposers, voters=voters, **kw)


def test_spec_accepts_join_and_leave() -> None:
    assert parse_chaos("join,leave=2").faults == (("join", 1), ("leave", 2))


def test_the_leaver_is_an_honest_original_running_node_a_voter_first(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        nodes = [_node(i, tmp_path) for i in range(4)]
        nodes[3].behaviour = "sign_flip"
        spare = _node(4, tmp_path, spare=True)
        for n in [*nodes, spare]:
            n.pid = sleeper.pid
        nodes[2].pid = 0  # not running
        c = _churn(_state(tmp_path, *nodes, spare), FakeClient())
        w = [n.wallet for n in nodes]
        view = _seated(3, proposers=(w[0],), voters=(w[1], w[2]))
        assert c.pick_leaver(view, set()) == "node-1"  # a voter's seat before a proposer's
        assert c.pick_leaver(view, {"node-1"}) == "node-0"  # a fault has node-1 out
        assert c.pick_leaver(_seated(3, (), ()), set()) == "node-0"  # between roles
        c.leaves.append(Leave("node-0", 3, "train", 0.0))
        assert c.pick_leaver(view, {"node-1"}) is None  # the spare and the cheater stay
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_leaver_waits_for_enough_others_finishes_its_seat_then_stops(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        nodes = [_node(i, tmp_path) for i in range(5)]
        nodes[1].pid = sleeper.pid
        client = FakeClient(eligible=4, seats=4)
        client.registered = True
        c = _churn(_state(tmp_path, *nodes), client)
        assert c.begin("leave", _seated(3, (), (nodes[1].wallet,)), set())
        view = make_view(3, Phase.COMMIT)
        c.tick(view)
        assert client.calls == [] and c.leaves[0].step == "waiting"  # 3 left for 4 seats
        client.eligible = 5  # a newcomer staked
        c._next_look = 0.0
        c.tick(view)
        assert client.calls == ["unstake 100"] and c.leaves[0].unstake_round == 3
        client.refusals = ["StillElected", "StillElected", "ModelUnderChallenge"]
        for _ in range(3):
            c._next_look = 0.0
            c.tick(view)
        lv = c.leaves[0]
        assert lv.step == "unstaked" and lv.withdraw_refusals == {
            "StillElected": 2,
            "ModelUnderChallenge": 1,
        }
        assert sleeper.poll() is None  # it runs until its tokens are paid out
        c._next_look = 0.0
        c.tick(make_view(4, Phase.TRAIN))
        assert client.calls == ["unstake 100", "withdraw"]
        assert lv.step == "left" and lv.left_round == 4 and not c.busy
        assert not churn_mod._alive(sleeper.pid)  # stopped (SIGTERM) and reaped
        assert c.gone() == {"node-1"}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_joiner_registers_starts_and_stakes_once_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = [_node(0, tmp_path), _node(1, tmp_path, spare=True)]
    client = FakeClient()
    started: list[str] = []

    def start(state: Any, name: str) -> Any:
        started.append(name)
        state.node(name).pid = 1
        return state.node(name)

    monkeypatch.setattr(churn_mod, "start_node", start)
    monkeypatch.setattr(churn_mod, "load_config", lambda *a, **k: SimpleNamespace())
    monkeypatch.setattr(churn_mod.participant, "register", lambda cl, cfg: cl.register_node())
    c = _churn(_state(tmp_path, *nodes), client)
    assert c.gone() == {"node-1"}  # a spare that never started
    assert c.begin("join", make_view(2, Phase.TRAIN), set())
    assert started == ["node-1"] and client.calls == ["register"] and c.busy
    c.tick(make_view(2, Phase.TRAIN))
    assert client.calls == ["register"]  # not running yet: no stake
    nodes[1].layout.status_file.write_text("{}")
    client.round = 3
    c._next_look = 0.0
    c.tick(make_view(3, Phase.TRAIN))
    assert client.calls == ["register", f"stake {churn_mod.JOIN_STAKE}"], c.errors
    assert c.joins[0].step == "staked" and c.joins[0].staked_round == 3 and not c.busy
    assert not c.begin("join", make_view(3, Phase.TRAIN), set())  # no spare left
    assert c.gone() == set()


def test_chaos_hands_churn_kinds_to_the_churn_when_due(tmp_path: Path) -> None:
    chaos = Chaos(_state(tmp_path, _node(0, tmp_path)), parse_chaos("join"), 5, lambda _: None)
    chaos._plan = [(2, "join", Phase.COMMIT)]
    begun: list[tuple[str, int]] = []
    chaos.churn = SimpleNamespace(  # type: ignore[assignment]
        tick=lambda view: None, begin=lambda kind, view, avoid: begun.append((kind, view.round))
    )
    chaos.tick(make_view(2, Phase.TRAIN))
    assert begun == [] and chaos.pending == 1  # not the drawn phase yet
    chaos.tick(make_view(2, Phase.COMMIT))
    assert begun == [("join", 2)] and chaos.pending == 1  # begin said no: tried again
    chaos.churn.begin = lambda kind, view, avoid: True  # type: ignore[attr-defined]
    chaos.tick(make_view(2, Phase.COMMIT))
    assert chaos.pending == 0 and chaos.faults == []


# --------------------------------------------------------------- invariants

M1, M2, M3 = ("0x" + c * 64 for c in "123")
VOTED = VoteView(True, True, bytes(32), b"\x07" * 32, 3, 0, 0, 1)
UNAVAILABLE = VoteView(True, True, bytes(32), bytes(32), 0, 0, 0, 0)
SUBMITTED = UpdateView(True, b"\x01" * 32, b"\x02" * 32, 10)


def _final(r: int, eligible: tuple[str, ...], proposers: tuple[str, ...] = (), **kw: Any) -> Any:
    return dataclasses.replace(
        make_view(r, Phase.FINALIZED),
        eligible=eligible,
        proposers=proposers,
        updates=tuple(SUBMITTED for _ in proposers),
        **kw,
    )


def _round(r: int, model: str, **held: str) -> dict[str, Any]:
    return {"round": r, "voided": False, "model_after": model, "node_hashes": held}


def _run(tmp: Path) -> tuple[Any, Churn, list[str]]:
    nodes = [_node(i, tmp) for i in range(3)] + [_node(3, tmp, spare=True)]
    state = _state(tmp, *nodes, rounds=4)
    c = _churn(state, FakeClient())
    c.joins.append(Join("node-3", 1, "train", 1.0, "staked", staked_round=1))
    c.leaves.append(Leave("node-0", 2, "train", 2.0, "left", unstake_round=2, left_round=3))
    return state, c, [n.wallet for n in nodes]


def test_churn_invariants_hold_for_a_newcomer_that_contributes(tmp_path: Path) -> None:
    state, c, w = _run(tmp_path)
    views = {
        1: _final(1, (w[0], w[1], w[2]), proposers=(w[0],)),
        # the view of a round read after the next opened has no eligible set:
        # the churn recorded it while the round was current
        2: _final(2, (), proposers=(w[3],)),
        3: _final(3, (w[1], w[2], w[3]), voters=(w[3],), votes=(VOTED,)),
    }
    c.eligible[2] = {w[3], w[1]}
    rounds = [_round(2, M2, **{"node-3": M1}), _round(3, M3, **{"node-3": M3})]
    checks = churn_invariants(state, rounds, views, [], c, {"join": 1, "leave": 1}, set())
    assert all(ch["ok"] for ch in checks.values()), checks
    assert checks["new_participants_contribute"]["joins"] == [
        {
            "node": "node-3",
            "counts_from": 2,
            "window": [2, 3],
            "seats": [
                {"round": 2, "role": "proposer", "acted": True},
                {"round": 3, "role": "voter", "acted": True},
            ],
            "held_model_after": [3],
        }
    ]


def test_each_broken_churn_promise_is_named(tmp_path: Path) -> None:
    state, c, w = _run(tmp_path)
    c.leaves[0].step = "unstaked"
    idle = Slashed(1, 0, b"", 3, w[0], 10, "idle: no vote committed")
    views = {
        2: _final(2, (w[3],), voters=(w[3],), votes=(UNAVAILABLE,)),
        3: _final(3, (w[1],), voters=(w[0],), votes=(VOTED,)),  # the leaver, seated again
    }
    rounds = [_round(2, M2, **{"node-3": M1}), _round(3, M3, **{"node-3": M2})]
    planned = {"join": 2, "leave": 1}
    checks = churn_invariants(state, rounds, views, [idle], c, planned, set())
    assert checks["new_participants_contribute"]["broken"] == [
        "1 of 2 joins made",
        "node-3: did not act as voter in round 2",  # "base model unavailable" is no vote
        "node-3: not eligible in round 3",
        "node-3: held no round's model in rounds [2, 3]",
    ]
    assert checks["leavers_left"]["broken"] == [
        "node-0: leave ended at step unstaked",
        "node-0: seated in round 3 after leaving",
        "node-0: slashed in round 3 (idle: no vote committed)",
    ]
    # an idle slash in a round the chaos had it out is excused
    checks = churn_invariants(state, rounds, views, [idle], c, planned, {(3, "node-0")})
    assert "slashed" not in " ".join(checks["leavers_left"]["broken"])


def test_a_join_staked_in_the_last_round_is_not_judged(tmp_path: Path) -> None:
    state, c, w = _run(tmp_path)
    c.joins[0].staked_round = 3
    views = {3: _final(3, (w[1],))}
    checks = churn_invariants(state, [], views, [], c, {"join": 1}, set())
    ok = checks["new_participants_contribute"]
    assert ok["ok"] and ok["joins"] == [{"node": "node-3", "counts_from": None, "too_late": True}]
    views[4] = _final(4, (w[1],))  # a later round did not count it: broken
    checks = churn_invariants(state, [], views, [], c, {"join": 1}, set())
    assert checks["new_participants_contribute"]["broken"] == [
        "node-3: its stake counted in no finalized round"
    ]


def test_seat_of_reads_role_and_action() -> None:
    v = _final(5, (), proposers=("0xAa",), voters=("0xBb",), votes=(VOTED,))
    assert seat_of(v, "0xaa") == ("proposer", True)
    assert seat_of(v, "0xBB") == ("voter", True)
    assert seat_of(v, "0xcc") is None
    assert seat_of(dataclasses.replace(v, votes=(UNAVAILABLE,)), "0xbb") == ("voter", False)


def test_agreement_does_not_count_a_node_gone_by_design_as_down(tmp_path: Path) -> None:
    state = _state(tmp_path, *[_node(i, tmp_path) for i in range(3)], rounds=1)
    rounds = [_round(1, M1, **{"node-0": M1, "node-1": M1})]
    initial = "0x" + "00" * 32
    no_faults: list[Fault] = []
    down = invariants(state, rounds, {}, [], no_faults, initial)["agreement"]
    assert down["honest_nodes_down"] == ["node-2"] and not down["ok"]
    left = invariants(state, rounds, {}, [], no_faults, initial, gone=frozenset({"node-2"}))
    assert left["agreement"]["ok"], left


def test_a_kill_or_pause_spares_a_leaver(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        nodes = [_node(i, tmp_path) for i in range(2)]
        for n in nodes:
            n.pid = sleeper.pid
        chaos = Chaos(_state(tmp_path, *nodes), parse_chaos("pause"), 5, lambda _: None)
        chaos._plan = [(2, "pause", Phase.TRAIN)]
        chaos.churn.leaves.append(Leave("node-1", 2, "train", 0.0))
        chaos.tick(_seated(2, (), (nodes[1].wallet,)))
        assert chaos.faults == [] and chaos.pending == 1  # its only seat holder leaves
        chaos.tick(_seated(2, (nodes[0].wallet,), (nodes[1].wallet,)))
        assert [f.node for f in chaos.faults] == ["node-0"]
        chaos.finish()
    finally:
        sleeper.kill()
        sleeper.wait()
