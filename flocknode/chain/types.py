"""Frozen views of the contract's state (docs/contracts.md "Views").

Field names are the Solidity names in snake_case; :func:`from_abi` builds any
of these dataclasses from what web3 decodes (named tuples or dicts keyed by the
camelCase names), so a renamed or missing field fails loudly in one place.
Addresses are checksum strings, hashes are ``bytes``, lists are tuples.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_utils import is_address, to_checksum_address

from flocknode.chain.errors import ChainError


class Phase(enum.IntEnum):
    NONE = 0
    SEEDING = 1
    TRAIN = 2
    COMMIT = 3
    REVEAL = 4
    FINALIZABLE = 5
    FINALIZED = 6
    VOIDED = 7

    @property
    def label(self) -> str:
        return self.name.lower()


Address = str  # checksum address


class InvalidTaskParams(ChainError):
    """A task parameter that cannot even be encoded (the contract checks the rest)."""


# Solidity widths of the integer fields of TaskParams (docs/contracts.md).
_PARAM_BITS = {
    "total_rounds": 32,
    "proposers_per_round": 16,
    "voters_per_round": 16,
    "max_participants": 16,
    "min_stake": 256,
    "train_seconds": 32,
    "commit_seconds": 32,
    "reveal_seconds": 32,
    "quorum_bps": 16,
    "slash_bps": 16,
    "idle_slash_bps": 16,
    "reward_per_round": 256,
    "proposer_share_bps": 16,
    "seed_delay": 16,
}


@dataclass(frozen=True)
class TaskParams:
    token: Address
    model_spec_hash: bytes
    config_hash: bytes
    initial_model_hash: bytes
    total_rounds: int
    proposers_per_round: int = 3
    voters_per_round: int = 3
    max_participants: int = 256
    min_stake: int = 10**18
    train_seconds: int = 60
    commit_seconds: int = 20
    reveal_seconds: int = 20
    quorum_bps: int = 6666
    slash_bps: int = 1000
    idle_slash_bps: int = 100
    reward_per_round: int = 10**18
    proposer_share_bps: int = 5000
    seed_delay: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                if not is_address(value):
                    raise InvalidTaskParams(f"token: {value!r} is not an address")
            elif f.name.endswith("_hash"):
                if not isinstance(value, bytes) or len(value) != 32:
                    raise InvalidTaskParams(f"{f.name}: must be 32 bytes")
            else:
                bits = _PARAM_BITS[f.name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidTaskParams(f"{f.name}: must be an integer")
                if not 0 <= value < 2**bits:
                    raise InvalidTaskParams(f"{f.name}: {value} is outside 0..{2**bits - 1}")

    def to_abi(self) -> tuple[Any, ...]:
        """The constructor's struct argument, fields in declaration order."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class ParticipantView:
    """A participant record as stored. The contract checks none of the registrant's
    bytes beyond their lengths: ``multiaddrs`` are raw bytes (``string`` in the ABI,
    not necessarily UTF-8); flocknode.chain.registry decides what is usable."""

    wallet: Address
    peer_id: bytes
    box_public_key: bytes
    multiaddrs: tuple[bytes, ...]
    peer_sig: bytes
    stake: int
    pending_unstake: int
    rewards: int
    slashed: int
    registered_at: int
    last_elected_round: int


@dataclass(frozen=True)
class UpdateView:
    submitted: bool
    update_hash: bytes
    blob_id: bytes
    size: int


@dataclass(frozen=True)
class VoteView:
    committed: bool
    revealed: bool
    commitment: bytes
    aggregate_hash: bytes
    included_bits: int
    rejected_bits: int
    flag_bits: int
    score: int


@dataclass(frozen=True)
class RoundView:
    round: int
    phase: Phase
    seed_block: int
    seed: bytes
    elected_at: int
    train_end: int
    commit_end: int
    reveal_end: int
    eligible: tuple[Address, ...]
    eligible_stakes: tuple[int, ...]
    proposers: tuple[Address, ...]
    voters: tuple[Address, ...]
    updates: tuple[UpdateView, ...]
    votes: tuple[VoteView, ...]
    finalized: bool
    accepted: bool
    winning_hash: bytes
    winning_included_bits: int
    global_model_hash_after: bytes

    def role_of(self, wallet: str) -> tuple[str, int] | None:
        """("proposer"|"voter", seat) of a wallet in this round, or None."""
        w = to_checksum_address(wallet)
        if w in self.proposers:
            return ("proposer", self.proposers.index(w))
        if w in self.voters:
            return ("voter", self.voters.index(w))
        return None


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


T = TypeVar("T")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        return tuple(_convert(inner, v) for v in value)
    if tp is Phase:
        return Phase(int(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_abi(tp, value)
    if tp is bytes:
        return bytes(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected a bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an int, got {value!r}")
        return value
    if tp is str and isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if tp is str:
        return str(value)
    raise TypeError(f"unsupported field type {tp}")  # pragma: no cover


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    raise TypeError(f"expected a struct with named fields, got {type(value).__name__}")


def from_abi(cls: type[T], value: Any) -> T:
    """Build a view dataclass from a decoded struct (camelCase names)."""
    data = _as_mapping(value)
    hints = _hints(cls)  # type: ignore[arg-type]
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = camel(f.name)
        if key not in data:
            raise TypeError(f"{cls.__name__}: the contract returned no field {key!r}")
        kwargs[f.name] = _convert(hints[f.name], data[key])
    return cls(**kwargs)
