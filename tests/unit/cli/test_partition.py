"""``cluster up --chaos partition``: the namespace plan's names and commands, the
draw of the sides and of the subnet, and the ``resumes_after_partition`` check
(pure logic; the fault itself runs in
tests/integration/rounds/test_cluster_chaos_partition.py)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from flocknode.chain.events import Slashed
from flocknode.cluster.chaos import Fault, invariants, parse_chaos
from flocknode.cluster.netns import NetnsError, NetPlan, draw_plan, draw_sides, used_subnets
from flocknode.cluster.partition import resumes_after_partition

PLAN = NetPlan("0a1b2c", 7, 4)


def test_names_are_unique_per_cluster_and_fit_linux_interface_names() -> None:
    assert PLAN.bridge == "fnb0a1b2c" and PLAN.gateway == "10.213.7.1"
    assert [PLAN.address(i) for i in range(4)] == [f"10.213.7.{i}" for i in (2, 3, 4, 5)]
    assert PLAN.namespace(3) == "flocknode-0a1b2c-node-3"
    big = NetPlan("ffffff", 255, 250)
    for name in (big.bridge, big.veth_root(249), big.veth_node(249)):
        assert len(name) <= 15, name  # IFNAMSIZ - 1
    other = NetPlan("0a1b2d", 7, 4)
    assert {PLAN.bridge, PLAN.veth_root(0), PLAN.namespace(0)}.isdisjoint(
        {other.bridge, other.veth_root(0), other.namespace(0)}
    )
    assert NetPlan.from_json(PLAN.to_json()) == PLAN


@pytest.mark.parametrize(("net_id", "subnet", "nodes"), [("xyz123", 1, 2), ("0a1b2c", 256, 2)])
def test_a_plan_refuses_names_and_addresses_it_cannot_make(
    net_id: str, subnet: int, nodes: int
) -> None:
    with pytest.raises(ValueError):
        NetPlan(net_id, subnet, nodes)


def test_setup_makes_a_bridge_with_the_gateway_and_one_namespace_per_node() -> None:
    cmds = PLAN.setup_commands()
    assert cmds[:3] == [
        ["link", "add", "fnb0a1b2c", "type", "bridge"],
        ["addr", "add", "10.213.7.1/24", "dev", "fnb0a1b2c"],
        ["link", "set", "fnb0a1b2c", "up"],
    ]
    ns1 = "flocknode-0a1b2c-node-1"
    assert ["netns", "add", ns1] in cmds
    veth = ["link", "add", "fnh0a1b2c-1", "type", "veth", "peer", "name", "fnn0a1b2c-1"]
    assert [*veth, "netns", ns1] in cmds
    assert ["link", "set", "fnh0a1b2c-1", "master", "fnb0a1b2c"] in cmds
    assert ["-n", ns1, "addr", "add", "10.213.7.3/24", "dev", "fnn0a1b2c-1"] in cmds
    assert ["-n", ns1, "link", "set", "lo", "up"] in cmds
    # a namespace exists before anything is put in it
    assert cmds.index(["netns", "add", ns1]) < cmds.index(
        ["-n", ns1, "link", "set", "fnn0a1b2c-1", "up"]
    )
    assert PLAN.teardown_commands() == [
        *(["netns", "delete", PLAN.namespace(i)] for i in range(4)),
        ["link", "delete", "fnb0a1b2c"],
    ]


def test_a_cut_blackholes_each_side_in_the_others_namespaces_and_the_heal_undoes_it() -> None:
    cut = PLAN.cut_commands([2], [0, 1, 3])
    assert len(cut) == 6
    assert ["-n", PLAN.namespace(2), "route", "add", "blackhole", "10.213.7.2/32"] in cut
    assert ["-n", PLAN.namespace(0), "route", "add", "blackhole", "10.213.7.4/32"] in cut
    # nothing blackholes the gateway (the chain) or a node's own side
    assert not any(PLAN.gateway in " ".join(c) for c in cut)
    assert not any(c[1] == PLAN.namespace(0) and c[-1] == "10.213.7.3/32" for c in cut)
    heal = PLAN.heal_commands([2], [0, 1, 3])
    assert [[*c[:3], "add", *c[4:]] for c in heal] == cut
    assert {c[3] for c in heal} == {"delete"}


def test_the_subnet_drawn_is_one_the_machine_does_not_use() -> None:
    shown = (
        "2: eth0    inet 10.213.0.5/24 brd 10.213.0.255 scope global eth0\n"
        "10.213.1.0/24 dev fnbaaaaaa proto kernel scope link src 10.213.1.1\n"
        "10.2.13.0/24 dev x\n"
    )
    assert used_subnets(shown) == {0, 1}
    busy = "\n".join(f"inet 10.213.{s}.1/24" for s in range(256) if s != 42)
    assert draw_plan(3, busy, random.Random(1)).subnet == 42
    with pytest.raises(NetnsError, match="no free"):
        draw_plan(3, busy + "\ninet 10.213.42.1/24", random.Random(1))


def test_sides_keep_the_voters_together_and_the_minority_below_half() -> None:
    names = [f"node-{i}" for i in range(7)]
    for seed in range(50):
        minority, majority = draw_sides(names, ["node-1", "node-4"], random.Random(seed))
        assert 1 <= len(minority) <= 3 and sorted(minority + majority) == sorted(names)
        assert {"node-1", "node-4"} <= set(majority)
    four = [f"node-{i}" for i in range(4)]
    drawn = {tuple(draw_sides(four, ["node-0"], random.Random(s))[0]) for s in range(50)}
    assert drawn == {("node-1",), ("node-2",), ("node-3",)}  # one of 4; all three drawn
    assert draw_sides(four, [], random.Random(3)) == draw_sides(four, [], random.Random(3))
    with pytest.raises(ValueError, match="no node can be cut off"):
        draw_sides(["node-0", "node-1"], [], random.Random(0))  # 1 of 2 is not a minority


def _round(r: int, winner: str = "", voided: bool = False) -> dict[str, Any]:
    return {"round": r, "voided": voided, "winning_aggregate": winner}


def test_resumption_needs_a_winning_round_within_three_rounds_of_the_heal() -> None:
    rounds = [_round(1, "0xa"), _round(2), _round(3), _round(4), _round(5, "0xb")]
    assert resumes_after_partition(rounds, [(2, ["node-1"])]) == {
        "ok": True,
        "first_winning_round": {"node-1 healed in round 2": 5},
        "not_resumed": [],
    }
    late = resumes_after_partition([*rounds[:4], _round(6, "0xc")], [(1, ["n"])])
    assert late["not_resumed"] == ["n healed in round 1: no winning vote in rounds 2..4"]
    voided = resumes_after_partition([_round(1), _round(2, "0xa", voided=True)], [(1, ["n"])])
    assert not voided["ok"]
    at_the_end = resumes_after_partition([_round(1), _round(2)], [(2, ["n"])])
    assert at_the_end["not_resumed"] == ["n healed in round 2: no round after the heal to show it"]


def test_partition_minority_idle_slashes_are_excused_and_the_check_joins_the_invariants() -> None:
    assert parse_chaos("partition,kill").faults == (("partition", 1), ("kill", 1))
    nodes = [
        SimpleNamespace(name=f"node-{i}", wallet=f"0x{i + 1:040x}", behaviour="honest", pid=0)
        for i in range(4)
    ]
    state: Any = SimpleNamespace(nodes=nodes, rounds=4)
    m = "0x" + "11" * 32
    rounds = [
        {"round": r, "voided": False, "model_after": m, "node_hashes": {}, "winning_aggregate": w}
        for r, w in [(1, m), (2, ""), (3, m), (4, m)]
    ]
    rounds[-1]["node_hashes"] = {n.name: m for n in nodes}
    fault = Fault("partition", "node-1", 2, "train", "minority", 1.0, 30.0, True, [2, 3])
    fault.sides = [["node-1"], ["node-0", "node-2", "node-3"]]
    slashes = [
        Slashed(1, 0, b"", 3, nodes[1].wallet, 10, "idle: no vote committed"),
        Slashed(1, 0, b"", 3, nodes[2].wallet, 10, "idle: no vote committed"),  # majority
    ]
    checks = invariants(state, rounds, {}, slashes, [fault], m)
    assert checks["honest_not_slashed"] == {
        "ok": False,
        "slashes": ["round 3: node-2 (idle: no vote committed)"],
        "idle_slashes_of_stopped_nodes": 1,
    }
    assert checks["resumes_after_partition"]["first_winning_round"] == {
        "node-1 healed in round 3": 4
    }
    assert "resumes_after_partition" not in invariants(state, rounds, {}, [], [], m)
