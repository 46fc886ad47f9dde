"""Registrants are untrusted: whatever bytes they store, reading the registry works.

The contract takes ``string[] multiaddrs`` without checking UTF-8 (Solidity
never does) and refuses only the all-zero box key. These tests register junk
through a real anvil with hand-built calldata (``bytes`` in the ``string``
slots, same ABI encoding) and read it back through the client the node uses.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from flocknode.chain.anvil import AnvilChain
from flocknode.chain.client import AsyncTaskClient, _participants
from flocknode.chain.errors import ContractRevert
from flocknode.commands.status import collect_status, format_status
from flocknode.identity import BoxKey, PeerKey, sign_registration
from tests.fixtures.low_order import REGISTRABLE_LOW_ORDER_KEYS
from tests.integration.chain.chain_helpers import Deployed, deploy

pytestmark = pytest.mark.integration

REGISTER = function_signature_to_4byte_selector("register(bytes,bytes32,string[],bytes)")
UPDATE = function_signature_to_4byte_selector("updateMultiaddrs(string[])")


def send_raw(task: Deployed, index: int, data: bytes) -> None:
    """A transaction with hand-built calldata from dev account ``index`` (unlocked)."""
    w3 = task.owner.conn.rpc.w3
    tx: Any = {"from": task.client(index).wallet, "to": task.address, "data": "0x" + data.hex()}
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx))
    assert receipt["status"] == 1


def register_raw(
    task: Deployed, index: int, multiaddrs: list[bytes], box: bytes | None = None
) -> str:
    """Register dev account ``index`` with a valid peer signature and raw multiaddr bytes."""
    wallet = task.client(index).wallet
    peer = PeerKey.generate()
    box = box if box is not None else BoxKey.generate().public_bytes
    sig = sign_registration(peer, task.chain.chain_id, task.address, wallet, box)
    args = encode(
        ["bytes", "bytes32", "bytes[]", "bytes"], [peer.peer_id.to_bytes(), box, multiaddrs, sig]
    )
    send_raw(task, index, REGISTER + args)
    return wallet


NOT_UTF8 = b"/ip4/127.0.0.1/tcp/\xff\xfe"


def test_finding1_registry_read_survives_junk_multiaddrs(chain: AnvilChain) -> None:
    task = deploy(chain)
    honest = [task.join(i, 200) for i in (1, 2, 3)]
    not_utf8 = register_raw(task, 4, [NOT_UTF8, b"\x80\x81"])
    not_multiaddr = register_raw(task, 5, [b"hello world", b"/ip4/1.2.3.4/tcp/99999999"])
    mixed = register_raw(task, 6, [b"\xc3\x28", b"/ip4/127.0.0.1/tcp/4006"])
    # a member in good standing later stores junk with updateMultiaddrs
    updated = task.join(7, 200)
    send_raw(task, 7, UPDATE + encode(["bytes[]"], [[b"\xed\xa0\x80"]]))

    owner = task.owner
    assert owner.participant_count() == 7
    raw = owner.participant(not_utf8)
    assert raw.multiaddrs == (NOT_UTF8, b"\x80\x81")  # as stored, never decoded
    assert len(owner.all_participants(page=2)) == 7

    reg = owner.registry()
    assert [m.wallet for m in reg.members] == [*(m.wallet for m in honest), mixed]
    assert reg.by_wallet(mixed) is not None
    assert reg.by_wallet(mixed).multiaddrs == ("/ip4/127.0.0.1/tcp/4006",)  # type: ignore[union-attr]
    assert reg.by_wallet(updated.wallet) is None and reg.by_wallet(not_multiaddr) is None
    assert reg.dropped == 3
    assert dict(reg.ignored) == {
        "multiaddr_not_utf8": 4,  # two of not_utf8's, mixed's first, updated's
        "multiaddr_invalid": 2,
        "no_valid_multiaddr": 3,
    }

    # web3's own call (the path taken when the raw one cannot decode) reads bytes too
    slow = owner._views._slow("participants", (0, 100), "participants", _participants)
    assert [p.multiaddrs for p in slow][3] == (NOT_UTF8, b"\x80\x81")

    # the node's face of the client, in a worker thread
    async def read() -> int:
        return len((await AsyncTaskClient(owner).registry()).members)

    assert trio.run(read) == 4

    # `flocknode status` of a wallet whose own record holds junk
    status = collect_status(task.client(4), not_utf8)
    assert status.registration is not None
    assert status.registration.multiaddrs == ("/ip4/127.0.0.1/tcp/\\xff\\xfe", "\\x80\\x81")
    assert "addresses     /ip4/127.0.0.1/tcp/\\xff\\xfe, \\x80\\x81" in format_status(status)


def test_finding2_low_order_box_key_registrations_are_dropped(chain: AnvilChain) -> None:
    """Every low-order box key the contract stores (13 encodings at 599c82c; a
    contract that refuses some keeps them out itself) is dropped by the registry;
    the honest members stay."""
    task = deploy(chain)
    honest = [task.join(i, 200) for i in (1, 2)]
    stored = []
    for i, key in enumerate(REGISTRABLE_LOW_ORDER_KEYS):
        client = task.client(3 + i)
        peer = PeerKey.generate()
        sig = sign_registration(peer, chain.chain_id, task.address, client.wallet, key)
        try:
            client.register(peer.peer_id.to_bytes(), key, ["/ip4/127.0.0.1/tcp/5000"], sig)
        except ContractRevert as e:
            assert "BoxKey" in e.name, e  # a contract that checks them itself
            continue
        assert task.owner.participant(client.wallet).box_public_key == key
        stored.append(client.wallet)
    reg = task.owner.registry()
    assert [m.wallet for m in reg.members] == [m.wallet for m in honest]
    assert reg.dropped == len(stored)
    assert dict(reg.ignored) == ({"bad_box_key": len(stored)} if stored else {})
