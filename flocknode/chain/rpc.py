"""The RPC transport: one sync ``Web3(HTTPProvider)`` with our own retry policy.

web3's built-in provider retry is switched off so that every retry goes
through :meth:`Rpc.retrying`, which retries only transient trouble
(connection refused or reset, timeouts, HTTP 5xx and 429) with exponential
backoff, and never a revert: a revert is an answer, not a failure.

The sync core runs in worker threads (``trio.to_thread.run_sync``); web3's
HTTP session manager keeps one ``requests.Session`` per thread, so concurrent
calls from several threads are safe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from web3 import HTTPProvider, Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)
from web3.types import BlockIdentifier

from flocknode.chain.errors import RpcRejected, RpcUnavailable, WrongChain, describe_exception

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient RPC failures are retried."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 4.0
    request_timeout: float = 15.0

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based), with +-20% jitter."""
        d = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return d * (0.8 + 0.4 * random.random())


# Messages of JSON-RPC errors that are about the node's load, not our request.
_TRANSIENT_RPC_MESSAGES = (
    "timeout",
    "timed out",
    "too many requests",
    "rate limit",
    "temporarily unavailable",
    "service unavailable",
    "try again",
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry can cure; False for reverts and answers."""
    if isinstance(exc, ContractLogicError):
        return False
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return status >= 500 or status in (408, 429)
    if isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            ConnectionError,
            TimeoutError,
            ProviderConnectionError,
            TooManyRequests,
            RequestTimedOut,
            TimeExhausted,
        ),
    ):
        return True
    if isinstance(exc, Web3RPCError):
        msg = rpc_message(exc).lower()
        return any(m in msg for m in _TRANSIENT_RPC_MESSAGES)
    return False


def rpc_message(exc: BaseException) -> str:
    """The JSON-RPC error message of a Web3RPCError (or the exception text)."""
    if isinstance(exc, Web3RPCError):
        resp = exc.rpc_response
        if isinstance(resp, dict):
            err = resp.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
        return str(exc.message)
    return str(exc)


class Rpc:
    """A sync JSON-RPC connection with retries; the base of the chain client."""

    def __init__(self, url: str, *, retry: RetryPolicy | None = None) -> None:
        self.url = url
        self.retry = retry or RetryPolicy()
        provider = HTTPProvider(
            url,
            request_kwargs={"timeout": self.retry.request_timeout},
            exception_retry_configuration=None,
        )
        self.w3 = Web3(provider)
        self._chain_id: int | None = None
        self.retries = 0  # transient failures retried so far (for status and tests)

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; on transient failure back off and run it again.

        Non-transient exceptions (reverts, RPC answers) pass through at once;
        when the attempts run out the last failure becomes RpcUnavailable.
        """
        attempts = max(1, self.retry.attempts)
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == attempts:
                    raise RpcUnavailable(self.url, what, attempts, exc) from exc
                self.retries += 1
                delay = self.retry.delay(attempt)
                log.warning(
                    "rpc retry what=%s attempt=%d delay=%.2fs error=%s",
                    what,
                    attempt,
                    delay,
                    describe_exception(exc),
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def request(self, what: str, fn: Callable[[], T]) -> T:
        """``retrying`` plus: an RPC error answer becomes one RpcRejected line."""
        try:
            return self.retrying(what, fn)
        except Web3RPCError as exc:
            msg = rpc_message(exc)
            raise RpcRejected(f"the chain at {self.url} refused {what}: {msg}") from exc

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.request("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def check_chain(self, expected: int | None) -> int:
        cid = self.chain_id
        if expected is not None and cid != expected:
            raise WrongChain(
                f"the RPC endpoint {self.url} serves chain {cid}, but chain {expected} was expected"
            )
        return cid

    def block_number(self) -> int:
        return int(self.request("eth_blockNumber", lambda: self.w3.eth.block_number))

    def get_block(self, ident: BlockIdentifier) -> Any:
        return self.request(
            f"eth_getBlockByNumber({ident!r})", lambda: self.w3.eth.get_block(ident)
        )

    def balance(self, address: str) -> int:
        return int(
            self.request(
                "eth_getBalance", lambda: self.w3.eth.get_balance(Web3.to_checksum_address(address))
            )
        )

    def transaction_count(self, address: str, block: BlockIdentifier = "latest") -> int:
        """Transactions sent by ``address`` up to ``block`` (its next nonce)."""
        wallet = Web3.to_checksum_address(address)
        return int(
            self.request(
                "eth_getTransactionCount", lambda: self.w3.eth.get_transaction_count(wallet, block)
            )
        )

    def has_code(self, address: str) -> bool:
        code = self.request(
            "eth_getCode", lambda: self.w3.eth.get_code(Web3.to_checksum_address(address))
        )
        return len(code) > 0
