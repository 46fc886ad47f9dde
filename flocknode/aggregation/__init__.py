"""Aggregation of a round's updates (docs/protocol.md, step 5): pure functions, no I/O.

    result = aggregate(global_model, updates, settings, seats, scale)
    result.model      # new global model, float32
    result.rejected   # seats the norm check rejected (slashable)
    result.selected   # multi_krum: the seats it averaged

``scale`` is the task's step scale (``core.step_scale``), the norm check's
reference (None: no band).

Bit-for-bit deterministic across machines, thread counts and library builds;
see ``numeric`` for how and ``rules`` for each rule's exact definition.
"""

from flocknode.aggregation.core import (
    AggregationInputError,
    AggregationResult,
    Model,
    NonFiniteUpdateError,
    aggregate,
    apply_update,
    norm_check,
)
from flocknode.aggregation.settings import RULES, AggregationSettings, SettingsError

__all__ = [
    "RULES",
    "AggregationInputError",
    "AggregationResult",
    "AggregationSettings",
    "Model",
    "NonFiniteUpdateError",
    "SettingsError",
    "aggregate",
    "apply_update",
    "norm_check",
]
