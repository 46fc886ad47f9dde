"""One real anvil for the chain-client tests (the contracts engineer's launcher)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.anvil import AnvilChain, anvil


@pytest.fixture(scope="package")
def chain() -> Iterator[AnvilChain]:
    """Automine anvil with 20 funded dev accounts; each test module deploys its own task."""
    with anvil(accounts=20) as c:
        yield c
