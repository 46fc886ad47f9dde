"""The raw view path against the web3 contract call, on one real anvil state at a time.

Every view the client reads through ``FastViews`` must give what
``ChainConnection.view`` (the web3 call) gives for the same state: the same
decoded values, the same ContractRevert for a revert, the same exception for
arguments web3 refuses; transport trouble is retried the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from eth_account import Account
from eth_utils import keccak
from web3.exceptions import Web3Exception

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import AsyncTaskClient, TaskClient, opened_round, strings_as_bytes
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import ContractRevert, RpcRejected, RpcUnavailable
from flocknode.chain.fastview import FastViews
from flocknode.chain.rpc import DirectHttp, RetryPolicy
from flocknode.chain.types import ParticipantView, Phase, RoundView, TaskParams, from_abi
from tests.integration.chain.chain_helpers import Deployed, Member, deploy, mine
from tests.integration.chain.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

PATIENT = RetryPolicy(attempts=8, base_delay=0.05, max_delay=0.4, request_timeout=5.0)


def _plain(value: Any) -> Any:
    """web3's named tuples and our dicts compared as plain dicts and lists."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _web3(client: TaskClient, name: str, *args: Any) -> Any:
    """The view as web3 returns it (the path every view took before fastview), with
    the client's view ABI (``string`` outputs read as ``bytes``)."""
    return client.conn.view(client._views.contract.functions[name](*args), name)


def _fast_raw(client: TaskClient, name: str, *args: Any) -> Any:
    """The view as the fast path decodes it, before any conversion."""
    abi = strings_as_bytes(client.conn.artifact("FlockTask").abi)
    return FastViews(client.conn, client._views.contract, abi).view(
        name, tuple(args), name, lambda raw: raw
    )


def _compare_all(task: Deployed, members: list[Member], rounds: list[int]) -> None:
    """Every view the client reads fast, fast vs web3, raw and converted."""
    c = task.owner
    wallets = [m.wallet for m in members]
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("currentRound", ()),
        ("finalizedRounds", ()),
        ("globalModelHash", ()),
        ("globalModelRound", ()),
        ("rewardPool", ()),
        ("participantCount", ()),
        ("eligibleCount", ()),
        ("settingsBlock", ()),
        ("taskParams", ()),
        ("participants", (0, 100)),
        ("participants", (2, 3)),
        *[("participant", (w,)) for w in wallets],
        *[("isEligible", (w,)) for w in wallets],
        *[("phase", (r,)) for r in [0, *rounds, max(rounds, default=0) + 1]],
        *[("getRound", (r,)) for r in rounds],
    ]
    for name, args in calls:
        assert _plain(_fast_raw(c, name, *args)) == _plain(_web3(c, name, *args)), name

    assert c.current_round() == _web3(c, "currentRound")
    assert c.finalized_rounds() == _web3(c, "finalizedRounds")
    assert c.global_model_hash() == _web3(c, "globalModelHash")
    assert c.global_model_round() == _web3(c, "globalModelRound")
    assert c.reward_pool() == _web3(c, "rewardPool")
    assert c.participant_count() == _web3(c, "participantCount")
    assert c.eligible_count() == _web3(c, "eligibleCount")
    assert c.all_participants() == [
        from_abi(ParticipantView, p) for p in _web3(c, "participants", 0, 100)
    ]
    for w in wallets:
        assert c.participant(w) == from_abi(ParticipantView, _web3(c, "participant", w))
        assert c.is_eligible(w) is _web3(c, "isEligible", w)
    for r in [0, *rounds]:
        assert c.phase(r) is Phase(_web3(c, "phase", r))
    for r in rounds:
        assert c.get_round(r) == from_abi(RoundView, _web3(c, "getRound", r))
    fresh = TaskClient(ChainConnection(task.chain.rpc_url), task.address)
    assert fresh.params() == from_abi(TaskParams, _web3(c, "taskParams")) == task.params


def _by_wallet(members: list[Member], wallet: str) -> Member:
    return next(m for m in members if m.wallet == wallet)


def test_every_fast_view_equals_the_web3_call_through_a_round(chain: AnvilChain) -> None:
    task = deploy(chain, total_rounds=5)
    owner = task.owner
    _compare_all(task, [], [])
    members = [task.join(i, 1000 + i) for i in range(1, 8)]
    task.token.mint(owner.wallet, 5_000)
    owner.fund_rewards(5_000)
    _compare_all(task, members, [])

    r = opened_round(owner.open_round())
    assert r == 1
    _compare_all(task, members, [1])  # seeding
    view = owner.get_round(1)
    mine(chain, max(0, view.seed_block + 2 - owner.conn.rpc.block_number()))
    owner.elect_roles(1)
    view = owner.get_round(1)
    assert view.phase is Phase.TRAIN
    _compare_all(task, members, [1])
    for seat, w in enumerate(view.proposers):
        _by_wallet(members, w).client.submit_update(
            1, keccak(b"u%d" % seat), b"\xb0" * 32, 7 + seat
        )
    _compare_all(task, members, [1])  # commit phase, with updates
    agg = keccak(b"aggregate")
    for seat, w in enumerate(view.voters):
        client = _by_wallet(members, w).client
        salt = bytes([seat + 1]) * 32
        client.commit_vote(1, client.vote_commitment(1, w, agg, 0b111, 0, 0, 10 + seat, salt))
    _compare_all(task, members, [1])  # reveal phase, with commitments
    for seat, w in enumerate(view.voters):
        salt = bytes([seat + 1]) * 32
        _by_wallet(members, w).client.reveal_vote(1, agg, 0b111, 0, 0, 10 + seat, salt)
    owner.open_round()  # finalizes round 1 and opens round 2
    assert owner.phase(1) is Phase.FINALIZED and owner.global_model_hash() == agg
    _compare_all(task, members, [1, 2])


def test_a_revert_is_the_same_contract_revert(chain: AnvilChain) -> None:
    task = deploy(chain)
    c = task.owner
    stranger = Account.create().address
    cases = [
        (lambda: c.get_round(9), lambda: _web3(c, "getRound", 9), "getRound(9)"),
        (lambda: c.participant(stranger), lambda: _web3(c, "participant", stranger), ""),
    ]
    retries = c.conn.rpc.retries
    for fast, slow, what in cases:
        with pytest.raises(ContractRevert) as fast_err:
            fast()
        with pytest.raises(ContractRevert) as slow_err:
            slow()
        f, s = fast_err.value, slow_err.value
        assert (f.name, f.error_args, f.data) == (s.name, s.error_args, s.data)
        assert f.sentence == s.sentence
        if what:
            assert f.action == what
    assert str(fast_err.value) == f"wallet {stranger} is not registered in this task"
    assert c.conn.rpc.retries == retries  # an answer, never retried


def test_arguments_web3_refuses_raise_what_web3_raises(chain: AnvilChain) -> None:
    task = deploy(chain)
    c = task.owner
    lower = c.wallet.lower()
    cases = [
        (lambda: c.get_round(-1), lambda: _web3(c, "getRound", -1)),
        (lambda: c.phase(2**256), lambda: _web3(c, "phase", 2**256)),
        (
            lambda: c._view("isEligible", (lower,), "isEligible", bool),
            lambda: _web3(c, "isEligible", lower),
        ),
    ]
    for fast, slow in cases:
        with pytest.raises(Web3Exception) as slow_err:
            slow()
        with pytest.raises(Web3Exception) as fast_err:
            fast()
        assert type(fast_err.value) is type(slow_err.value)
        assert str(fast_err.value) == str(slow_err.value)


def test_an_unchanged_answer_returns_the_same_object(chain: AnvilChain) -> None:
    task = deploy(chain)
    members = [task.join(i, 500) for i in range(1, 7)]
    c = task.owner
    c.open_round()
    first = c.get_round(1)
    decoded = c._views.decoded
    mine(chain, 1)  # a new block that changes nothing in the round
    again = c.get_round(1)
    assert again is first and c._views.decoded == decoded
    mine(chain, max(0, first.seed_block + 2 - c.conn.rpc.block_number()))
    members[0].client.elect_roles(1)
    moved = c.get_round(1)
    assert moved is not first and moved.phase is Phase.TRAIN and first.phase is Phase.SEEDING
    assert c._views.decoded == decoded + 1
    assert c.all_participants() is not c.all_participants()  # a fresh list each time
    assert c.all_participants() == c.all_participants()


def test_block_reads_equal_web3(chain: AnvilChain) -> None:
    task = deploy(chain)
    rpc = task.owner.conn.rpc
    assert rpc.direct is not None
    mine(chain, 2)
    block = rpc.w3.eth.get_block("latest")
    assert rpc.block_number() == rpc.w3.eth.block_number == block["number"]
    assert rpc.latest_block_time() == (block["number"], block["timestamp"])


async def test_the_async_face_reads_the_latest_block(chain: AnvilChain) -> None:
    task = deploy(chain)
    client = AsyncTaskClient(task.owner)
    block = task.owner.conn.rpc.w3.eth.get_block("latest")
    assert await client.block_number() == block["number"]
    assert await client.latest_block() == (block["number"], block["timestamp"])
    assert await client.current_round() == 0


def test_an_rpc_error_answer_is_rpc_rejected_as_through_web3(chain: AnvilChain) -> None:
    rpc = ChainConnection(chain.rpc_url).rpc
    with pytest.raises(RpcRejected) as fast:
        rpc.request("eth_noSuchMethod", lambda: rpc.raw_result("eth_noSuchMethod", []))
    with pytest.raises(RpcRejected) as slow:
        rpc.request(
            "eth_noSuchMethod",
            lambda: rpc.w3.manager.request_blocking("eth_noSuchMethod", []),  # type: ignore[arg-type]
        )
    assert str(fast.value) == str(slow.value)
    assert str(fast.value).startswith(f"the chain at {chain.rpc_url} refused eth_noSuchMethod: ")


def test_without_the_direct_transport_views_go_through_the_provider(chain: AnvilChain) -> None:
    task = deploy(chain)
    task.join(1, 300)
    conn = ChainConnection(chain.rpc_url)
    conn.rpc.direct = None  # what an https or proxied URL gets
    client = TaskClient(conn, task.address)
    assert client.participant_count() == 1
    assert client.all_participants() == task.owner.all_participants()
    assert conn.rpc.block_number() == task.owner.conn.rpc.block_number()
    with pytest.raises(ContractRevert, match="round 3 does not exist"):
        client.get_round(3)


def test_which_urls_the_direct_transport_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert DirectHttp.serves("http://127.0.0.1:8545")
    assert DirectHttp.serves("http://localhost:8545/rpc?key=1")
    assert not DirectHttp.serves("https://rpc.example.org")
    assert not DirectHttp.serves("http://user:secret@127.0.0.1:8545")
    assert not DirectHttp.serves("ws://127.0.0.1:8546")
    assert not DirectHttp.serves("http://127.0.0.1:notaport")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert not DirectHttp.serves("http://10.1.2.3:8545")


# -- transport trouble, through a misbehaving proxy in front of the real anvil ----------


@pytest.fixture(scope="module")
def joined(chain: AnvilChain) -> Deployed:
    d = deploy(chain)
    d.join(1, 200)
    return d


def test_an_idle_connection_the_server_closed_is_reopened_silently(
    joined: Deployed, proxy: TcpProxy
) -> None:
    conn = ChainConnection(proxy.url, retry=PATIENT)
    client = TaskClient(conn, joined.address)
    assert client.participant_count() == 1
    opened = proxy.accepted
    for _ in range(3):
        proxy.close_client_connections()
        assert client.participant_count() == 1
        assert conn.rpc.block_number() > 0
    assert conn.rpc.retries == 0  # not a failure: a kept-alive connection went stale
    assert proxy.accepted > opened


def test_fast_views_retry_dropped_connections_and_503(joined: Deployed, proxy: TcpProxy) -> None:
    conn = ChainConnection(proxy.url, retry=PATIENT)
    client = TaskClient(conn, joined.address)
    _ = conn.chain_id  # through web3, before the faults
    proxy.faults.drop_connections = 2
    assert client.participant_count() == 1
    assert conn.rpc.retries == 2
    proxy.faults.http_503 = 2
    assert client.eligible_count() == 1
    assert conn.rpc.retries == 4


def test_fast_view_gives_up_with_one_sentence(joined: Deployed, chain: AnvilChain) -> None:
    proxy = TcpProxy(chain.port)
    conn = ChainConnection(
        proxy.url, retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
    )
    client = TaskClient(conn, joined.address)
    _ = conn.chain_id
    proxy.close()
    with pytest.raises(RpcUnavailable) as err:
        client.current_round()
    text = str(err.value)
    assert text.startswith(f"cannot reach the chain at {proxy.url} (currentRound): ConnectionError")
    assert text.endswith("(tried 3 times)") and "\n" not in text
    assert isinstance(err.value.cause, requests.ConnectionError)
