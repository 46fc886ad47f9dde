"""The aggregation part of a task's settings: the rule, its parameters, the norm check.

Plain frozen data with validation at construction, so a bad value is refused
where it enters (a task file, a node config, the canonical JSON of a task) and
never half-way through a round. ``to_dict``/``from_dict`` give the form that
``flocknode.learning.settings`` puts into the task's canonical JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

RULES = ("fedavg", "median", "trimmed_mean", "multi_krum", "centered_clip")
COMPRESSIONS = ("none", "int8", "topk")
TOPK_BITS = (8, 2)
# Left out of the canonical JSON while they hold these values (settings that do
# not use them keep the bytes and hash they always had).
OPTIONAL_AGGREGATION: dict[str, object] = {
    "outer_lr": 1.0,
    "compression": "none",
    "topk_fraction": 0.01,
    "topk_bits": 8,
}


class SettingsError(ValueError):
    """A setting with a value out of range or of the wrong type; names the setting."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(f"{name}: {message}")


@dataclass(frozen=True)
class AggregationSettings:
    """How voters combine the included updates of a round (docs/protocol.md, step 5).

    - ``rule``: one of ``RULES``.
    - ``norm_factor``: for tasks without a step scale, an update whose L2 norm
      exceeds ``norm_factor`` times the lower median norm of the included
      non-zero updates is rejected (>= 1).
    - ``norm_floor``, ``norm_ceiling``: the band, as multiples of the task's
      step scale ``learning_rate x sqrt(parameters x local_steps)`` (Adam with
      a step count only; ``core.step_scale``): a norm below the floor is "no
      work" (left out and unpaid, not slashed), one above the ceiling is
      rejected (0 <= floor < ceiling). Honest digits updates lie at 0.41 to 1.07 of the scale and
      their 4x sign flips at 1.66 or more at a constant learning rate
      (bench/accuracy.py, 15 rounds); under digits-mlp's decaying rate honest
      ones reach 1.61 and flips stay above 2.2, so that task sets 2.0.
    - ``trim_ratio``: trimmed_mean drops ``floor(trim_ratio * n)`` values at each
      end of every coordinate (capped so at least one value is left); in [0, 0.5).
    - ``krum_f``: multi_krum's assumed number of Byzantine updates among the
      included ones (>= 0). Updates the norm check rejects count against it:
      the rule runs on the ``n`` survivors with ``f = max(0, krum_f -
      rejected)`` (``core.krum_budget``), so once the norm check has removed
      the attackers multi_krum averages every survivor. Multi-Krum needs
      ``n >= 2f + 3`` for its guarantee, so 1 is the most that 5 proposers a
      round support; bench/accuracy.py (digits, 3 of 10 nodes sign-flipping,
      20 seeds) gave mean round-10 accuracy 0.947 with 1 and 0.940 with 2.
    - ``krum_m``: how many updates multi_krum averages; ``None`` means ``n - f``
      (with ``n`` and ``f`` as above); a set value is capped at ``n``.
    - ``clip_tau``: centered_clip's clipping radius (L2, > 0, in the units of
      the update; the default suits the digits demo, whose honest updates lie
      about 6.7 from their coordinate-wise median: bench/accuracy.py).
    - ``clip_iterations``: centered_clip's fixed number of iterations (1..100).
    - ``outer_lr``: the new global model is the old plus ``outer_lr`` times the
      rule's result (trained weights only; running statistics and counters
      take their step whole), in (0, 1]. Below 1 a round's proposers move the
      model part of the way their updates point, so one round's non-IID mix
      cannot undo the others' (the digits tasks: 0.5, docs/tasks.md).
    - ``compression``: the form proposers send updates in (``COMPRESSIONS``,
      ``flocknode.aggregation.compression``): ``none`` (dense), ``int8`` (every
      value in 8 bits, one scale per chunk) or ``topk`` (per chunk the
      ``topk_fraction`` largest values, in ``topk_bits`` bits: 8 or 2). Lossy
      forms keep what was not sent and add it the next time (error feedback).
    - ``topk_fraction``: in (0, 1]; ``topk_bits``: 8 or 2. Both only with
      ``topk`` (otherwise they keep their defaults, so one task has one
      canonical form).
    """

    rule: str = "fedavg"
    norm_factor: float = 3.0
    norm_floor: float = 0.1
    norm_ceiling: float = 1.5
    trim_ratio: float = 0.2
    krum_f: int = 1
    krum_m: int | None = None
    clip_tau: float = 3.0
    clip_iterations: int = 3
    outer_lr: float = 1.0
    compression: str = "none"
    topk_fraction: float = 0.01
    topk_bits: int = 8

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise SettingsError("rule", f"unknown rule {self.rule!r}; one of {', '.join(RULES)}")
        _check_float("norm_factor", self.norm_factor, low=1.0)
        _check_float("norm_floor", self.norm_floor, low=0.0)
        _check_float("norm_ceiling", self.norm_ceiling, above=float(self.norm_floor))
        _check_float("trim_ratio", self.trim_ratio, low=0.0, below=0.5)
        _check_int("krum_f", self.krum_f, low=0)
        if self.krum_m is not None:
            _check_int("krum_m", self.krum_m, low=1)
        _check_float("clip_tau", self.clip_tau, above=0.0)
        _check_int("clip_iterations", self.clip_iterations, low=1, high=100)
        _check_float("outer_lr", self.outer_lr, above=0.0)
        if float(self.outer_lr) > 1.0:
            raise SettingsError("outer_lr", f"must be <= 1, got {self.outer_lr!r}")
        if self.compression not in COMPRESSIONS:
            raise SettingsError(
                "compression",
                f"unknown compression {self.compression!r}; one of {', '.join(COMPRESSIONS)}",
            )
        _check_float("topk_fraction", self.topk_fraction, above=0.0)
        if float(self.topk_fraction) > 1.0:
            raise SettingsError("topk_fraction", f"must be <= 1, got {self.topk_fraction!r}")
        _check_int("topk_bits", self.topk_bits, low=2, high=8)
        if self.topk_bits not in TOPK_BITS:
            raise SettingsError("topk_bits", f"must be 8 or 2, got {self.topk_bits!r}")
        if self.compression != "topk":
            for name in ("topk_fraction", "topk_bits"):
                if getattr(self, name) != OPTIONAL_AGGREGATION[name]:
                    raise SettingsError(name, "applies to compression 'topk' only")
        # Store floats as floats so 3 and 3.0 give one canonical form.
        floats = (
            "norm_factor",
            "norm_floor",
            "norm_ceiling",
            "trim_ratio",
            "clip_tau",
            "outer_lr",
            "topk_fraction",
        )
        for name in floats:
            object.__setattr__(self, name, float(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """Every setting, but an optional one at its neutral value (``OPTIONAL_AGGREGATION``)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in OPTIONAL_AGGREGATION
            or getattr(self, f.name) != OPTIONAL_AGGREGATION[f.name]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "aggregation") -> AggregationSettings:
        """Build from a mapping; an unknown key is an error, a missing key takes its default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"{where}.{unknown[0]}", "unknown setting")
        try:
            return cls(**dict(data))
        except SettingsError as e:
            raise SettingsError(f"{where}.{e.name}", e.message) from None


def _check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(name, f"expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SettingsError(name, f"must be finite, got {value!r}")
    if low is not None and v < low:
        raise SettingsError(name, f"must be >= {low}, got {value!r}")
    if above is not None and v <= above:
        raise SettingsError(name, f"must be > {above}, got {value!r}")
    if below is not None and v >= below:
        raise SettingsError(name, f"must be < {below}, got {value!r}")


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(name, f"expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise SettingsError(name, f"must be {bound}, got {value!r}")
