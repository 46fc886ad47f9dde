"""The RPC fault proxy's pure decisions (``--chaos rpc``): which request gets
which fault, the getLogs range it sees, and how a stale read is rewritten. The
proxy itself runs against anvil in tests/integration/chain/test_chain_rpc_faults.py."""

from __future__ import annotations

from collections import Counter

import pytest

from flocknode.cluster.rpcproxy import (
    FAULT_SHARE,
    STALE_LAG,
    STALE_METHODS,
    WINDOW_KINDS,
    FaultDraw,
    block_tag,
    log_range,
    stale_params,
)


def _draws(seed: int, methods: list[str]) -> list[tuple[str, int, bool]]:
    draw = FaultDraw(seed)
    return [(d.kind, d.lag, d.http_500) for d in (draw.decide(m, True) for m in methods)]


def test_no_fault_outside_a_window_and_the_draws_wait_for_one() -> None:
    draw, fresh = FaultDraw(5), FaultDraw(5)
    assert all(draw.decide("eth_call", False).kind == "pass" for _ in range(1000))
    # the draws did not advance: inside the window both give the same faults
    assert [draw.decide("eth_call", True) for _ in range(200)] == [
        fresh.decide("eth_call", True) for _ in range(200)
    ]


def test_the_same_seed_gives_the_same_faults_and_another_seed_others() -> None:
    methods = ["eth_blockNumber", "eth_call", "eth_sendRawTransaction"] * 200
    assert _draws(1, methods) == _draws(1, methods)
    assert _draws(1, methods) != _draws(2, methods)


def test_a_share_of_the_requests_gets_each_kind_by_its_weight() -> None:
    n = 20_000
    kinds = Counter(k for k, _, _ in _draws(3, ["eth_call"] * n))
    faulted = n - kinds["pass"]
    assert abs(faulted / n - FAULT_SHARE) < 0.02, kinds
    total_weight = sum(w for _, w in WINDOW_KINDS)
    for kind, weight in WINDOW_KINDS:
        assert abs(kinds[kind] / faulted - weight / total_weight) < 0.03, (kind, kinds)


def test_stale_answers_only_reads_that_have_one_and_lags_within_bounds() -> None:
    draws = _draws(4, ["eth_blockNumber", "eth_sendRawTransaction", "eth_getLogs"] * 3000)
    lo, hi = STALE_LAG
    stale = [(k, lag) for k, lag, _ in draws[0::3] if k == "stale"]
    assert stale and all(lo <= lag <= hi for _, lag in stale)
    assert {lag for _, lag in stale} == set(range(lo, hi + 1))
    # a write or a log query is never answered stale: those draws become errors
    others = Counter(k for k, _, _ in draws[1::3] + draws[2::3])
    assert others["stale"] == 0 and others["error"] > 0
    assert "eth_sendRawTransaction" not in STALE_METHODS


def test_errors_are_http_500s_or_json_rpc_errors() -> None:
    errors = [h for k, _, h in _draws(6, ["eth_call"] * 5000) if k == "error"]
    assert 0.4 < sum(errors) / len(errors) < 0.6


@pytest.mark.parametrize(
    ("params", "span"),
    [
        ([{"fromBlock": "0x0", "toBlock": "0x3e7"}], 1000),
        ([{"fromBlock": "0x0", "toBlock": "0x3e8"}], 1001),
        ([{"fromBlock": 10, "toBlock": 10}], 1),
        ([{"fromBlock": "0x64"}], 2401),  # to the head (2500)
        ([{"fromBlock": "earliest", "toBlock": "latest"}], 2501),
        ([{}], 1),  # both default to the head
        ([{"fromBlock": "0x10", "toBlock": "0x5"}], 0),
        ([{"blockHash": "0xab"}], None),
        ([{"fromBlock": "zz"}], None),
        ([], None),
        ("nonsense", None),
    ],
)
def test_the_range_of_a_log_query(params: object, span: int | None) -> None:
    assert log_range(params, head=2500) == span


def test_block_tags_as_numbers() -> None:
    assert [block_tag(t, 77) for t in (None, "latest", "pending", "earliest", "0x10", 9)] == [
        77,
        77,
        77,
        0,
        16,
        9,
    ]
    assert block_tag(True, 77) is None and block_tag("0xnope", 77) is None


def test_a_stale_read_is_pinned_to_the_older_block() -> None:
    call = {"to": "0x01", "data": "0x"}
    assert stale_params("eth_call", [call, "latest"], 40) == [call, "0x28"]
    assert stale_params("eth_call", [call], 40) == [call, "0x28"]
    assert stale_params("eth_getBlockByNumber", ["latest", False], 40) == ["0x28", False]
    # a read already pinned to a block, or another tag, is left as it is
    assert stale_params("eth_call", [call, "0x5"], 40) == [call, "0x5"]
    assert stale_params("eth_getBlockByNumber", ["0x5", False], 40) == ["0x5", False]
    assert stale_params("eth_call", "junk", 40) == "junk"
