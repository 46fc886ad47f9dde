"""Compiled contract artifacts and the connection that talks to them.

The artifacts (ABI + bytecode) are built by ``make contracts`` into
``flocknode/chain/artifacts/<Contract>.json`` and shipped with the package.
:class:`ChainConnection` is one RPC endpoint plus, optionally, the node's
wallet with its :class:`~flocknode.chain.txsend.Sender`: every binding of a
node shares it, so one wallet has one nonce counter.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from flocknode.chain.errors import ChainError, WrongChain
from flocknode.chain.revert import RevertDecoder, revert_data_from
from flocknode.chain.rpc import RetryPolicy, Rpc
from flocknode.chain.txsend import Receipt, Sender

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: tuple[Mapping[str, Any], ...]
    bytecode: str


@functools.cache
def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    path = directory / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ChainError(f"{path}: contract artifact missing (run: make contracts)") from None
    except (OSError, ValueError) as exc:
        raise ChainError(f"{path}: unreadable contract artifact ({exc})") from None
    return Artifact(name=name, abi=tuple(raw["abi"]), bytecode=str(raw["bytecode"]))


def default_decoder(directory: Path = ARTIFACTS_DIR) -> RevertDecoder:
    return RevertDecoder(
        [load_artifact("FlockTask", directory).abi, load_artifact("FlockToken", directory).abi]
    )


@dataclass(frozen=True)
class EthTransfer:
    """A plain ETH payment, shaped like a web3 contract call for ``Sender.send``."""

    w3: Web3
    to: str
    value: int

    def estimate_gas(self, tx: Mapping[str, Any]) -> int:
        call = {**tx, "to": self.to, "value": self.value}
        return int(self.w3.eth.estimate_gas(call))  # type: ignore[arg-type]

    def build_transaction(self, tx: Mapping[str, Any]) -> dict[str, Any]:
        return {**tx, "to": self.to, "value": self.value, "data": b""}


class ChainConnection:
    """One RPC endpoint and (optionally) one wallet; shared by every binding of a node."""

    def __init__(
        self,
        url: str,
        account: LocalAccount | None = None,
        *,
        expected_chain_id: int | None = None,
        retry: RetryPolicy | None = None,
        receipt_timeout: float = 120.0,
        confirmations: int = 0,
        artifacts: Path = ARTIFACTS_DIR,
    ) -> None:
        self.rpc = Rpc(url, retry=retry)
        self.artifacts = artifacts
        self.decoder = default_decoder(artifacts)
        self.expected_chain_id = expected_chain_id
        self.account = account
        self.sender = (
            Sender(
                self.rpc,
                account,
                self.decoder,
                receipt_timeout=receipt_timeout,
                confirmations=confirmations,
            )
            if account is not None
            else None
        )
        self._checked = False

    @property
    def url(self) -> str:
        return self.rpc.url

    @property
    def address(self) -> str:
        """The wallet's address (raises when the connection has no wallet)."""
        return self._sender().address

    @property
    def chain_id(self) -> int:
        if not self._checked:
            self.rpc.check_chain(self.expected_chain_id)
            self._checked = True
        return self.rpc.chain_id

    def artifact(self, name: str) -> Artifact:
        return load_artifact(name, self.artifacts)

    def contract(self, name: str, address: str) -> Contract:
        art = self.artifact(name)
        return self.rpc.w3.eth.contract(
            address=to_checksum_address(address), abi=list(art.abi), decode_tuples=True
        )

    def factory(self, name: str) -> type[Contract]:
        art = self.artifact(name)
        return self.rpc.w3.eth.contract(abi=list(art.abi), bytecode=art.bytecode)

    def require_code(self, name: str, address: str) -> None:
        if not self.rpc.has_code(address):
            raise WrongChain(
                f"no {name} contract at {to_checksum_address(address)} on chain {self.chain_id} "
                f"({self.url})"
            )

    def view(self, fn: Any, what: str, block: int | str = "latest") -> Any:
        """Run a view (as of ``block``) with retries; a revert becomes a ContractRevert sentence."""
        _ = self.chain_id
        try:
            return self.rpc.request(what, lambda: fn.call(block_identifier=block))
        except ContractLogicError as exc:
            data = revert_data_from(exc.data)
            raise self.decoder.decode(data or b"", what) from None

    def transact(self, fn: Any, action: str) -> Receipt:
        _ = self.chain_id
        return self._sender().send(fn, action)

    def send_eth(self, to: str, wei: int) -> Receipt:
        """Pay ETH from the wallet (e.g. gas money for local test wallets)."""
        transfer = EthTransfer(self.rpc.w3, to_checksum_address(to), wei)
        return self.transact(transfer, f"send {wei} wei to {transfer.to}")

    def eth_balance(self, address: str | None = None) -> int:
        return self.rpc.balance(address or self.address)

    def _sender(self) -> Sender:
        if self.sender is None:
            raise ChainError("this action needs a wallet, and none is configured")
        return self.sender
