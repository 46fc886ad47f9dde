"""Sending transactions from one wallet: nonces, gas, fees, receipts, clear errors.

One :class:`Sender` per wallet and node. A lock serialises the part that
takes a nonce (estimate, sign, send) so concurrent senders never reuse or skip
a nonce; waiting for the receipt happens outside the lock. The nonce counter
is local and is refreshed from the chain (``pending`` count) after any error
that leaves it in doubt ("nonce too low", a send that may or may not have
arrived). A revert is decoded into a sentence and never retried.

Reorganisations (docs/protocol.md, "Chain reorganisations and confirmations"):
the signed bytes of the wallet's recent transactions are kept by nonce. A
transaction the chain no longer holds (neither mined nor pending) while its
nonce is still unused on chain was dropped by a reorganisation; :meth:`recheck`
broadcasts the very same bytes again (same hash, same nonce), so the effect
returns and the wallet's later nonces are not stuck behind a gap. With
``confirmations = N > 0`` :meth:`send` returns only once ``N`` blocks are on
top of the receipt's block, re-reading the receipt on the way: a receipt that
disappears is waited for again after the rebroadcast. ``N = 0`` returns at the
first receipt; the node's :meth:`recheck` on every new block then restores what
a reorganisation removes later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from flocknode.chain.errors import (
    ChainError,
    ContractRevert,
    NoGasMoney,
    RpcRejected,
    RpcUnavailable,
    TransactionFailed,
)
from flocknode.chain.revert import RevertDecoder, revert_data_from
from flocknode.chain.rpc import Rpc, rpc_message

log = logging.getLogger(__name__)

_NONCE_MESSAGES = (
    "nonce too low",
    "nonce too high",
    "already known",
    "replacement transaction underpriced",
    "invalid nonce",
    "known transaction",
)

RECENT_LIMIT = 64  # transactions of the wallet kept for rebroadcast (the highest nonces)
RECHECK_SECONDS = 1.0  # a receipt missing this long: look for dropped transactions


@dataclass(frozen=True)
class _Sent:
    """A transaction as broadcast: enough to broadcast it again unchanged."""

    nonce: int
    tx_hash: bytes
    raw: bytes
    action: str


@dataclass(frozen=True)
class Receipt:
    """What a mined transaction left behind (logs are raw; see events.py)."""

    tx_hash: bytes
    block_number: int
    gas_used: int
    contract_address: str | None
    logs: tuple[Any, ...]


class Sender:
    """Signs and sends a wallet's transactions through an :class:`Rpc`."""

    def __init__(
        self,
        rpc: Rpc,
        account: LocalAccount,
        decoder: RevertDecoder,
        *,
        gas_margin: float = 1.25,
        receipt_timeout: float = 120.0,
        nonce_resyncs: int = 3,
        confirmations: int = 0,
        poll: float = 0.25,
    ) -> None:
        self.rpc = rpc
        self.account = account
        self.address: ChecksumAddress = account.address
        self.decoder = decoder
        self.gas_margin = gas_margin
        self.receipt_timeout = receipt_timeout
        self.nonce_resyncs = nonce_resyncs
        self.confirmations = confirmations
        self.poll = poll
        self._lock = threading.Lock()
        self._recent: dict[int, _Sent] = {}  # by nonce, guarded by _lock
        self._next_nonce: int | None = None
        self._dynamic_fees: bool | None = None
        self.nonce_refreshes = 0  # times the counter was (re)loaded from the chain
        self.reorged = 0  # receipts seen and then gone from the chain
        self.rebroadcasts = 0  # dropped transactions broadcast again

    @property
    def recent(self) -> int:
        """Transactions kept for a rebroadcast."""
        return len(self._recent)

    # -- public -------------------------------------------------------------

    def send(self, fn: Any, action: str) -> Receipt:
        """Estimate, sign and send ``fn`` (a web3 ContractFunction or constructor); wait."""
        with self._lock:
            tx_hash, tx = self._send_locked(fn, action)
        return self._wait(tx_hash, tx, action)

    def reset_nonce(self) -> None:
        with self._lock:
            self._next_nonce = None

    def recheck(self) -> int:
        """Broadcast again every kept transaction the chain dropped; how many were.

        Dropped: its nonce is not used on chain yet (``latest`` count) and the
        node knows no transaction of that hash (not mined, not pending). Kept
        transactions whose nonce the chain has used stay kept (a deeper
        reorganisation may still drop them) until RECENT_LIMIT newer ones pushed
        them out. One ``eth_getTransactionCount`` when nothing was dropped.
        """
        with self._lock:
            if not self._recent:
                return 0
            used = self.rpc.transaction_count(self.address, "latest")
            waiting = [self._recent[n] for n in sorted(self._recent) if n >= used]
            sent = 0
            for tx in waiting:
                if self._known(tx.tx_hash):
                    continue
                if self._rebroadcast(tx):
                    sent += 1
            return sent

    # -- the locked part -------------------------------------------------------

    def _send_locked(self, fn: Any, action: str) -> tuple[bytes, dict[str, Any]]:
        gas = self._estimate(fn, action)
        fees = self._fees()
        for resync in range(self.nonce_resyncs + 1):
            nonce = self._nonce()
            tx = dict(
                fn.build_transaction(
                    {
                        "from": self.address,
                        "nonce": nonce,
                        "gas": gas,
                        "chainId": self.rpc.chain_id,
                        "value": 0,
                        **fees,
                    }
                )
            )
            signed = self.account.sign_transaction(tx)
            raw, tx_hash = bytes(signed.raw_transaction), bytes(signed.hash)
            try:
                self.rpc.retrying(
                    f"eth_sendRawTransaction({action})",
                    lambda raw=raw: self.rpc.w3.eth.send_raw_transaction(raw),  # type: ignore[misc]
                )
            except RpcUnavailable:
                self._next_nonce = None  # it may or may not have arrived
                raise
            except Web3RPCError as exc:
                msg = rpc_message(exc).lower()
                if self._known(tx_hash):  # an earlier attempt of this very tx arrived
                    self._next_nonce = nonce + 1
                    self._keep(_Sent(nonce, tx_hash, raw, action))
                    return tx_hash, tx
                if "insufficient funds" in msg:
                    raise self._no_gas_money(gas, fees) from exc
                if any(m in msg for m in _NONCE_MESSAGES) and resync < self.nonce_resyncs:
                    log.info("nonce resync wallet=%s nonce=%d error=%s", self.address, nonce, msg)
                    self._next_nonce = None
                    continue
                self._next_nonce = None
                raise RpcRejected(
                    f"the chain at {self.rpc.url} refused {action}: {rpc_message(exc)}"
                ) from exc
            self._next_nonce = nonce + 1
            self._keep(_Sent(nonce, tx_hash, raw, action))
            return tx_hash, tx
        raise AssertionError("unreachable")  # pragma: no cover

    def _keep(self, tx: _Sent) -> None:
        self._recent[tx.nonce] = tx
        while len(self._recent) > RECENT_LIMIT:
            del self._recent[min(self._recent)]

    def _rebroadcast(self, tx: _Sent) -> bool:
        """Send ``tx``'s signed bytes again (lock held); False if the chain refused them."""
        try:
            self.rpc.retrying(
                f"eth_sendRawTransaction({tx.action}, again)",
                lambda: self.rpc.w3.eth.send_raw_transaction(tx.raw),
            )
        except Web3RPCError as exc:
            msg = rpc_message(exc).lower()
            if "nonce too low" in msg or "already known" in msg or "known transaction" in msg:
                return False  # mined or pending meanwhile
            log.warning(
                "rebroadcast refused wallet=%s nonce=%d action=%s error=%s",
                self.address,
                tx.nonce,
                tx.action,
                msg,
            )
            self._next_nonce = None  # a gap the chain will not fill: count from the chain
            return False
        except RpcUnavailable:
            return False  # the next recheck tries again
        self.rebroadcasts += 1
        log.warning(
            "transaction dropped, broadcast again wallet=%s nonce=%d action=%s tx=0x%s",
            self.address,
            tx.nonce,
            tx.action,
            tx.tx_hash.hex(),
        )
        return True

    def _nonce(self) -> int:
        if self._next_nonce is None:
            self._next_nonce = self.rpc.transaction_count(self.address, "pending")
            self.nonce_refreshes += 1
        return self._next_nonce

    def _estimate(self, fn: Any, action: str) -> int:
        try:
            est = self.rpc.retrying(
                f"eth_estimateGas({action})", lambda: fn.estimate_gas({"from": self.address})
            )
        except ContractLogicError as exc:
            raise self._revert(exc, action) from None
        except Web3RPCError as exc:
            msg = rpc_message(exc)
            if "insufficient funds" in msg.lower():
                raise self._no_gas_money(None, {}) from exc
            raise RpcRejected(f"the chain at {self.rpc.url} refused {action}: {msg}") from exc
        return int(int(est) * self.gas_margin) + 10_000

    def _fees(self) -> dict[str, int]:
        if self._dynamic_fees is not False:
            block = self.rpc.get_block("latest")
            base = block.get("baseFeePerGas")
            self._dynamic_fees = base is not None
            if base is not None:
                tip = int(
                    self.rpc.request(
                        "eth_maxPriorityFeePerGas", lambda: self.rpc.w3.eth.max_priority_fee
                    )
                )
                return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}
        price = int(self.rpc.request("eth_gasPrice", lambda: self.rpc.w3.eth.gas_price))
        return {"gasPrice": price}

    def _known(self, tx_hash: bytes) -> bool:
        try:
            self.rpc.retrying(
                "eth_getTransactionByHash",
                lambda: self.rpc.w3.eth.get_transaction(HexBytes(tx_hash)),
            )
        except TransactionNotFound:
            return False
        except ChainError:
            return False
        return True

    def _no_gas_money(self, gas: int | None, fees: dict[str, int]) -> NoGasMoney:
        balance = self.rpc.balance(self.address)
        price = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
        needed = gas * price if gas is not None and price else None
        return NoGasMoney(self.address, self.rpc.chain_id, balance, needed)

    def _revert(self, exc: ContractLogicError, action: str) -> ChainError:
        data = revert_data_from(exc.data)
        if data is not None:
            return self.decoder.decode(data, action)
        # A node that gave only a message (e.g. "execution reverted").
        text = str(exc.message or "execution reverted")
        return ContractRevert(f"the contract refused {action}: {text}", name="", action=action)

    # -- after the lock --------------------------------------------------------

    def _receipt(self, tx_hash: bytes) -> Any | None:
        try:
            return self.rpc.retrying(
                "eth_getTransactionReceipt",
                lambda: self.rpc.w3.eth.get_transaction_receipt(HexBytes(tx_hash)),
            )
        except TransactionNotFound:
            return None

    def _wait(self, tx_hash: bytes, tx: dict[str, Any], action: str) -> Receipt:
        """The receipt, ``confirmations`` blocks deep; a dropped transaction is sent again.

        The timeout counts from the send, and again from each reorganisation
        that removed the transaction (its rebroadcast is a new wait).
        """
        deadline = time.monotonic() + self.receipt_timeout
        recheck_at = time.monotonic() + RECHECK_SECONDS
        delay = 0.01
        seen: int | None = None  # the block the receipt was last seen in
        while True:
            r = self._receipt(tx_hash)
            now = time.monotonic()
            if r is None:
                if seen is not None:  # mined, then gone: a reorganisation
                    self.reorged += 1
                    log.warning(
                        "transaction reorganised away action=%s tx=0x%s block=%d",
                        action,
                        tx_hash.hex(),
                        seen,
                    )
                    seen, deadline = None, now + self.receipt_timeout
                    recheck_at = now  # broadcast it again at once
                if now > deadline:
                    raise TransactionFailed(
                        f"transaction 0x{tx_hash.hex()} ({action}) was not mined within "
                        f"{self.receipt_timeout:.0f} s"
                    )
                if now >= recheck_at:
                    self.recheck()
                    recheck_at = now + RECHECK_SECONDS
                time.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            seen = int(r["blockNumber"])
            if self.confirmations <= 0:
                break
            if self.rpc.block_number() >= seen + self.confirmations:
                # the receipt read before the head may be reorganised away since:
                # done only if it is still there, in the same block
                again = self._receipt(tx_hash)
                if again is not None and again["blockHash"] == r["blockHash"]:
                    break
                continue
            if now > deadline:
                raise TransactionFailed(
                    f"transaction 0x{tx_hash.hex()} ({action}) was not {self.confirmations} "
                    f"blocks deep within {self.receipt_timeout:.0f} s"
                )
            time.sleep(self.poll)
        receipt = Receipt(
            tx_hash=tx_hash,
            block_number=int(r["blockNumber"]),
            gas_used=int(r["gasUsed"]),
            contract_address=r.get("contractAddress"),
            logs=tuple(r["logs"]),
        )
        if int(r["status"]) == 1:
            return receipt
        raise self._explain_failure(receipt, tx, action)

    def _explain_failure(self, receipt: Receipt, tx: dict[str, Any], action: str) -> ChainError:
        """Replay a mined-but-reverted tx to learn the reason.

        The replay runs on the state at the end of its block: whatever made it
        fail (another party's transaction earlier in the same block, a
        deadline passed) is in that state, and the failed tx changed nothing.
        """
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        replay: Callable[[], Any] = lambda: self.rpc.w3.eth.call(  # noqa: E731
            call,  # type: ignore[arg-type]
            block_identifier=receipt.block_number,
        )
        try:
            self.rpc.retrying("eth_call(replay)", replay)
        except ContractLogicError as exc:
            return self._revert(exc, action)
        except ChainError:
            pass
        except Web3RPCError:
            pass
        ran_out = receipt.gas_used >= int(tx.get("gas", 0))
        why = "it ran out of gas" if ran_out else "no reason could be recovered"
        return TransactionFailed(
            f"transaction 0x{receipt.tx_hash.hex()} ({action}) failed in block "
            f"{receipt.block_number}: {why}"
        )
