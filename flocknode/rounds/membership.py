"""The p2p layer's ``Membership`` over the chain: the task registry and round seats.

The chain follower brings it in line with each snapshot it publishes
(``follow``); the p2p layer reads it on every message, so every method is a
dictionary look-up that never blocks and never raises.
"""

from __future__ import annotations

from libp2p.peer.id import ID
from multiaddr import Multiaddr

from flocknode.chain.registry import Member, Registry
from flocknode.chain.types import RoundView
from flocknode.p2p.membership import StaticMembership
from flocknode.rounds.windows import GOSSIP_ROUNDS_KEPT


class ChainMembership(StaticMembership):
    """Members = registered participants with a valid peer signature and either
    enough stake (counted from the next round, so a newcomer is heard before its
    stake counts) or a seat in a round still kept (``GOSSIP_ROUNDS_KEPT``): a
    participant that requested its unstake keeps its stake in the current round
    and may hold a seat there, and finishes that role before it leaves
    (docs/protocol.md, "Faults and the promises kept under them")."""

    def __init__(self) -> None:
        super().__init__(0)
        self.registry = Registry((), 0)
        self._by_wallet: dict[str, Member] = {}
        self._seats: dict[int, RoundView] = {}

    def follow(self, registry: Registry, view: RoundView | None) -> None:
        """Take the registry and the current round's seats from a chain snapshot.

        Compared by value: an unchanged registry or view costs a comparison only.
        The seats are set again after a registry change (voters' peer ids come
        from it).
        """
        changed = registry != self.registry
        if changed:
            self.update_registry(registry)
        if view is not None and (changed or self._seats.get(view.round) != view):
            self.update_round(view)

    def update_registry(self, registry: Registry) -> None:
        self.registry = registry
        self._by_wallet = {m.wallet.lower(): m for m in registry.members}
        self._sync_members()

    def update_round(self, view: RoundView) -> None:
        self.set_round(max(self.current_round(), view.round))
        self._seats[view.round] = view
        voters = [self.peer_of(w) for w in view.voters]
        self.set_voters(view.round, [p for p in voters if p is not None])
        for r in [r for r in self._seats if r < view.round - GOSSIP_ROUNDS_KEPT]:
            del self._seats[r]
        self._sync_members()

    def _sync_members(self) -> None:
        seated = {w.lower() for v in self._seats.values() for w in (*v.proposers, *v.voters)}
        current = {
            m.peer_id: m for m in self.registry.members if m.eligible or m.wallet.lower() in seated
        }
        for pid in self.members():
            if pid not in current:
                self.remove(pid)
        for pid, m in current.items():
            self.add(pid, _parse_addrs(m.multiaddrs))

    def member_by_wallet(self, wallet: str) -> Member | None:
        return self._by_wallet.get(wallet.lower())

    def peer_of(self, wallet: str) -> ID | None:
        m = self._by_wallet.get(wallet.lower())
        return m.peer_id if m else None

    def wallet_of(self, peer_id: ID) -> str | None:
        m = self.registry.by_peer_id(peer_id)
        return m.wallet if m else None


def _parse_addrs(addrs: tuple[str, ...]) -> list[Multiaddr]:
    out = []
    for a in addrs:
        try:
            out.append(Multiaddr(a))
        except Exception:
            continue  # a malformed registered address is skipped, not fatal
    return out
