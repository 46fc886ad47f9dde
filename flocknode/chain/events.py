"""Typed events of ``FlockTask`` (docs/contracts.md "Events").

Logs come from the RPC endpoint and are untrusted: a log that does not decode
against the ABI (another contract's, a malformed one) is dropped and counted,
never raised. Each event is a frozen dataclass carrying where it happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_abi.codec import ABICodec
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3._utils.events import get_event_data

from flocknode.chain.types import from_abi
from flocknode.logs import PeerLog

log = logging.getLogger(__name__)
_peer_log = PeerLog(log)


@dataclass(frozen=True)
class ChainEvent:
    block_number: int
    log_index: int
    tx_hash: bytes


@dataclass(frozen=True)
class Registered(ChainEvent):
    wallet: str
    peer_id: bytes
    box_public_key: bytes


@dataclass(frozen=True)
class MultiaddrsUpdated(ChainEvent):
    wallet: str


@dataclass(frozen=True)
class Staked(ChainEvent):
    wallet: str
    amount: int


@dataclass(frozen=True)
class UnstakeRequested(ChainEvent):
    wallet: str
    amount: int


@dataclass(frozen=True)
class Withdrawn(ChainEvent):
    wallet: str
    amount: int


@dataclass(frozen=True)
class RewardsClaimed(ChainEvent):
    wallet: str
    amount: int


@dataclass(frozen=True)
class RewardsFunded(ChainEvent):
    from_: str
    amount: int


@dataclass(frozen=True)
class RoundOpened(ChainEvent):
    round: int
    seed_block: int


@dataclass(frozen=True)
class RolesElected(ChainEvent):
    round: int
    seed: bytes
    proposers: tuple[str, ...]
    voters: tuple[str, ...]


@dataclass(frozen=True)
class UpdateSubmitted(ChainEvent):
    round: int
    proposer: str
    update_hash: bytes
    blob_id: bytes
    size: int


@dataclass(frozen=True)
class VoteCommitted(ChainEvent):
    round: int
    voter: str


@dataclass(frozen=True)
class VoteRevealed(ChainEvent):
    round: int
    voter: str
    aggregate_hash: bytes


@dataclass(frozen=True)
class RoundFinalized(ChainEvent):
    round: int
    accepted: bool
    winning_hash: bytes
    global_model_hash: bytes


@dataclass(frozen=True)
class RoundVoided(ChainEvent):
    round: int
    reason: str


@dataclass(frozen=True)
class Rewarded(ChainEvent):
    round: int
    wallet: str
    amount: int


@dataclass(frozen=True)
class Slashed(ChainEvent):
    round: int
    wallet: str
    amount: int
    reason: str


EVENT_TYPES: dict[str, type[ChainEvent]] = {
    cls.__name__: cls
    for cls in (
        Registered,
        MultiaddrsUpdated,
        Staked,
        UnstakeRequested,
        Withdrawn,
        RewardsClaimed,
        RewardsFunded,
        RoundOpened,
        RolesElected,
        UpdateSubmitted,
        VoteCommitted,
        VoteRevealed,
        RoundFinalized,
        RoundVoided,
        Rewarded,
        Slashed,
    )
}

E = TypeVar("E", bound=ChainEvent)


def of_type(events: Iterable[ChainEvent], cls: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, cls)]


class EventDecoder:
    """Decodes raw logs of one contract address into typed events."""

    def __init__(self, abi: Sequence[Mapping[str, Any]], address: str, codec: ABICodec) -> None:
        self.address = to_checksum_address(address)
        self._codec = codec
        self._by_topic: dict[bytes, tuple[Any, type[ChainEvent]]] = {}
        self._unused: set[bytes] = set()  # the contract's own events nobody here reads
        for entry in abi:
            if entry.get("type") != "event":
                continue
            topic = bytes(event_abi_to_log_topic(dict(entry)))  # type: ignore[arg-type]
            if entry["name"] in EVENT_TYPES:
                self._by_topic[topic] = (entry, EVENT_TYPES[entry["name"]])
            else:
                self._unused.add(topic)
        missing = set(EVENT_TYPES) - {cls.__name__ for _, cls in self._by_topic.values()}
        if missing:
            raise ValueError(f"the contract ABI lacks the events {sorted(missing)}")
        self.dropped = 0  # logs of this address that did not decode

    def topics(self) -> list[bytes]:
        return list(self._by_topic)

    def decode(self, raw: Mapping[str, Any]) -> ChainEvent | None:
        """A typed event, or None (counted) for a log that is not one of ours."""
        try:
            if to_checksum_address(raw["address"]) != self.address:
                return None
            topics = raw.get("topics") or []
            if not topics:
                raise ValueError("log without topics")
            found = self._by_topic.get(bytes(topics[0]))
            if found is None:
                if bytes(topics[0]) in self._unused:
                    return None  # ours, just not one the node reads (SettingsPublished)
                raise ValueError("unknown event topic")
            entry, cls = found
            data = get_event_data(self._codec, entry, raw)
            fields = dict(data["args"])
            fields["blockNumber"] = int(raw["blockNumber"])
            fields["logIndex"] = int(raw["logIndex"])
            fields["txHash"] = bytes(raw["transactionHash"])
            return from_abi(cls, fields)
        except Exception as exc:
            self.dropped += 1
            _peer_log.warning(
                "undecodable_log",
                "dropped undecodable log address=%s error=%s",
                raw.get("address"),
                type(exc).__name__,
            )
            return None

    def decode_all(self, logs: Iterable[Mapping[str, Any]]) -> list[ChainEvent]:
        out = [e for e in (self.decode(r) for r in logs) if e is not None]
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out
