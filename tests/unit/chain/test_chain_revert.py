"""Revert data -> one sentence, for every custom error the contracts can raise."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from flocknode.chain.contracts import default_decoder, load_artifact
from flocknode.chain.revert import SENTENCES, RevertDecoder, revert_data_from

WALLET = to_checksum_address("0x" + "ab" * 20)


def _sample(abi_type: str) -> Any:
    if abi_type == "address":
        return WALLET
    if abi_type.startswith("uint"):
        return 3
    if abi_type == "string":
        return "quorumBps"
    raise AssertionError(f"no sample for {abi_type}")


def _errors() -> list[dict[str, Any]]:
    out = []
    for name in ("FlockTask", "FlockToken"):
        out += [dict(e) for e in load_artifact(name).abi if e["type"] == "error"]
    return out


def _data(entry: dict[str, Any], values: list[Any]) -> bytes:
    types = [i["type"] for i in entry["inputs"]]
    selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
    return selector + encode(types, values)


@pytest.mark.parametrize("entry", _errors(), ids=lambda e: e["name"])
def test_every_contract_error_has_its_own_sentence(entry: dict[str, Any]) -> None:
    assert entry["name"] in SENTENCES
    values = [_sample(i["type"]) for i in entry["inputs"]]
    err = default_decoder().decode(_data(entry, values), "someAction")
    assert err.name == entry["name"]
    assert list(err.error_args.values()) == values
    text = str(err)
    assert text and "\n" not in text
    assert not text.startswith("the contract refused:")  # not the generic fallback
    if any(i["type"] == "address" for i in entry["inputs"]):
        assert WALLET in text


def test_documented_examples() -> None:
    dec = default_decoder()
    by_name = {e["name"]: e for e in _errors()}
    voter = _data(by_name["NotElectedVoter"], [3, WALLET])
    assert str(dec.decode(voter)) == f"wallet {WALLET} is not an elected voter in round 3"
    seed = _data(by_name["SeedNotReady"], [4, 57])
    assert str(dec.decode(seed)) == "the seed for round 4 is not ready until block 57"
    phase = _data(by_name["WrongPhase"], [2, 3, 4])
    assert str(dec.decode(phase)) == "round 2 is in the commit phase, not the reveal phase"


def test_solidity_builtin_errors_and_garbage() -> None:
    dec = RevertDecoder([])
    text = dec.decode(bytes.fromhex("08c379a0") + encode(["string"], ["nope"]), "stake")
    assert str(text) == "the contract refused stake: nope"
    panic = dec.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]), "stake")
    assert panic.name == "Panic" and "overflow" in str(panic)
    assert "without giving a reason" in str(dec.decode(b"", "withdraw"))
    assert "unknown error 0xdeadbeef" in str(dec.decode(bytes.fromhex("deadbeef")))
    by_name = {e["name"]: e for e in _errors()}
    truncated = _data(by_name["SeedNotReady"], [4, 57])[:20]
    assert "malformed error data" in str(default_decoder().decode(truncated))


@given(st.binary(max_size=300))
def test_any_bytes_give_a_sentence(data: bytes) -> None:
    err = default_decoder().decode(data, "x")
    assert str(err) and "\n" not in str(err)


def test_revert_data_from_web3_shapes() -> None:
    assert revert_data_from("0x1234") == b"\x12\x34"
    assert revert_data_from("Reverted 0x1234") == b"\x12\x34"
    assert revert_data_from({"data": "0xab"}) == b"\xab"
    assert revert_data_from(None) is None
    assert revert_data_from("0xZZ") is None
    assert revert_data_from("execution reverted") is None
