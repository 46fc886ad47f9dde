"""FlockToken binding: the plain ERC-20 that tasks stake and pay in."""

from __future__ import annotations

from eth_utils import to_checksum_address

from flocknode.chain.contracts import ChainConnection
from flocknode.chain.txsend import Receipt


class TokenClient:
    """FlockToken (a plain ERC-20 with a deployer-only ``mint``)."""

    def __init__(self, conn: ChainConnection, address: str) -> None:
        self.conn = conn
        self.address = to_checksum_address(address)
        self._c = conn.contract("FlockToken", self.address)

    def balance_of(self, wallet: str) -> int:
        fn = self._c.functions.balanceOf(to_checksum_address(wallet))
        return int(self.conn.view(fn, "balanceOf"))

    def allowance(self, owner: str, spender: str) -> int:
        fn = self._c.functions.allowance(to_checksum_address(owner), to_checksum_address(spender))
        return int(self.conn.view(fn, "allowance"))

    def total_supply(self) -> int:
        return int(self.conn.view(self._c.functions.totalSupply(), "totalSupply"))

    def mint(self, to: str, amount: int) -> Receipt:
        fn = self._c.functions.mint(to_checksum_address(to), amount)
        return self.conn.transact(fn, "mint")

    def approve(self, spender: str, amount: int) -> Receipt:
        fn = self._c.functions.approve(to_checksum_address(spender), amount)
        return self.conn.transact(fn, "approve")

    def transfer(self, to: str, amount: int) -> Receipt:
        fn = self._c.functions.transfer(to_checksum_address(to), amount)
        return self.conn.transact(fn, "transfer")
