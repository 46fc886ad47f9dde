"""What ``flocknode doctor`` probes outside the chain client: files, ports, peers.

Small functions with no policy of their own; ``doctor.py`` turns their answers
into PASS/FAIL lines and fixes.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

from flocknode.chain.registry import Registry
from flocknode.config import NodeConfig
from flocknode.identity import DataDir, PeerKey
from flocknode.status import NodeStatus, read_status_file

RUNNING_STATUS_AGE = 5.0  # status.json younger than this: the node is running


def loose_mode(path: Path) -> int | None:
    """The mode of ``path`` if group or others have any access to it, else None."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None  # a missing file is reported by the loader that needs it
    return mode if mode & 0o077 else None


def key_fix(message: str, layout: DataDir) -> str:
    if "accessible by other users" in message:
        return message.rsplit("run: ", 1)[-1] if "run: " in message else "chmod 600 the key file"
    if "not found" in message:
        return (
            f"restore {layout.keys} from your backup, or run 'flocknode init "
            f"--data-dir {layout.root}' (new keys must be registered again)"
        )
    return f"restore {layout.keys} from your backup"


def wallet_fix(message: str, cfg: NodeConfig) -> str:
    if "password" in message:
        return (
            "put the wallet password in the file chain.password_file names (mode 600), or set "
            "FLOCKNODE_WALLET_PASSWORD (under systemd: the wallet-password credential)"
        )
    if "not found" in message:
        return "set chain.keystore to your keystore, or create one: flocknode init --new-wallet"
    return f"check chain.keystore in {cfg.source}"


def running_status(layout: DataDir) -> NodeStatus | None:
    """The running node's status, or None if no node wrote one in the last few seconds."""
    return read_status_file(layout.status_file, RUNNING_STATUS_AGE)


def multiaddr_host_port(addr: str) -> tuple[str, int] | None:
    parts = addr.strip("/").split("/")
    try:
        kind, host, proto, port = parts[0], parts[1], parts[2], int(parts[3])
    except (IndexError, ValueError):
        return None
    if kind not in ("ip4", "ip6") or proto != "tcp":
        return None
    return host, port


def host_port(listen: str) -> tuple[str, int] | None:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "0.0.0.0", int(port)


def try_bind(host: str, port: int) -> str | None:
    """None if ``host:port`` can be bound now, else the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        return e.strerror or str(e)
    return None


async def dial_any(
    peer_key: PeerKey, registry: Registry, timeout: float, stable: float = 1.5
) -> tuple[str | None, list[str]]:
    """Run the node's p2p host (ephemeral loopback port) with the node's peer key
    until a registered member's connection has stayed up ``stable`` seconds (a
    member that does not recognise us closes it at once)."""

    lib = logging.getLogger("libp2p")
    quiet = lib.level == logging.WARNING  # the default: failed dials are our report, not noise
    if quiet:
        lib.setLevel(logging.CRITICAL)
    try:
        return await _dial_any(peer_key, registry, timeout, stable)
    finally:
        if quiet:
            lib.setLevel(logging.WARNING)


async def _dial_any(
    peer_key: PeerKey, registry: Registry, timeout: float, stable: float
) -> tuple[str | None, list[str]]:
    import trio

    from flocknode.p2p.host import HostConfig, P2PHost
    from flocknode.rounds.membership import ChainMembership

    membership = ChainMembership()
    membership.update_registry(registry)
    p2p = P2PHost(
        peer_key,
        membership,
        HostConfig(listen_addrs=("/ip4/127.0.0.1/tcp/0",), dial_timeout=max(1.0, timeout / 3)),
    )
    reached: str | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(p2p.run)
        with trio.move_on_after(timeout):
            while reached is None:
                for peer in p2p.connected_peers():
                    await trio.sleep(stable)
                    if peer in p2p.connected_peers():
                        addrs = ", ".join(str(a) for a in membership.addrs(peer))
                        reached = f"{peer} ({addrs})"
                        break
                await trio.sleep(0.1)
        tried = []
        for m in registry.eligible():
            if m.peer_id == p2p.peer_id:
                continue
            fails = p2p.dialer.failures(m.peer_id)
            tried.append(
                f"{m.peer_id_text[-8:]} at {', '.join(m.multiaddrs) or 'no address'}: "
                f"{'unreachable' if fails else 'no answer'}"
            )
        p2p.stop()
    return reached, tried
