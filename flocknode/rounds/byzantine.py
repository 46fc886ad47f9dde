"""Cheating behaviours for testing robustness: switched on only by the cluster launcher.

``flocknode cluster up --byzantine K:BEHAVIOUR`` sets ``FLOCKNODE_BYZANTINE`` for
K nodes. A node accepts it only on a local chain (chain id 31337); there is no
config-file key for it, so a real deployment cannot switch it on by accident.

The proposer and voter paths know nothing of cheating: they call the hooks of
the ``RoleStrategy`` they are given (``RoleDeps.behaviour``) at the few points a
cheater decides differently, and the node composes them with ``strategy_for``
of its ``Behaviour`` (``Honest``, whose hooks change nothing, unless the
launcher asked for a cheat).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import torch

from flocknode.config import LOCAL_CHAIN_ID, NodeConfig
from flocknode.errors import ConfigError
from flocknode.rounds.unservable import unservable_hash
from flocknode.store.journal import VoteRecord

ENV_BYZANTINE = "FLOCKNODE_BYZANTINE"
T = TypeVar("T")


class Behaviour(enum.Enum):
    HONEST = "honest"
    # proposers
    SIGN_FLIP = "sign_flip"  # the honest update negated and scaled by 4
    LABEL_FLIP = "label_flip"  # trains on permuted labels
    GAUSSIAN_NOISE = "gaussian_noise"  # N(0, 1) noise in place of the update
    ZERO_UPDATE = "zero_update"  # an all-zero update (no work) in place of the trained one
    PARTIAL_WRAPS = "partial_wraps"  # publishes its key wrap to one voter only
    # voters
    WRONG_HASH = "wrong_hash"  # commits and reveals a corrupted aggregate hash
    NO_REVEAL = "no_reveal"  # commits and never reveals
    # reveals a made-up aggregate hash derived from the round (colluders agree on it)
    UNSERVABLE_HASH = "unservable_hash"

    @classmethod
    def names(cls) -> list[str]:
        return [b.value for b in cls if b is not cls.HONEST]


def behaviour_from_env(cfg: NodeConfig, environ: Mapping[str, str] | None = None) -> Behaviour:
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_BYZANTINE, "")
    if not raw:
        return Behaviour.HONEST
    if cfg.chain.chain_id != LOCAL_CHAIN_ID:
        raise ConfigError(ENV_BYZANTINE, "", "cheating behaviours exist only for local test chains")
    try:
        return Behaviour(raw)
    except ValueError:
        raise ConfigError(
            ENV_BYZANTINE, "", f"unknown behaviour {raw!r}; one of {', '.join(Behaviour.names())}"
        ) from None


def tamper_update(
    behaviour: Behaviour, update: dict[str, torch.Tensor], seed: int
) -> dict[str, torch.Tensor]:
    """The update a cheating proposer sends in place of its honest one.

    Only floating entries change (integer counters keep their dtype). On the
    packed form of a compressed update (``flocknode.aggregation.compression``)
    the floating entries are the scales, so a sign flip or a zero update is
    exactly the same change of the update the voters decode.
    """
    if behaviour is Behaviour.SIGN_FLIP:
        return _floats(update, lambda v: -4.0 * v)
    if behaviour is Behaviour.ZERO_UPDATE:
        return _floats(update, torch.zeros_like)
    if behaviour is Behaviour.GAUSSIAN_NOISE:
        g = torch.Generator().manual_seed(seed)
        return _floats(update, lambda v: torch.randn(v.shape, generator=g, dtype=v.dtype))
    return update


def _floats(
    update: dict[str, torch.Tensor], change: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {k: change(v).contiguous() if v.is_floating_point() else v for k, v in update.items()}


def tamper_wraps(behaviour: Behaviour, wraps: list[T]) -> list[T]:
    """The key wraps a cheating proposer publishes: ``partial_wraps`` keeps the first only."""
    if behaviour is Behaviour.PARTIAL_WRAPS:
        return wraps[:1]
    return wraps


def tamper_hash(behaviour: Behaviour, aggregate_hash: bytes) -> bytes:
    if behaviour is Behaviour.WRONG_HASH:
        return bytes([aggregate_hash[0] ^ 0xFF]) + aggregate_hash[1:]
    return aggregate_hash


Update = dict[str, torch.Tensor]


class RoleStrategy(Protocol):
    """The decision points of the proposer and voter paths (``Honest``: change nothing)."""

    name: str  # the Behaviour's value (journal notes, logs)

    @property
    def flips_labels(self) -> bool:
        """Train on permuted labels."""
        ...

    @property
    def reveals(self) -> bool:
        """Reveal the committed vote."""
        ...

    def update(self, update: Update, seed: int) -> Update:
        """The update sealed in place of the trained one."""
        ...

    def wraps(self, wraps: list[T]) -> list[T]:
        """The key wraps published in place of the sealed ones."""
        ...

    def aggregate_hash(self, aggregate_hash: bytes) -> bytes:
        """The aggregate hash voted for in place of the computed one."""
        ...

    def vote(self, round_number: int, vote: VoteRecord) -> VoteRecord:
        """The vote journaled and committed in place of the decided one."""
        ...


class Honest:
    """What every production node does: the hooks return what they are given."""

    name = Behaviour.HONEST.value
    flips_labels = False
    reveals = True

    def update(self, update: Update, seed: int) -> Update:
        return update

    def wraps(self, wraps: list[T]) -> list[T]:
        return wraps

    def aggregate_hash(self, aggregate_hash: bytes) -> bytes:
        return aggregate_hash

    def vote(self, round_number: int, vote: VoteRecord) -> VoteRecord:
        return vote


class Cheat(Honest):
    """One of the test behaviours, through the same hooks."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.name = behaviour.value
        self.flips_labels = behaviour is Behaviour.LABEL_FLIP
        self.reveals = behaviour is not Behaviour.NO_REVEAL

    def update(self, update: Update, seed: int) -> Update:
        return tamper_update(self.behaviour, update, seed)

    def wraps(self, wraps: list[T]) -> list[T]:
        return tamper_wraps(self.behaviour, wraps)

    def aggregate_hash(self, aggregate_hash: bytes) -> bytes:
        return tamper_hash(self.behaviour, aggregate_hash)

    def vote(self, round_number: int, vote: VoteRecord) -> VoteRecord:
        return collude(self.behaviour, round_number, vote)


def strategy_for(behaviour: Behaviour) -> RoleStrategy:
    return Honest() if behaviour is Behaviour.HONEST else Cheat(behaviour)


def collude(behaviour: Behaviour, round_number: int, vote: VoteRecord) -> VoteRecord:
    """An ``unservable_hash`` voter's vote: a hash nobody holds, no inputs, a positive score."""
    if behaviour is not Behaviour.UNSERVABLE_HASH:
        return vote
    return VoteRecord(
        aggregate_hash=unservable_hash(round_number).hex(),
        included_bits=0,
        rejected_bits=0,
        flag_bits=0,
        score=1,
        salt=vote.salt,
    )
