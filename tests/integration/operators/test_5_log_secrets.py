"""No key material in the logs: the keystore node ran every round at debug level, with
py-libp2p at debug too, was stopped and restarted; its whole log is searched for its
wallet key, keystore password, peer key seed and box key in every usual text form."""

from __future__ import annotations

import base64

import pytest

from tests.integration.operators.operators_cluster import KEYSTORE_NODE, OperatorCluster

pytestmark = pytest.mark.integration


def forms(secret: bytes) -> list[str]:
    h = secret.hex()
    return [
        h,
        h.upper(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        repr(secret)[2:-1],  # b'...' as Python prints bytes
    ]


def test_no_key_material_in_a_debug_log(settled: OperatorCluster) -> None:
    h = settled
    log = h.log_text(KEYSTORE_NODE)
    lines = log.splitlines()
    # the log is the real thing: debug records of ours and of py-libp2p, several runs
    assert sum("level=debug" in line for line in lines) > 100
    assert any("logger=libp2p" in line and "level=debug" in line for line in lines)
    assert log.count('msg="node started') >= 1
    assert h.wallet(KEYSTORE_NODE) in log  # public identity is logged, secrets are not
    s = h.secrets
    leaks = [f for secret in (s.wallet_key, s.peer_seed, s.box_secret) for f in forms(secret)]
    leaks.append(s.password)
    found = [f for f in leaks if f in log]
    assert not found, f"key material in {KEYSTORE_NODE}'s log: {[f[:6] + '...' for f in found]}"
