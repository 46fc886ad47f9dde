"""The keeper's decision: which transaction keeps the task moving, if any."""

from __future__ import annotations

import dataclasses

from flocknode.chain.types import Phase, RoundView, TaskParams
from flocknode.rounds.keeper import KeeperCall, keeper_call
from tests.unit.rounds.views import make_view

PARAMS = TaskParams(
    token="0x" + "11" * 20,
    model_spec_hash=bytes(32),
    config_hash=bytes(32),
    initial_model_hash=bytes(32),
    total_rounds=3,
)


def view(r: int, phase: Phase, seed_block: int = 10) -> RoundView:
    return make_view(r, phase, seed_block)


def test_open_the_first_round_and_after_each_finalized_or_voided_round() -> None:
    assert keeper_call(0, None, PARAMS, 5) == ("open", 1)
    assert keeper_call(1, view(1, Phase.FINALIZED), PARAMS, 50) == ("open", 2)
    assert keeper_call(2, view(2, Phase.VOIDED), PARAMS, 50) == ("open", 3)


def test_a_finalizable_round_is_closed_by_opening_the_next() -> None:
    assert keeper_call(2, view(2, Phase.FINALIZABLE), PARAMS, 50) == ("open", 3)
    # the last round too: openRound finalizes it and opens nothing
    assert keeper_call(3, view(3, Phase.FINALIZABLE), PARAMS, 50) == ("open", 4)


def test_elect_once_the_next_block_is_two_past_the_seed_block() -> None:
    assert keeper_call(1, view(1, Phase.SEEDING, seed_block=10), PARAMS, 10) is None
    assert keeper_call(1, view(1, Phase.SEEDING, seed_block=10), PARAMS, 11) == ("elect", 1)


def test_nothing_to_do_while_a_round_runs_or_after_the_last() -> None:
    for phase in (Phase.TRAIN, Phase.COMMIT, Phase.REVEAL):
        assert keeper_call(1, view(1, phase), PARAMS, 99) is None
    assert keeper_call(3, view(3, Phase.FINALIZED), PARAMS, 99) is None
    assert keeper_call(0, None, dataclasses.replace(PARAMS, total_rounds=0), 1) is None


def test_keepers_take_turns_in_one_order_every_node_derives() -> None:
    from flocknode.rounds.keeper_service import keeper_turn

    wallets = [f"0x{i:040x}" for i in range(1, 11)]
    call = KeeperCall("elect", 7)
    turns = [keeper_turn(call, w, wallets) for w in wallets]
    assert sorted(turns) == list(range(10))  # one queue, every member has its own place
    # the same on every node, whatever order or case its registry lists
    shuffled = [w.upper().replace("0X", "0x") for w in reversed(wallets)]
    assert [keeper_turn(call, w, shuffled) for w in wallets] == turns
    # another call (round or action) gives another order, so no node always goes first
    firsts = {
        next(w for w in wallets if keeper_turn(c, w, wallets) == 0)
        for c in [KeeperCall(a, r) for a in ("open", "elect") for r in range(1, 11)]
    }
    assert len(firsts) > 3
    assert keeper_turn(call, "0x" + "f" * 40, wallets) == 10  # not eligible: after everyone
