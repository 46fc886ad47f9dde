"""Who is who in a task: the chain's participants whose peer signature checks out.

The contract stores ``peerSig`` unchecked. A registration whose signature
does not verify (``flocknode.identity.verify_registration``: the peer key
inlined in the peer id must have signed chain id, task, wallet and box key) is
dropped and counted, with one warning per wallet, so nobody can claim someone
else's peer id. Everything here comes from the RPC endpoint and is treated as
untrusted: a peer id that does not parse is dropped the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from libp2p.peer.id import ID

from flocknode.chain.types import ParticipantView
from flocknode.identity import verify_registration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """A registered participant with a verified peer id."""

    wallet: str
    peer_id: ID
    box_public_key: bytes
    multiaddrs: tuple[str, ...]
    stake: int
    eligible: bool  # active stake >= the task's minimum stake

    @property
    def peer_id_text(self) -> str:
        return self.peer_id.to_base58()


@dataclass(frozen=True)
class Registry:
    members: tuple[Member, ...]
    dropped: int  # registrations ignored because their peer signature failed

    def by_wallet(self, wallet: str) -> Member | None:
        w = wallet.lower()
        return next((m for m in self.members if m.wallet.lower() == w), None)

    def by_peer_id(self, peer_id: ID) -> Member | None:
        return next((m for m in self.members if m.peer_id == peer_id), None)

    def eligible(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.eligible)


class RegistryReader:
    """Builds Registry snapshots; remembers whom it already warned about."""

    def __init__(self, chain_id: int, task: str) -> None:
        self.chain_id = chain_id
        self.task = task
        self._warned: set[str] = set()
        self.dropped_total = 0

    def build(self, participants: Iterable[ParticipantView], min_stake: int) -> Registry:
        members: list[Member] = []
        dropped = 0
        seen_peers: set[bytes] = set()
        for p in participants:
            member = self._check(p, min_stake)
            if member is None or p.peer_id in seen_peers:
                if member is not None:
                    self._warn(p, "peer id already claimed by an earlier registration")
                dropped += 1
                continue
            seen_peers.add(p.peer_id)
            members.append(member)
        self.dropped_total += dropped
        return Registry(tuple(members), dropped)

    def _check(self, p: ParticipantView, min_stake: int) -> Member | None:
        ok = verify_registration(
            p.peer_id, p.peer_sig, self.chain_id, self.task, p.wallet, p.box_public_key
        )
        if not ok:
            self._warn(p, "peer signature does not verify")
            return None
        try:
            peer_id = ID(p.peer_id)
        except Exception:  # verify_registration already parsed it; belt and braces
            self._warn(p, "peer id does not parse")
            return None
        return Member(
            wallet=p.wallet,
            peer_id=peer_id,
            box_public_key=p.box_public_key,
            multiaddrs=p.multiaddrs,
            stake=p.stake,
            eligible=p.stake >= min_stake,
        )

    def _warn(self, p: ParticipantView, why: str) -> None:
        if p.wallet in self._warned:
            return
        self._warned.add(p.wallet)
        log.warning("ignoring registration wallet=%s reason=%r", p.wallet, why)
