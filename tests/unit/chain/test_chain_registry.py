"""The registry reader on hand-made participant records: untrusted bytes in,
usable members out, everything else dropped and counted (never raised).

The records are what the chain returns (see tests/integration/chain for the
same through a real anvil); the peer signatures are real."""

from __future__ import annotations

import logging

import pytest
from eth_account import Account

from flocknode.chain.registry import RegistryReader
from flocknode.chain.types import ParticipantView
from flocknode.identity import BoxKey, PeerKey, sign_registration
from tests.fixtures.low_order import LOW_ORDER_KEYS

CHAIN_ID = 31337
TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
GOOD = b"/ip4/127.0.0.1/tcp/4001"


def record(multiaddrs: list[bytes], box: bytes | None = None) -> ParticipantView:
    wallet = Account.create().address
    peer = PeerKey.generate()
    box = box if box is not None else BoxKey.generate().public_bytes
    return ParticipantView(
        wallet=wallet,
        peer_id=peer.peer_id.to_bytes(),
        box_public_key=box,
        multiaddrs=tuple(multiaddrs),
        peer_sig=sign_registration(peer, CHAIN_ID, TASK, wallet, box),
        stake=100,
        pending_unstake=0,
        rewards=0,
        slashed=0,
        registered_at=0,
        last_elected_round=0,
    )


NOT_UTF8 = [b"\xff\xfe", b"/ip4/127.0.0.1/tcp/\xc3\x28", b"\x80" * 256, b"/dns4/a\xedb/tcp/1"]
NOT_A_MULTIADDR = [b"hello", b"/ip4/999.1.1.1/tcp/1", b"/tcp/99999999", b"/ip4", b"\x00", b" "]


def test_finding1_non_utf8_multiaddr_is_dropped() -> None:
    honest = record([GOOD])
    junk = [record([raw]) for raw in NOT_UTF8]
    mixed = record([NOT_UTF8[1], b"/ip4/10.0.0.1/tcp/4002"])
    reg = RegistryReader(CHAIN_ID, TASK).build([honest, *junk, mixed], min_stake=10)
    assert [m.wallet for m in reg.members] == [honest.wallet, mixed.wallet]
    assert reg.members[0].multiaddrs == (GOOD.decode(),)
    assert reg.members[1].multiaddrs == ("/ip4/10.0.0.1/tcp/4002",)
    assert reg.dropped == len(junk)
    assert dict(reg.ignored) == {
        "multiaddr_not_utf8": len(junk) + 1,
        "no_valid_multiaddr": len(junk),
    }


def test_finding1_text_that_is_not_a_multiaddr_is_dropped() -> None:
    honest = record([GOOD])
    junk = [record([raw]) for raw in NOT_A_MULTIADDR]
    reg = RegistryReader(CHAIN_ID, TASK).build([*junk, honest], min_stake=10)
    assert [m.wallet for m in reg.members] == [honest.wallet]
    assert dict(reg.ignored) == {
        "multiaddr_invalid": len(junk),
        "no_valid_multiaddr": len(junk),
    }


def test_finding1_ignored_registrations_are_logged_once_per_wallet_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = RegistryReader(CHAIN_ID, TASK)
    bad = record([b"\xff"])
    with caplog.at_level(logging.WARNING, logger="flocknode.chain.registry"):
        for _ in range(5):
            reg = reader.build([bad], min_stake=10)
            assert reg.members == () and reg.dropped == 1  # counted in every snapshot
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # not UTF-8, then no valid multiaddr left
    assert all(bad.wallet in line for line in lines)
    assert "\\xff" not in "".join(lines)  # the registrant's bytes are not logged


def test_finding2_low_order_box_key_is_dropped() -> None:
    honest = record([GOOD])
    bad = [record([GOOD], box=k) for k in LOW_ORDER_KEYS]
    reg = RegistryReader(CHAIN_ID, TASK).build([*bad, honest], min_stake=10)
    assert [m.wallet for m in reg.members] == [honest.wallet]
    assert reg.dropped == len(LOW_ORDER_KEYS)
    assert dict(reg.ignored) == {"bad_box_key": len(LOW_ORDER_KEYS)}
