"""Cheating behaviours for testing robustness: switched on only by the cluster launcher.

``flocknode cluster up --byzantine K:BEHAVIOUR`` sets ``FLOCKNODE_BYZANTINE`` for
K nodes. A node accepts it only on a local chain (chain id 31337); there is no
config-file key for it, so a real deployment cannot switch it on by accident.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import TypeVar

import torch

from flocknode.config import LOCAL_CHAIN_ID, NodeConfig
from flocknode.errors import ConfigError

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
    """The update a cheating proposer sends in place of its honest one."""
    if behaviour is Behaviour.SIGN_FLIP:
        return {k: (-4.0 * v).contiguous() for k, v in update.items()}
    if behaviour is Behaviour.ZERO_UPDATE:
        return {k: torch.zeros_like(v) for k, v in update.items()}
    if behaviour is Behaviour.GAUSSIAN_NOISE:
        g = torch.Generator().manual_seed(seed)
        return {
            k: torch.randn(v.shape, generator=g, dtype=torch.float32) for k, v in update.items()
        }
    return update


def tamper_wraps(behaviour: Behaviour, wraps: list[T]) -> list[T]:
    """The key wraps a cheating proposer publishes: ``partial_wraps`` keeps the first only."""
    if behaviour is Behaviour.PARTIAL_WRAPS:
        return wraps[:1]
    return wraps


def tamper_hash(behaviour: Behaviour, aggregate_hash: bytes) -> bytes:
    if behaviour is Behaviour.WRONG_HASH:
        return bytes([aggregate_hash[0] ^ 0xFF]) + aggregate_hash[1:]
    return aggregate_hash
