"""Contract tests run against one real anvil per module; each test is isolated
by evm_snapshot / evm_revert, so the deployment and the joined participants are
set up once per module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from web3 import Web3

from tests.fixtures.anvil import AnvilChain, anvil_chain
from tests.fixtures.contracts import ETHER, Harness

__all__ = ["anvil_chain"]  # the module-scoped anvil fixture, re-exported for these tests

STAKE = 200 * ETHER
POOL = 100 * ETHER
JOINED = 8  # participants that join the base deployment (accounts 1..8)


@pytest.fixture(scope="module")
def w3(anvil_chain: AnvilChain) -> Web3:
    return Web3(Web3.HTTPProvider(anvil_chain.rpc_url))


@pytest.fixture(scope="module")
def accounts(anvil_chain: AnvilChain) -> tuple[str, ...]:
    return anvil_chain.accounts


@pytest.fixture(scope="module")
def base(w3: Web3, accounts: tuple[str, ...]) -> Harness:
    """Token + task with default params, 8 wallets staked (200 each), pool 100."""
    h = Harness.deploy(w3, accounts[0])
    h.join(accounts[1 : 1 + JOINED], STAKE)
    h.fund_rewards(POOL)
    return h


@pytest.fixture
def h(base: Harness) -> Iterator[Harness]:
    snap = base.snapshot()
    try:
        yield base
    finally:
        base.revert_to(snap)
        base.gas.clear()


@pytest.fixture
def deploy(h: Harness, w3: Web3, accounts: tuple[str, ...]) -> Callable[..., Harness]:
    """A fresh task with custom params (inside the test's snapshot):
    ``deploy(n=6, stake=..., pool=..., **params)``."""

    def make(
        n: int = 6, stake: int | list[int] = STAKE, pool: int = POOL, **params: Any
    ) -> Harness:
        fresh = Harness.deploy(w3, accounts[0], **params)
        fresh.join(accounts[1 : 1 + n], stake)
        if pool:
            fresh.fund_rewards(pool)
        return fresh

    return make
