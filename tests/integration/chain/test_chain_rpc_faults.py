"""The chain client behind the ``--chaos rpc`` fault proxy (flocknode/cluster/rpcproxy.py),
in front of a real anvil: a provider's getLogs range cap, errors, timeouts,
dropped connections, 429s and stale answers (docs/protocol.md, "Faults and the
promises kept under them")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import AsyncTaskClient, TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.rpc import RetryPolicy
from flocknode.cluster.rpcproxy import FaultDraw, RpcFaultProxy
from flocknode.rounds.follower import ChainFollower
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.metrics import RoundMetrics
from flocknode.rounds.snapshot import ChainFeed
from tests.integration.chain.chain_helpers import Deployed, block_number, deploy, mine

pytestmark = pytest.mark.integration

# a held request (hold_seconds) outlasts the read timeout; retries outlast a fault run
QUICK = RetryPolicy(
    attempts=10, base_delay=0.02, max_delay=0.2, request_timeout=2.0, read_timeout=0.5
)


@pytest.fixture(scope="module")
def task(chain: AnvilChain) -> Deployed:
    d = deploy(chain)
    d.join(1, 200)
    return d


@pytest.fixture
def make_proxy(chain: AnvilChain) -> Iterator[list[RpcFaultProxy]]:
    made: list[RpcFaultProxy] = []
    yield made
    for p in made:
        p.close()


def _proxy(made: list[RpcFaultProxy], chain: AnvilChain, **kw: object) -> RpcFaultProxy:
    p = RpcFaultProxy(chain.rpc_url, 1, hold_seconds=1.0, **kw).start()  # type: ignore[arg-type]
    made.append(p)
    return p


def test_get_logs_over_a_providers_range_cap_is_split(
    task: Deployed, chain: AnvilChain, make_proxy: list[RpcFaultProxy]
) -> None:
    proxy = _proxy(make_proxy, chain, range_cap=25)
    first = block_number(chain)
    mine(chain, 60)  # the task's events, then blocks without any
    task.join(2, 150)  # more events, well past the first range
    direct = task.owner.events(0)
    assert len(direct) >= 4
    client = TaskClient(ChainConnection(proxy.url, retry=QUICK), task.address)
    assert client.events(0) == direct
    # the whole range, then its half, ... were refused, until one fit the cap
    assert proxy.stats.injected["range_cap"] >= 2
    assert client.log_range <= 25
    refused = proxy.stats.injected["range_cap"]
    assert client.events(first) == [e for e in direct if e.block_number >= first]
    assert proxy.stats.injected["range_cap"] == refused  # the smaller range is kept


def test_pinned_reads_through_a_fault_window_answer_as_anvil_does(
    task: Deployed, chain: AnvilChain, make_proxy: list[RpcFaultProxy]
) -> None:
    proxy = _proxy(make_proxy, chain, draw=FaultDraw(7, share=0.4))
    client = TaskClient(ChainConnection(proxy.url, retry=QUICK), task.address)
    at = block_number(chain)
    want = (task.owner.current_round(at), task.owner.global_model_hash(at))
    member = chain.accounts[1]  # joined with the task
    proxy.open_window()
    for _ in range(40):
        assert (client.current_round(at), client.global_model_hash(at)) == want
        assert client.participant(member) == task.owner.participant(member)
    proxy.close_window()
    injected = proxy.stats.injected
    # every kind met (stale: on the "latest" participant reads), and cured by a retry
    assert all(injected[k] > 0 for k in ("error", "rate_limit", "drop", "timeout", "stale"))
    assert client.conn.rpc.retries >= injected["error"]


async def test_the_follower_never_goes_back_on_stale_answers(
    task: Deployed, chain: AnvilChain, make_proxy: list[RpcFaultProxy]
) -> None:
    stale_only = FaultDraw(3, share=0.5, kinds=(("stale", 1.0),))
    proxy = _proxy(make_proxy, chain, draw=stale_only)
    conn = ChainConnection(proxy.url, retry=QUICK)
    feed, metrics = ChainFeed(), RoundMetrics()
    follower = ChainFollower(
        AsyncTaskClient(TaskClient(conn, task.address)), feed, ChainMembership(), metrics
    )
    await follower.tick()
    proxy.open_window()
    blocks = [feed.latest.block]
    for _ in range(60):
        await trio.to_thread.run_sync(mine, chain)
        await follower.tick()
        blocks.append(feed.latest.block)
    proxy.close_window()
    assert blocks == sorted(blocks), blocks  # never back
    assert blocks[-1] > blocks[0] + 20  # ... and it kept following the chain
    assert proxy.stats.injected["stale"] > 10
    assert metrics.counters["stale_chain_reads"] > 0
