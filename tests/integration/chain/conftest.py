"""One real anvil for the chain-client tests (the contracts engineer's launcher)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.anvil import AnvilChain, anvil
from tests.integration.chain.tcp_proxy import TcpProxy


@pytest.fixture(scope="package")
def chain() -> Iterator[AnvilChain]:
    """Automine anvil with 20 funded dev accounts; each test module deploys its own task."""
    with anvil(accounts=20) as c:
        yield c


@pytest.fixture
def proxy(chain: AnvilChain) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the anvil that tests can make misbehave."""
    p = TcpProxy(chain.port)
    yield p
    p.close()
