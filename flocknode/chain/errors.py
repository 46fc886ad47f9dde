"""Errors of the chain client: each reads as one sentence a person understands.

A revert of ``FlockTask``/``FlockToken`` arrives as ABI-encoded custom-error
data; :mod:`flocknode.chain.revert` turns it into a :class:`ContractRevert`
whose message is built from the error's name and arguments ("wallet 0x… is
not an elected voter in round 3"). Transport trouble that outlasts the retries
becomes :class:`RpcUnavailable`; a wallet that cannot pay for gas becomes
:class:`NoGasMoney`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flocknode.errors import FlockError


class ChainError(FlockError):
    """Anything the chain or the RPC endpoint refused or failed to do."""


class ContractRevert(ChainError):
    """The contract refused a call or transaction (a revert, never retried).

    ``name`` is the custom error's name ("NotElectedVoter"; "Error" for a
    ``require`` string, "Panic" for a Solidity panic, "" when the contract gave
    no reason), ``args`` its decoded arguments by ABI name.
    """

    def __init__(
        self,
        sentence: str,
        *,
        name: str,
        args: Mapping[str, Any] | None = None,
        action: str = "",
        data: bytes = b"",
    ) -> None:
        self.sentence = sentence
        self.name = name
        self.error_args: dict[str, Any] = dict(args or {})
        self.action = action
        self.data = data
        super().__init__(sentence)


class NoGasMoney(ChainError):
    """The wallet's ETH balance cannot pay for the transaction's gas."""

    def __init__(self, wallet: str, chain_id: int, balance: int, needed: int | None = None) -> None:
        self.wallet = wallet
        self.chain_id = chain_id
        self.balance = balance
        self.needed = needed
        if balance == 0:
            text = f"wallet {wallet} has no ETH for gas on chain {chain_id} (balance 0)"
        else:
            need = f", this transaction needs up to {needed} wei" if needed else ""
            text = (
                f"wallet {wallet} has too little ETH for gas on chain {chain_id} "
                f"(balance {balance} wei{need})"
            )
        super().__init__(text)


class RpcUnavailable(ChainError):
    """The RPC endpoint kept failing (refused, reset, timed out, 5xx) after every retry."""

    def __init__(self, url: str, what: str, attempts: int, cause: BaseException) -> None:
        self.url = url
        self.what = what
        self.attempts = attempts
        self.cause = cause
        super().__init__(
            f"cannot reach the chain at {url} ({what}): {describe_exception(cause)} "
            f"(tried {attempts} times)"
        )


class RpcRejected(ChainError):
    """The RPC endpoint answered with an error that retrying cannot fix."""


class TransactionFailed(ChainError):
    """A transaction was mined with status 0 and no reason, or was never mined."""


class WrongChain(ChainError):
    """The endpoint serves another chain than expected, or the address holds no contract."""


def describe_exception(exc: BaseException) -> str:
    """A short, single-line description of a transport exception."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{name}: {first}" if first else name
