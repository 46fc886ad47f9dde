"""Contract views at the price of one HTTP exchange: the node's hot reads.

A web3 contract call costs ~3.5 ms of CPU (middleware, an eth_chainId
request per call from the validation middleware, ``requests``, output
normalizers), ``getRound`` ~8 ms with its decoding, and every node reads
several views on every block (on a local cluster, many nodes share a few
cores). :class:`FastViews` keeps the calldata of each (function, arguments)
encoded once, posts ``eth_call`` through
:meth:`Rpc.raw_result <flocknode.chain.rpc.Rpc.raw_result>` (web3's own
response validation and revert mapping), decodes with web3's codec into what
the web3 call returns (named structs, checksum addresses), and returns the
previous value when the chain answered the very same bytes as last time
(most blocks do not change a round). That reuse only saves decoding: the
value equals a fresh one, and no caller may tell the two apart by identity
(the chain follower compares snapshots by value).

The semantics are those of :meth:`ChainConnection.view
<flocknode.chain.contracts.ChainConnection.view>`: the same values, a revert
becomes the same :class:`~flocknode.chain.errors.ContractRevert`, transport
trouble is retried and becomes RpcUnavailable, an RPC error RpcRejected.
Whatever this path does not handle itself (arguments web3 would refuse to
encode, return data that does not decode, a CCIP-read revert) goes through
the web3 call, which raises exactly what it always raised (return data that
does not decode there either becomes RpcRejected in ``Rpc.request``).

The client builds this over an ABI whose ``string`` outputs are ``bytes``
(client.py): registrants' strings are returned undecoded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_abi.exceptions import DecodingError, EncodingError
from eth_utils import function_signature_to_4byte_selector, is_checksum_address, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from web3._utils.error_formatters_utils import raise_contract_logic_error_on_revert
from web3.contract import Contract
from web3.exceptions import ContractLogicError, OffchainLookup

from flocknode.chain.contracts import ChainConnection
from flocknode.chain.revert import revert_data_from

T = TypeVar("T")

MEMO_LIMIT = 256  # decoded results kept (one per calldata); cleared when full


@dataclass(frozen=True)
class ViewFunction:
    """One view of the ABI: its selector, argument types and output tree."""

    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> ViewFunction:
        name = str(entry["name"])
        inputs = tuple(collapse_if_tuple(dict(i)) for i in entry["inputs"])
        return cls(
            name=name,
            selector=function_signature_to_4byte_selector(f"{name}({','.join(inputs)})"),
            inputs=inputs,
            outputs=tuple(entry["outputs"]),
        )

    @property
    def output_types(self) -> list[str]:
        return [collapse_if_tuple(dict(o)) for o in self.outputs]

    def accepts(self, args: Sequence[Any]) -> bool:
        """True when web3 would encode ``args`` as they are (else the web3 call decides)."""
        if len(args) != len(self.inputs):
            return False
        for typ, value in zip(self.inputs, args, strict=True):
            if typ == "address":
                if not (isinstance(value, str) and is_checksum_address(value)):
                    return False
            elif typ.startswith("uint") and "[" not in typ:
                bits = int(typ[4:] or 256)
                if isinstance(value, bool) or not isinstance(value, int):
                    return False
                if not 0 <= value < 2**bits:
                    return False
            else:
                return False
        return True


def _named(abi: Mapping[str, Any], value: Any) -> Any:
    """web3's normalized value: struct fields by name, addresses checksummed, lists as lists."""
    typ = str(abi["type"])
    if typ.endswith("]"):
        inner = dict(abi)
        inner["type"] = typ[: typ.rindex("[")]
        return [_named(inner, v) for v in value]
    if typ == "tuple":
        comps = abi["components"]
        return {str(c["name"]): _named(c, v) for c, v in zip(comps, value, strict=True)}
    if typ == "address":
        return to_checksum_address(value)
    return value


class FastViews:
    """The views of one deployed contract, read the cheap way (see the module doc)."""

    def __init__(
        self, conn: ChainConnection, contract: Contract, abi: Sequence[Mapping[str, Any]]
    ) -> None:
        self.conn = conn
        self.contract = contract
        self.address = str(contract.address)
        entries = [e for e in abi if e.get("type") == "function"]
        names = [e["name"] for e in entries]
        self.functions = {
            e["name"]: ViewFunction.of(e)
            for e in entries
            if e.get("stateMutability") in ("view", "pure") and names.count(e["name"]) == 1
        }
        self._calldata: dict[tuple[str, tuple[Any, ...]], str] = {}
        self._memo: dict[str, tuple[str, Any]] = {}  # calldata -> (result, value)
        self._lock = threading.Lock()
        self.decoded = 0  # results decoded (memo misses): for tests and profiling

    def view(
        self,
        name: str,
        args: tuple[Any, ...],
        what: str,
        convert: Callable[[Any], T],
        block: int | None = None,
    ) -> T:
        """``convert`` of the view's result; ``convert`` must return an immutable value.

        ``block``: read the state as of that block (the latest when None).

        The converted value is what gets reused when the chain answers the
        same bytes again, so the caller gets a value equal to a fresh one.
        """
        data = self._encode(name, args)
        if data is None:
            return self._slow(name, args, what, convert, block)
        _ = self.conn.chain_id  # the endpoint serves the expected chain (checked once)
        rpc = self.conn.rpc
        tag = "latest" if block is None else hex(block)
        params: list[Any] = [{"to": self.address, "data": data}, tag]
        try:
            result = rpc.request(
                what,
                lambda: rpc.raw_result("eth_call", params, raise_contract_logic_error_on_revert),
            )
        except OffchainLookup:
            return self._slow(name, args, what, convert, block)  # CCIP read is web3's business
        except ContractLogicError as exc:
            raise self.conn.decoder.decode(revert_data_from(exc.data) or b"", what) from None
        memo_key = data
        hit = self._memo.get(memo_key)
        if hit is not None and hit[0] == result:
            return hit[1]
        fn = self.functions[name]
        try:
            raw = rpc.w3.codec.decode(fn.output_types, bytes.fromhex(str(result)[2:]))
        except (DecodingError, ValueError):
            return self._slow(name, args, what, convert, block)  # web3 words the failure
        values = [_named(o, v) for o, v in zip(fn.outputs, raw, strict=True)]
        value = convert(values[0] if len(values) == 1 else tuple(values))
        with self._lock:
            self.decoded += 1
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = (str(result), value)
        return value

    def _encode(self, name: str, args: tuple[Any, ...]) -> str | None:
        key = (name, args)
        data = self._calldata.get(key)
        if data is not None:
            return data
        fn = self.functions.get(name)
        if fn is None or not fn.accepts(args):
            return None
        try:
            encoded = self.conn.rpc.w3.codec.encode(list(fn.inputs), list(args))
        except (EncodingError, TypeError, ValueError):
            return None
        data = "0x" + (fn.selector + encoded).hex()
        with self._lock:
            if len(self._calldata) >= MEMO_LIMIT:
                self._calldata.clear()
            self._calldata[key] = data
        return data

    def _slow(
        self,
        name: str,
        args: tuple[Any, ...],
        what: str,
        convert: Callable[[Any], T],
        block: int | None = None,
    ) -> T:
        """The web3 contract call, with its own validation and wording of failures."""
        fn = self.contract.functions[name](*args)
        return convert(self.conn.view(fn, what, "latest" if block is None else block))
