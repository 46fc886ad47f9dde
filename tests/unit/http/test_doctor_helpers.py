"""Pure helpers of ``flocknode doctor`` (its checks run against a real cluster in
tests/integration/operators/test_4_doctor.py)."""

from __future__ import annotations

from pathlib import Path

from flocknode.commands.doctor import GAS_PER_ROUND, Check, _same_addrs, format_check
from flocknode.commands.doctor_probes import host_port, loose_mode, multiaddr_host_port, try_bind


def test_addresses_compare_with_port_zero_as_any_port() -> None:
    a = "/ip4/127.0.0.1/tcp/4001"
    assert _same_addrs([a], [a])
    assert not _same_addrs([a], ["/ip4/127.0.0.1/tcp/4002"])
    assert _same_addrs([a], ["/ip4/127.0.0.1/tcp/0"])
    assert not _same_addrs([a], ["/ip4/10.0.0.1/tcp/0"])
    assert not _same_addrs([a, a], [a])


def test_listen_strings_parse() -> None:
    assert multiaddr_host_port("/ip4/0.0.0.0/tcp/4001") == ("0.0.0.0", 4001)
    assert multiaddr_host_port("/ip6/::1/tcp/9") == ("::1", 9)
    assert multiaddr_host_port("/ip4/1.2.3.4/udp/9") is None
    assert multiaddr_host_port("/dns4/x/tcp/1") is None
    assert host_port("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert host_port("[::1]:9100") == ("::1", 9100)
    assert host_port(":9100") == ("0.0.0.0", 9100)
    assert host_port("9100") is None


def test_file_modes_and_binding(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_bytes(b"x")
    f.chmod(0o600)
    assert loose_mode(f) is None
    f.chmod(0o640)
    assert loose_mode(f) == 0o640
    assert loose_mode(tmp_path / "missing") is None
    assert try_bind("127.0.0.1", 0) is None
    assert try_bind("192.0.2.1", 0) is not None  # not an address of this machine


def test_lines_and_the_gas_budget() -> None:
    assert format_check(Check("rpc", "PASS", "ok")) == "PASS  rpc        ok"
    line = format_check(Check("keys", "FAIL", "too open", "chmod 600 k"))
    assert line.splitlines()[1].strip() == "fix: chmod 600 k"
    # worst round: a voter's commit + reveal, plus an open that finalizes and an election
    assert GAS_PER_ROUND == 88_363 + 136_214 + 510_867 + 738_463
