"""The RPC transport: one sync ``Web3(HTTPProvider)`` with our own retry policy.

web3's built-in provider retry is switched off so that every retry goes
through :meth:`Rpc.retrying`, which retries only transient trouble
(connection refused or reset, timeouts, HTTP 5xx and 429) with exponential
backoff, and never a revert: a revert is an answer, not a failure.

The sync core runs in worker threads (``trio.to_thread.run_sync``); web3's
HTTP session manager keeps one ``requests.Session`` per thread, so concurrent
calls from several threads are safe.

The hot reads (block number, latest block time, contract views through
``flocknode.chain.fastview``) skip web3's middleware and ``requests``:
:meth:`Rpc.raw_result` posts the JSON-RPC body on a kept-alive
``http.client`` connection of the calling thread (:class:`DirectHttp`) and
hands the answer to web3's own response validation, so results and errors are
those of the web3 call. A web3 call costs ~0.7 ms of CPU for eth_blockNumber
and ~3.5 ms for a contract view (its validation middleware asks eth_chainId
every time); the raw exchange ~0.15 ms.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from eth_abi.exceptions import DecodingError
from web3 import HTTPProvider, Web3
from web3._utils.error_formatters_utils import raise_block_not_found_on_error
from web3.exceptions import (
    BadFunctionCallOutput,
    BlockNotFound,
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)
from web3.types import BlockIdentifier, RPCEndpoint, RPCResponse

from flocknode.chain.errors import RpcRejected, RpcUnavailable, WrongChain, describe_exception

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient RPC failures are retried."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 4.0
    # A request the endpoint holds is given up this soon and retried: one stuck
    # request must not eat a phase (a 20 s train phase on a local cluster).
    # The web3 path (gas estimates, sends, receipts, logs):
    request_timeout: float = 6.0
    # The hot reads (block number, latest block, contract views): the node's
    # view of the chain is never older than this because of one stuck request.
    read_timeout: float = 4.0

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
    "internal error",  # a provider's backend failed (JSON-RPC -32603 / -32000)
    "header not found",  # a lagging backend behind a load balancer
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


# Messages public providers refuse an eth_getLogs with when its block range
# (or its result) is over their cap; a smaller range is the cure.
_RANGE_CAP_MESSAGES = (
    "block range",
    "range is too large",
    "range too large",
    "too many blocks",
    "query returned more than",
    "log response size exceeded",
    "limit the query",
)


def is_range_cap(exc: BaseException) -> bool:
    """True for an eth_getLogs refusal that asks for a smaller block range."""
    cause = exc.__cause__ if isinstance(exc, RpcRejected) else exc
    if not isinstance(cause, Web3RPCError):
        return False
    msg = rpc_message(cause).lower()
    return any(m in msg for m in _RANGE_CAP_MESSAGES)


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


class DirectHttp:
    """JSON-RPC POSTs on one kept-alive ``http.client`` connection per thread.

    For idempotent reads only: a kept-alive connection the server had closed
    is reopened and the request sent once more at once. Trouble surfaces as the
    exceptions ``requests`` raises for it (ConnectionError, Timeout, HTTPError
    carrying the status), so :func:`is_transient` judges it as before. Only for
    plain ``http://`` URLs without credentials or an environment proxy
    (:meth:`serves`); anything else goes through web3's provider.
    """

    HEADERS = {"Content-Type": "application/json", "User-Agent": "flocknode"}

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in {url}")
        self.url = url
        self.timeout = timeout
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = parts.path or "/"
        if parts.query:
            self._path += "?" + parts.query
        self._local = threading.local()

    @staticmethod
    def serves(url: str) -> bool:
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError:
            return False
        if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
            return False
        return not requests.utils.get_environ_proxies(url)

    def post(self, body: bytes) -> bytes | None:
        """The response body of a 2xx answer; None for an answer requests would follow."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        reused = conn is not None
        while True:
            if conn is None:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            try:
                conn.request("POST", self._path, body, self.HEADERS)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = conn = None
                if reused and isinstance(exc, _STALE_CONNECTION):
                    reused = False  # the server closed the idle connection: once more
                    continue
                if isinstance(exc, TimeoutError):
                    raise requests.Timeout(f"{self.url}: {describe_exception(exc)}") from exc
                raise requests.ConnectionError(f"{self.url}: {describe_exception(exc)}") from exc
            self._local.conn = conn
            if resp.status >= 400:
                raise _http_error(self.url, resp.status, resp.reason, data)
            return data if 200 <= resp.status < 300 else None

    def close(self) -> None:
        """Close the calling thread's connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# What web3 raises for an answer that is not what the ABI or JSON-RPC says
# (JSONDecodeError and UnicodeDecodeError are ValueErrors, but so are many
# programming errors: only these are mapped).
_UNDECODABLE = (BadFunctionCallOutput, DecodingError, UnicodeDecodeError, json.JSONDecodeError)

_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


def _http_error(url: str, status: int, reason: str, body: bytes) -> requests.HTTPError:
    """The HTTPError ``requests.Response.raise_for_status`` raises for this answer."""
    resp = requests.Response()
    resp.status_code = status
    resp.reason = reason
    resp.url = url
    resp._content = body
    kind = "Client" if status < 500 else "Server"
    return requests.HTTPError(f"{status} {kind} Error: {reason} for url: {url}", response=resp)


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
        self._provider = provider
        self.direct = DirectHttp(url, self.retry.read_timeout) if DirectHttp.serves(url) else None
        self._ids = itertools.count(1)
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
        """``retrying`` plus: an RPC error answer becomes one RpcRejected line, and
        so does an answer that does not decode (the endpoint is untrusted)."""
        try:
            return self.retrying(what, fn)
        except Web3RPCError as exc:
            msg = rpc_message(exc)
            raise RpcRejected(f"the chain at {self.url} refused {what}: {msg}") from exc
        except _UNDECODABLE as exc:
            raise RpcRejected(
                f"the chain at {self.url} answered {what} with data that does not decode: "
                f"{describe_exception(exc)}"
            ) from exc

    def raw_response(self, method: str, params: list[Any]) -> RPCResponse:
        """One JSON-RPC exchange without web3's middleware: the response object."""
        if self.direct is not None:
            body = json.dumps(
                {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)},
                separators=(",", ":"),
            ).encode()
            raw = self.direct.post(body)
            if raw is not None:
                return self._provider.decode_rpc_response(raw)
        return self._provider.make_request(RPCEndpoint(method), params)

    def raw_result(
        self,
        method: str,
        params: list[Any],
        error_formatters: Callable[[RPCResponse], Any] | None = None,
    ) -> Any:
        """The ``result`` of a raw exchange, validated and its errors raised as web3 does.

        ``error_formatters`` are web3's for the method (e.g. the revert mapping
        of eth_call); one exchange, no retry (wrap it in :meth:`request`).
        """
        response = self.raw_response(method, params)
        return self.w3.manager.formatted_response(response, params, error_formatters)

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
        return self.request(
            "eth_blockNumber", lambda: _quantity(self.raw_result("eth_blockNumber", []))
        )

    def latest_block_time(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block, without web3's block formatters."""

        def read() -> tuple[int, int]:
            params: list[Any] = ["latest", False]
            block = self.raw_result("eth_getBlockByNumber", params, raise_block_not_found_on_error)
            if block is None:
                raise BlockNotFound("Block with id: 'latest' not found.")
            return _quantity(block["number"]), _quantity(block["timestamp"])

        return self.request("eth_getBlockByNumber('latest')", read)

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


def _quantity(value: Any) -> int:
    """A JSON-RPC quantity ("0x1a") as an int (web3's ``to_integer_if_hex``)."""
    if isinstance(value, str):
        return int(value, 16)
    return int(value)
