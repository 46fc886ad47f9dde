"""Pure pieces of the client: view decoding, log decoding, retry classification."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
import requests
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, Web3RPCError

from flocknode.chain.contracts import load_artifact
from flocknode.chain.events import EventDecoder, RoundOpened, Slashed
from flocknode.chain.rpc import RetryPolicy, is_transient
from flocknode.chain.types import (
    InvalidTaskParams,
    ParticipantView,
    Phase,
    RoundView,
    TaskParams,
    UpdateView,
    camel,
    from_abi,
)

TASK = to_checksum_address("0x" + "12" * 20)
WALLET = to_checksum_address("0x" + "34" * 20)


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _decoder() -> EventDecoder:
    return EventDecoder(load_artifact("FlockTask").abi, TASK, Web3().codec)


def _log(topics: list[bytes], data: bytes, address: str = TASK) -> dict[str, Any]:
    return {
        "address": address,
        "topics": topics,
        "data": data,
        "blockNumber": 7,
        "logIndex": 2,
        "transactionHash": b"\xee" * 32,
        "transactionIndex": 0,
        "blockHash": b"\xbb" * 32,
    }


def test_events_decode_to_typed_dataclasses() -> None:
    dec = _decoder()
    opened = _log([keccak(b"RoundOpened(uint256,uint64)"), _word(5)], encode(["uint64"], [42]))
    assert dec.decode(opened) == RoundOpened(7, 2, b"\xee" * 32, round=5, seed_block=42)
    slashed = _log(
        [
            keccak(b"Slashed(uint256,address,uint256,string)"),
            _word(3),
            bytes(12) + bytes.fromhex(WALLET[2:]),
        ],
        encode(["uint256", "string"], [10, "idle: no update submitted"]),
    )
    event = dec.decode(slashed)
    assert isinstance(event, Slashed)
    assert (event.wallet, event.amount, event.reason) == (WALLET, 10, "idle: no update submitted")
    assert dec.dropped == 0


def test_foreign_and_malformed_logs_are_dropped_not_raised() -> None:
    dec = _decoder()
    topic = keccak(b"RoundOpened(uint256,uint64)")
    assert dec.decode(_log([topic, _word(1)], encode(["uint64"], [1]), address=WALLET)) is None
    assert dec.dropped == 0  # another contract's log is simply not ours
    published = _log([keccak(b"SettingsPublished(bytes)")], b"")
    assert dec.decode(published) is None
    assert dec.dropped == 0  # nor is one of the task's events that the node does not read
    bad = [
        _log([topic, _word(1)], b"\x01"),  # truncated data
        _log([topic], encode(["uint64"], [1])),  # indexed topic missing
        _log([keccak(b"Nope()")], b""),  # unknown event
        _log([], b""),  # no topics at all
        {"address": TASK},  # not even a log
    ]
    assert dec.decode_all(bad) == []
    assert dec.dropped == len(bad)


def test_views_build_from_named_tuples() -> None:
    Update = namedtuple("Update", "submitted updateHash blobId size")
    raw = Update(True, b"\x01" * 32, b"\x02" * 32, 9)
    assert from_abi(UpdateView, raw) == UpdateView(True, b"\x01" * 32, b"\x02" * 32, 9)
    fields: dict[str, Any] = {camel(f): 0 for f in RoundView.__dataclass_fields__}
    fields.update(phase=6, seed=b"", eligible=["0x" + "34" * 20], eligibleStakes=[1])
    fields.update(proposers=[], voters=[], updates=[raw], votes=[], finalized=True, accepted=False)
    fields.update(winningHash=b"", globalModelHashAfter=b"")
    view = from_abi(RoundView, fields)
    assert view.phase is Phase.FINALIZED and view.eligible == (WALLET,)
    assert view.updates == (from_abi(UpdateView, raw),)


def test_a_missing_or_mistyped_field_fails_loudly() -> None:
    with pytest.raises(TypeError, match="no field 'multiaddrs'"):
        from_abi(ParticipantView, {"wallet": WALLET, "peerId": b"", "boxPublicKey": b""})
    with pytest.raises(TypeError):
        from_abi(UpdateView, {"submitted": 1, "updateHash": b"", "blobId": b"", "size": 1})


def _http_error(status: int) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    return requests.HTTPError(response=resp)


def test_transient_classification() -> None:
    assert is_transient(requests.ConnectionError("refused"))
    assert is_transient(requests.Timeout())
    assert is_transient(_http_error(503)) and is_transient(_http_error(429))
    assert not is_transient(_http_error(400))
    assert not is_transient(ContractCustomError("0x1234", data="0x1234"))
    assert not is_transient(Web3RPCError("{'message': 'nonce too low'}"))
    rate = Web3RPCError(
        "x",
        rpc_response={
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32005, "message": "rate limit exceeded"},
        },
    )
    assert is_transient(rate)
    assert not is_transient(ValueError("bad"))


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    delays = [policy.delay(a) for a in range(1, 8)]
    assert 0.08 <= delays[0] <= 0.12
    assert all(d <= 1.2 for d in delays)
    assert delays[3] > delays[0]


def test_task_params_that_cannot_be_encoded_are_refused() -> None:
    ok: dict[str, Any] = {"token": WALLET, "model_spec_hash": b"\x01" * 32}
    ok |= {"config_hash": b"\x02" * 32}
    ok |= {"initial_model_hash": b"\x03" * 32, "total_rounds": 5}
    assert TaskParams(**ok).to_abi()[:5] == (WALLET, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 5)
    with pytest.raises(InvalidTaskParams, match="config_hash: must be 32 bytes"):
        TaskParams(**{**ok, "config_hash": b"\x02" * 31})
    with pytest.raises(InvalidTaskParams, match=r"quorum_bps: 70000 is outside 0\.\.65535"):
        TaskParams(**ok, quorum_bps=70_000)
    with pytest.raises(InvalidTaskParams, match="token"):
        TaskParams(**{**ok, "token": "not an address"})
    with pytest.raises(InvalidTaskParams, match="min_stake: must be an integer"):
        TaskParams(**ok, min_stake=1.5)  # type: ignore[arg-type]
