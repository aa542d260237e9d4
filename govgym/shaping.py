"""Reward shaping from decisions: explicit, bounded, and kept apart from the cost.

``reward' = reward - min(max_penalty, sum of per-severity penalties) + clean_bonus``
where the clean bonus is paid only on a step with no violation. So a step's reward
changes by at most ``max(max_penalty, clean_bonus)``, whatever happens. The constraint
cost (``info["cost"]``) is never folded into the reward here: a Lagrangian learner can
use the cost and leave shaping off (``Shaping.off()``).

>>> shaping = Shaping(penalties={"high": 1.0}, max_penalty=2.0)
>>> shaping.delta(())
0.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from govgym.kernel.types import Severity, Violation

__all__ = ["DEFAULT_PENALTIES", "Shaping"]

DEFAULT_PENALTIES: dict[str, float] = {"low": 0.05, "medium": 0.2, "high": 0.5, "critical": 1.0}


def _finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"shaping {what} must be finite and >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Shaping:
    """Per-severity penalties, a cap on their sum, and an optional clean-step bonus.

    ``penalties`` maps severity names to the penalty of one violation of that severity; a
    severity it does not list costs nothing in reward (its cost is still reported). Given
    as a mapping (an env spec's ``shaping:``, ``GovernedEnv(shaping={...})``), a missing
    key takes its default: ``penalties`` = :data:`DEFAULT_PENALTIES` (low 0.05, medium
    0.2, high 0.5, critical 1.0), ``max_penalty`` = 1.0, ``clean_bonus`` = 0.0. A
    ``penalties`` table that is given replaces the defaults whole; it is not merged with
    them. No shaping argument at all means all three defaults.
    """

    penalties: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))
    max_penalty: float = 1.0
    clean_bonus: float = 0.0

    def __post_init__(self) -> None:
        table: dict[Severity, float] = {}
        for key, value in self.penalties.items():
            severity = Severity.parse(key)
            if severity in table:  # was: the last spelling silently won
                raise ValueError(f"penalty for severity {str(severity)!r} is given twice ({key!r} "
                                 "and another spelling); one penalty would silently win")
            table[severity] = _finite(value, f"penalty[{key}]")
        object.__setattr__(self, "_table", table)
        # by name, however given: equal tables compare equal, and to_dict() is plain data
        object.__setattr__(self, "penalties", {str(k): v for k, v in table.items()})
        # stored as floats: an int bonus made reward_delta an int, and a vector env's
        # info array then took env 0's int dtype and cut the others' -0.5 to 0
        object.__setattr__(self, "max_penalty", _finite(self.max_penalty, "max_penalty"))
        object.__setattr__(self, "clean_bonus", _finite(self.clean_bonus, "clean_bonus"))

    @classmethod
    def off(cls) -> Shaping:
        return cls(penalties={}, max_penalty=0.0, clean_bonus=0.0)

    @classmethod
    def from_config(cls, config: Shaping | Mapping[str, Any] | None) -> Shaping:
        if config is None:
            return cls()
        if isinstance(config, Shaping):
            return config
        unknown = set(config) - {"penalties", "max_penalty", "clean_bonus"}
        if unknown:
            raise ValueError(f"unknown shaping keys {sorted(unknown)}; "
                             "expected penalties, max_penalty, clean_bonus")
        # a given table is the whole table: a severity it does not list is not penalised
        penalties = config.get("penalties", DEFAULT_PENALTIES)
        return cls(dict(penalties or {}), config.get("max_penalty", 1.0),
                   config.get("clean_bonus", 0.0))

    def delta(self, violations: Iterable[Violation]) -> float:
        """The reward change for a step with these violations."""
        table: dict[Severity, float] = self._table  # type: ignore[attr-defined]
        penalty = 0.0
        any_violation = False
        for v in violations:
            any_violation = True
            penalty += table.get(v.severity, 0.0)
        if not any_violation:
            return self.clean_bonus
        return -min(self.max_penalty, penalty)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (severity names as keys), as an env spec's ``shaping:`` is written;
        ``Shaping.from_config`` reads it back."""
        return {"penalties": dict(self.penalties), "max_penalty": self.max_penalty,
                "clean_bonus": self.clean_bonus}
