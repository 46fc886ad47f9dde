"""The py-libp2p compat layer: a missing hook refuses the host; a failing check refuses.

Hosts are built for real (``P2PHost`` constructs py-libp2p's host without
opening a socket); a library change is simulated by removing or replacing the
hooked attribute on py-libp2p's own classes.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.host.exceptions import StreamFailure
from libp2p.host.ping import ID as PING
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub

from flocknode.errors import FlockError
from flocknode.identity.keys import PeerKey
from flocknode.p2p import compat, host
from flocknode.p2p.compat import Libp2pCompatError
from flocknode.p2p.host import MEMBERS_ONLY_BUILTINS, HostConfig, P2PHost
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.metrics import DIAL_REFUSED, OUTBOUND_REFUSED

ROOT = Path(__file__).resolve().parents[3]
CONFIG = HostConfig(listen_addrs=("/ip4/127.0.0.1/tcp/0",))


def _host(membership: StaticMembership | None = None) -> P2PHost:
    return P2PHost(PeerKey.generate(), membership or StaticMembership(), CONFIG)


def _refusal() -> str:
    with pytest.raises(Libp2pCompatError) as info:
        _host()
    # the CLI prints a FlockError as one line and exits with its code
    assert isinstance(info.value, FlockError) and info.value.exit_code == 2
    line = str(info.value)
    assert "\n" not in line and line.startswith("py-libp2p")
    return line


def test_a_built_host_has_every_gate_installed() -> None:
    p2p = _host()
    compat.verify_installed(p2p.host, p2p.pubsub, MEMBERS_ONLY_BUILTINS)
    network = p2p.host.get_network()
    assert network.connection_config.enable_health_monitoring is False  # type: ignore[attr-defined]
    assert network.connection_config.max_connections_per_peer == 1  # type: ignore[attr-defined]


def test_the_pinned_version_is_the_one_checked() -> None:
    pins = {
        ROOT / "constraints.txt": (ROOT / "constraints.txt").read_text(),
        ROOT / "pyproject.toml": "\n".join(
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        ),
    }
    for path, text in pins.items():
        found = re.search(r"^\s*libp2p==(\S+)\s*$", text, re.MULTILINE)
        assert found is not None, path
        assert found[1] == compat.LIBP2P_VERSION, path


def test_another_libp2p_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat.importlib.metadata, "version", lambda name: "0.9.0")
    assert "py-libp2p 0.9.0 is installed" in _refusal()


def test_a_call_site_that_no_longer_uses_the_hook_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def new_stream(self: Swarm, peer_id: ID) -> None:  # dials some other way
        return None

    monkeypatch.setattr(Swarm, "new_stream", new_stream)
    assert "Swarm.new_stream using dial_peer" in _refusal()


@pytest.mark.parametrize(
    ("owner", "name", "named"),
    [
        (Swarm, "dial_peer", "dial_peer"),
        (Swarm, "unblock_peer", "Swarm.unblock_peer"),
        (AutoConnector, "record_disconnect", "AutoConnector.record_disconnect"),
        (AutoConnector, "maybe_connect", "maybe_connect"),
        (Pubsub, "get_hello_packet", "Pubsub.get_hello_packet"),
        (Pubsub, "push_msg", "push_msg"),
    ],
)
def test_a_missing_hook_refuses_to_build_the_host(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, named: str
) -> None:
    monkeypatch.delattr(owner, name)
    assert named in _refusal()


def test_a_host_of_another_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class OtherHost(BasicHost):
        pass

    built = host.build_host

    def build_other(peer_key: PeerKey, config: HostConfig) -> BasicHost:
        h = built(peer_key, config)
        h.__class__ = OtherHost
        return h

    monkeypatch.setattr(host, "build_host", build_other)
    assert "built a OtherHost on a Swarm" in _refusal()


def test_a_missing_builtin_handler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {**MEMBERS_ONLY_BUILTINS, TProtocol("/not/installed/1.0.0"): "other"}
    monkeypatch.setattr(host, "MEMBERS_ONLY_BUILTINS", extra)
    assert "the built-in handler of /not/installed/1.0.0 is missing" in _refusal()


@pytest.mark.parametrize(
    "undo",
    [
        lambda p: delattr(p.host, "new_stream"),
        lambda p: delattr(p.host.get_network(), "dial_peer"),
        lambda p: delattr(p.pubsub, "push_msg"),
        lambda p: delattr(p.host.get_network().auto_connector, "maybe_connect"),
        lambda p: p.host.set_stream_handler(PING, _ungated),
        lambda p: setattr(p.host.get_network().connection_config, "enable_health_monitoring", 1),
    ],
    ids=["stream", "dial", "push_msg", "auto_connect", "builtin", "health"],
)
def test_verify_installed_notices_a_gate_that_is_gone(undo: object) -> None:
    p2p = _host()
    assert callable(undo)
    undo(p2p)
    with pytest.raises(Libp2pCompatError, match="is not installed on this host"):
        compat.verify_installed(p2p.host, p2p.pubsub, MEMBERS_ONLY_BUILTINS)


async def _ungated(stream: INetStream) -> None:
    return None


class _BrokenMembership(StaticMembership):
    def is_member(self, peer_id: ID) -> bool:
        raise RuntimeError("membership unavailable")


async def test_a_gate_whose_check_fails_refuses() -> None:
    p2p = _host(_BrokenMembership())
    stranger = PeerKey.generate().peer_id
    with pytest.raises(SwarmException, match="dial gate: gate_error"):
        await p2p.host.get_network().dial_peer(stranger)
    with pytest.raises(StreamFailure, match="stream gate: gate_error"):
        await p2p.host.new_stream(stranger, [PING])
    assert p2p.metrics.get(DIAL_REFUSED, "gate_error") == 1
    assert p2p.metrics.get(OUTBOUND_REFUSED, "ping") == 1
