"""Who is who in a task: the chain's participants whose registration is usable.

Everything here comes from the RPC endpoint, and the contract stores what a
registrant sent without checking it, so every field is untrusted
(docs/protocol.md "Threats and defences"). A registration is dropped, counted
by reason and logged (once per wallet and reason, and at most a burst of lines
a minute) when:

- its peer signature does not verify (``flocknode.identity.verify_registration``:
  the peer key inlined in the peer id must have signed chain id, task, wallet
  and box key), so nobody can claim someone else's peer id, or its peer id was
  claimed by an earlier registration;
- its box key is not a usable X25519 public key (a low-order point, in any
  encoding): no content key can be sealed for it;
- none of its multiaddrs is a valid multiaddr: nobody can dial it.

Multiaddrs are raw bytes on chain (``string`` in the ABI, never checked as
UTF-8); each is decoded and parsed here, and a bad one is dropped and counted
on its own while the member keeps its good ones. Nothing here raises on any
content of a registration.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from libp2p.peer.id import ID
from multiaddr import Multiaddr

from flocknode.chain.types import ParticipantView
from flocknode.identity import usable_box_key, verify_registration
from flocknode.logs import PeerLog

log = logging.getLogger(__name__)

# Reasons a registration (or one of its multiaddrs) is ignored; fixed strings
# used as metric labels.
BAD_PEER_SIG = "bad_peer_sig"
DUPLICATE_PEER_ID = "duplicate_peer_id"
BAD_BOX_KEY = "bad_box_key"
NO_VALID_MULTIADDR = "no_valid_multiaddr"
MULTIADDR_NOT_UTF8 = "multiaddr_not_utf8"
MULTIADDR_INVALID = "multiaddr_invalid"


@dataclass(frozen=True)
class Member:
    """A registered participant with a verified peer id."""

    wallet: str
    peer_id: ID
    box_public_key: bytes
    multiaddrs: tuple[str, ...]  # the registered ones that parse as multiaddrs
    stake: int
    eligible: bool  # active stake >= the task's minimum stake

    @property
    def peer_id_text(self) -> str:
        return self.peer_id.to_base58()


@dataclass(frozen=True)
class Registry:
    members: tuple[Member, ...]
    dropped: int  # registrations ignored (see the module doc for why)
    # What this snapshot ignored, by reason: whole registrations and single multiaddrs.
    ignored: tuple[tuple[str, int], ...] = ()

    def by_wallet(self, wallet: str) -> Member | None:
        w = wallet.lower()
        return next((m for m in self.members if m.wallet.lower() == w), None)

    def by_peer_id(self, peer_id: ID) -> Member | None:
        return next((m for m in self.members if m.peer_id == peer_id), None)

    def eligible(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.eligible)


def parse_multiaddr(raw: bytes) -> str | None:
    """The multiaddr text of registered bytes, or None when they are not one.

    Valid means: UTF-8, parses, and its text form parses again (the p2p layer
    re-parses what it is given).
    """
    return _parse_multiaddr(raw)[0]


def _parse_multiaddr(raw: bytes) -> tuple[str | None, str]:
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None, MULTIADDR_NOT_UTF8
    try:
        Multiaddr(str(Multiaddr(text)))
    except Exception:  # the library raises several types for bad input
        return None, MULTIADDR_INVALID
    return text, ""


def multiaddr_text(raw: bytes) -> str:
    """Registered multiaddr bytes for display: undecodable bytes as \\x escapes."""
    return bytes(raw).decode("utf-8", errors="backslashreplace")


class RegistryReader:
    """Builds Registry snapshots; remembers whom it already warned about."""

    def __init__(self, chain_id: int, task: str) -> None:
        self.chain_id = chain_id
        self.task = task
        self._warned: set[tuple[str, str]] = set()
        self._peer_log = PeerLog(log)
        self.dropped_total = 0

    def build(self, participants: Iterable[ParticipantView], min_stake: int) -> Registry:
        members: list[Member] = []
        ignored: Counter[str] = Counter()
        seen_peers: set[bytes] = set()
        dropped = 0
        for p in participants:
            member = self._check(p, min_stake, ignored)
            if member is not None and p.peer_id in seen_peers:
                self._ignore(p, DUPLICATE_PEER_ID, ignored)
                member = None
            if member is None:
                dropped += 1
                continue
            seen_peers.add(p.peer_id)
            members.append(member)
        self.dropped_total += dropped
        return Registry(tuple(members), dropped, tuple(sorted(ignored.items())))

    def _check(self, p: ParticipantView, min_stake: int, ignored: Counter[str]) -> Member | None:
        ok = verify_registration(
            p.peer_id, p.peer_sig, self.chain_id, self.task, p.wallet, p.box_public_key
        )
        if not ok:
            self._ignore(p, BAD_PEER_SIG, ignored)
            return None
        try:
            peer_id = ID(p.peer_id)
        except Exception:  # verify_registration already parsed it; belt and braces
            self._ignore(p, BAD_PEER_SIG, ignored)
            return None
        if not usable_box_key(p.box_public_key):
            self._ignore(p, BAD_BOX_KEY, ignored)
            return None
        addrs: list[str] = []
        for raw in p.multiaddrs:
            text, why = _parse_multiaddr(raw)
            if text is None:
                self._ignore(p, why, ignored)
            else:
                addrs.append(text)
        if not addrs:
            self._ignore(p, NO_VALID_MULTIADDR, ignored)
            return None
        return Member(
            wallet=p.wallet,
            peer_id=peer_id,
            box_public_key=p.box_public_key,
            multiaddrs=tuple(addrs),
            stake=p.stake,
            eligible=p.stake >= min_stake,
        )

    def _ignore(self, p: ParticipantView, why: str, ignored: Counter[str]) -> None:
        ignored[why] += 1
        if (p.wallet, why) in self._warned:
            return
        self._warned.add((p.wallet, why))
        self._peer_log.warning(
            "registry_" + why, "ignoring registration data wallet=%s reason=%s", p.wallet, why
        )
