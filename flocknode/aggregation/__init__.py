"""Aggregation of a round's updates (docs/protocol.md, step 5): pure functions, no I/O.

    result = aggregate(global_model, updates, settings, seats, scale)
    result.model      # new global model, float32
    result.rejected   # seats the norm check rejected (slashable)
    result.no_work    # seats set aside below the norm floor (not paid, not slashed)
    result.selected   # multi_krum: the seats it averaged

``scale`` is the task's step scale (``core.step_scale``), the norm check's
reference (None: no band).

Bit-for-bit deterministic across machines, thread counts and library builds;
see ``numeric`` for how and ``rules`` for each rule's exact definition.
"""

from typing import TYPE_CHECKING, Any

from flocknode.aggregation.settings import RULES, AggregationSettings, SettingsError

if TYPE_CHECKING:
    from flocknode.aggregation.core import (
        AggregationInputError,
        AggregationResult,
        Model,
        NonFiniteUpdateError,
        aggregate,
        apply_update,
        no_work,
        norm_check,
    )

_CORE = {
    "AggregationInputError",
    "AggregationResult",
    "Model",
    "NonFiniteUpdateError",
    "aggregate",
    "apply_update",
    "no_work",
    "norm_check",
}


def __getattr__(name: str) -> Any:
    """The torch-based core is imported on first use: reading settings (the CLI's
    config checks, ``status``) does not pay torch's import."""
    if name in _CORE:
        from flocknode.aggregation import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "no_work",
    "norm_check",
]
