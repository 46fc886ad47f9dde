"""Transient RPC failures are retried with backoff; reverts are not; give-up reads well.

anvil is real; a loopback TCP proxy between client and anvil drops
connections, answers 503, or loses the reply to a transaction it forwarded.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import TaskClient
from flocknode.chain.contracts import ChainConnection
from flocknode.chain.errors import ContractRevert, RpcUnavailable
from flocknode.chain.events import MultiaddrsUpdated, of_type
from flocknode.chain.rpc import RetryPolicy
from tests.integration.chain.chain_helpers import Deployed, connect, deploy
from tests.integration.chain.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

PATIENT = RetryPolicy(attempts=8, base_delay=0.05, max_delay=0.4, request_timeout=5.0)


@pytest.fixture(scope="module")
def task(chain: AnvilChain) -> Deployed:
    d = deploy(chain)
    d.join(1, 200)
    return d


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_dropped_connections_are_retried(task: Deployed, proxy: TcpProxy) -> None:
    proxy.faults.drop_connections = 2
    conn = ChainConnection(proxy.url, retry=PATIENT)
    assert TaskClient(conn, task.address).participant_count() == 1
    assert conn.rpc.retries == 2


def test_http_503_is_retried(task: Deployed, proxy: TcpProxy) -> None:
    proxy.faults.http_503 = 3
    conn = ChainConnection(proxy.url, retry=PATIENT)
    assert TaskClient(conn, task.address).params() == task.params
    assert conn.rpc.retries == 3


def test_connection_refused_until_the_endpoint_is_up(task: Deployed, chain: AnvilChain) -> None:
    port = _free_port()
    conn = ChainConnection(f"http://127.0.0.1:{port}", retry=PATIENT)
    started: list[TcpProxy] = []
    refused = threading.Event()

    def open_endpoint_after_first_refusal() -> None:
        # The endpoint comes up only once the client has been refused, so the
        # test sees a retry however slowly the first attempt starts.
        deadline = time.monotonic() + 30.0
        while conn.rpc.retries < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        refused.set()
        started.append(TcpProxy(chain.port, port=port))

    opener = threading.Thread(target=open_endpoint_after_first_refusal, daemon=True)
    opener.start()
    try:
        assert TaskClient(conn, task.address).participant_count() == 1
        assert refused.is_set()
        assert conn.rpc.retries >= 1
    finally:
        opener.join()
        for p in started:
            p.close()


def test_gives_up_with_one_sentence(task: Deployed) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
    with pytest.raises(RpcUnavailable) as err:
        TaskClient(ChainConnection(url, retry=policy), task.address).current_round()
    text = str(err.value)
    assert text.startswith(f"cannot reach the chain at {url} (eth_chainId): ConnectionError")
    assert text.endswith("(tried 3 times)")
    assert "\n" not in text


def test_a_send_whose_reply_was_lost_is_not_sent_twice(
    task: Deployed, proxy: TcpProxy, chain: AnvilChain
) -> None:
    conn = connect(chain, 1, url=proxy.url, retry=PATIENT)
    client = TaskClient(conn, task.address)
    nonce_before = conn.rpc.transaction_count(client.wallet)
    proxy.faults.cut_response_of = b"eth_sendRawTransaction"
    proxy.faults.cut_count = 1
    result = client.update_multiaddrs(["/ip4/127.0.0.1/tcp/6001"])
    assert conn.rpc.retries >= 1
    assert conn.rpc.transaction_count(client.wallet) == nonce_before + 1
    sends = [r for r in proxy.faults.seen if b"eth_sendRawTransaction" in r]
    assert len(sends) == 2  # the same signed bytes twice; the node mined it once
    events = of_type(client.events(result.block_number - 1), MultiaddrsUpdated)
    assert [e.tx_hash for e in events] == [result.tx_hash]
    # The local nonce stayed right: the next transaction goes through at once.
    client.update_multiaddrs(["/ip4/127.0.0.1/tcp/6002"])
    assert conn.rpc.transaction_count(client.wallet) == nonce_before + 2


def test_a_revert_is_never_retried(task: Deployed, proxy: TcpProxy, chain: AnvilChain) -> None:
    client = TaskClient(connect(chain, 1, url=proxy.url, retry=PATIENT), task.address)
    with pytest.raises(ContractRevert, match="is already registered"):
        client.register(b"\x00\x01", b"\x01" * 32, ["/ip4/127.0.0.1/tcp/1"], b"\x02" * 64)
    estimates = [r for r in proxy.faults.seen if b"eth_estimateGas" in r]
    assert len(estimates) == 1
    assert client.conn.rpc.retries == 0
