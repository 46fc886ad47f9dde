"""FlockToken: a plain ERC-20, mint by the deployer only."""

from __future__ import annotations

import pytest

from tests.fixtures.contracts import ETHER, Harness

pytestmark = pytest.mark.integration

ZERO = "0x0000000000000000000000000000000000000000"
MAX = 2**256 - 1


def test_metadata_and_minter(h: Harness) -> None:
    t = h.token.functions
    assert (t.name().call(), t.symbol().call(), t.decimals().call()) == ("Flock Token", "FLOCK", 18)
    assert t.minter().call() == h.deployer


def test_only_the_deployer_mints(h: Harness, accounts: tuple[str, ...]) -> None:
    supply = h.token.functions.totalSupply().call()
    h.expect_revert(h.token.functions.mint(accounts[3], 1), accounts[3], "NotMinter", accounts[3])
    h.expect_revert(h.token.functions.mint(ZERO, 1), h.deployer, "ZeroAddress")
    receipt = h.send(h.token.functions.mint(accounts[15], 5 * ETHER), h.deployer)
    (ev,) = h.events(receipt, "Transfer")
    assert (ev["from"], ev.to, ev.value) == (ZERO, accounts[15], 5 * ETHER)
    assert h.token.functions.totalSupply().call() == supply + 5 * ETHER
    assert h.token.functions.balanceOf(accounts[15]).call() == 5 * ETHER


def test_transfer_and_allowances(h: Harness, accounts: tuple[str, ...]) -> None:
    a, b, c = accounts[15], accounts[16], accounts[17]
    tok = h.token.functions
    h.send(tok.mint(a, 10 * ETHER), h.deployer)
    h.expect_revert(
        tok.transfer(b, 11 * ETHER), a, "InsufficientBalance", a, 10 * ETHER, 11 * ETHER
    )
    h.expect_revert(tok.transfer(ZERO, 1), a, "ZeroAddress")
    h.send(tok.transfer(b, 4 * ETHER), a)
    assert (tok.balanceOf(a).call(), tok.balanceOf(b).call()) == (6 * ETHER, 4 * ETHER)
    h.expect_revert(tok.transferFrom(a, c, 1), b, "InsufficientAllowance", b, 0, 1)
    receipt = h.send(tok.approve(b, 3 * ETHER), a)
    (ev,) = h.events(receipt, "Approval")
    assert (ev.owner, ev.spender, ev.value) == (a, b, 3 * ETHER)
    h.send(tok.transferFrom(a, c, 2 * ETHER), b)
    assert tok.allowance(a, b).call() == ETHER
    assert tok.balanceOf(c).call() == 2 * ETHER
    h.send(tok.approve(b, MAX), a)
    h.send(tok.transferFrom(a, c, ETHER), b)
    assert tok.allowance(a, b).call() == MAX  # an infinite allowance is never spent
    h.expect_revert(tok.approve(ZERO, 1), a, "ZeroAddress")
