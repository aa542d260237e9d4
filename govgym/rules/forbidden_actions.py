"""``forbidden_actions``: pre-step ban on discrete values or ranges of a Box action.

Examples::

    - kind: forbidden_actions        # Discrete: never action 2
      values: [2]

    - kind: forbidden_actions        # MultiDiscrete: value 3 of dimension 0
      dims: {0: [3]}

    - kind: forbidden_actions        # Box: torque above 1.5 is banned (space bound 2.0)
      ranges:
        - {index: 0, low: 1.5, high: 2.5}

A range bans the open interval ``low < a < high``: its boundary values stay allowed, so
``repair`` (used by the ``replace`` verdict) moves a banned action to the nearer
boundary (in the space's dtype, rounded toward the allowed side). To ban everything up
to a space bound, put ``high`` past it, or ``.inf``: an infinite end bans the infinity
too. A NaN in a ranged entry is banned (it cannot be judged; no repair). Discrete bans
also give an exact action mask, and ``dims`` a per-dimension mask for ``MultiDiscrete``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, StrictInt, model_validator

from govgym.kernel.types import Proposal, Severity, Violation
from govgym.rules.base import INDEX_LIMIT, Rule, RuleParams, register_rule

__all__ = ["ForbiddenActions"]


class Range(RuleParams):
    index: StrictInt = Field(default=0, ge=-INDEX_LIMIT, lt=INDEX_LIMIT)
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self


class ForbiddenActionsParams(RuleParams):
    values: list[StrictInt] = []
    dims: dict[int, list[StrictInt]] = {}
    ranges: list[Range] = []

    @model_validator(mode="after")
    def _something(self) -> ForbiddenActionsParams:
        if not (self.values or self.dims or self.ranges):
            raise ValueError("give at least one of values, dims or ranges")
        return self


def _inside(a: float, r: Range) -> bool:
    """Whether ``a`` is banned by ``r``: inside the open range, at an infinite end of it,
    or NaN (which no comparison can place)."""
    return r.low < a < r.high or a != a or a == r.high == np.inf or a == r.low == -np.inf


def dims_mask(space: Any, dims: dict[int, frozenset[int]]) -> np.ndarray:
    """A ``MultiDiscrete`` space's per-dimension masks, concatenated, with the values in
    ``dims`` (dimension -> action values, ``start`` included) masked out."""
    nvec = np.asarray(space.nvec).reshape(-1)
    start = np.broadcast_to(np.asarray(getattr(space, "start", 0)).reshape(-1), nvec.shape)
    parts = []
    for dim, n in enumerate(nvec):
        part = np.ones(int(n), dtype=bool)
        for value in dims.get(dim, ()):
            if 0 <= value - start[dim] < n:
                part[value - start[dim]] = False
        parts.append(part)
    return np.concatenate(parts)


@register_rule
class ForbiddenActions(Rule):
    kind = "forbidden_actions"
    Params = ForbiddenActionsParams
    default_severity = Severity.HIGH
    checks_proposals = True

    def __init__(self, name: str, params: ForbiddenActionsParams, severity: Severity,
                 cost: float) -> None:
        super().__init__(name, params, severity, cost)
        self._values = frozenset(params.values)
        self._dims = {d: frozenset(v) for d, v in params.dims.items()}
        self._ranges = params.ranges

    def check(self, proposal: Proposal, state: Any) -> Sequence[Violation]:
        action = proposal.action
        found: list[Violation] = []
        if self._values and np.ndim(action) == 0 and int(action) in self._values:
            found.append(self.violation("forbidden_value", f"action {int(action)} is forbidden"))
        if self._dims:
            flat = np.asarray(action).reshape(-1)
            for dim, banned in self._dims.items():
                if dim < flat.size and int(flat[dim]) in banned:
                    found.append(self.violation(
                        "forbidden_value", f"action[{dim}]={int(flat[dim])} is forbidden"))
        if self._ranges:
            flat = np.asarray(action, dtype=np.float64).reshape(-1)
            for r in self._ranges:
                if r.index < flat.size and _inside(float(flat[r.index]), r):
                    found.append(self.violation(
                        "forbidden_range",
                        f"action[{r.index}]={flat[r.index]:.4g} inside forbidden ({r.low}, {r.high})"))
        return found

    def mask(self, space: Any, state: Any) -> np.ndarray | None:
        nvec = getattr(space, "nvec", None)
        if nvec is not None:
            return dims_mask(space, self._dims)
        n = getattr(space, "n", None)
        if n is None:
            return None
        start = int(getattr(space, "start", 0))
        mask = np.ones(int(n), dtype=bool)
        for value in self._values:
            if 0 <= value - start < n:
                mask[value - start] = False
        return mask

    def repair(self, action: Any, space: Any) -> Any | None:
        if not self._ranges:
            return None
        repaired = np.array(action, dtype=np.float64).reshape(-1)
        dtype = np.dtype(getattr(space, "dtype", None) or np.float32)
        result = repaired.astype(dtype)
        for r in self._ranges:
            if r.index >= repaired.size:
                continue
            a = float(repaired[r.index])
            if a != a:
                return None  # NaN: no nearer boundary
            if _inside(a, r):
                to_low = a == -np.inf or (a != np.inf and a - r.low <= r.high - a)
                boundary, outward = (r.low, -np.inf) if to_low else (r.high, np.inf)
                value = dtype.type(boundary)
                if dtype.kind == "f" and _inside(float(value), r):  # rounded into the range
                    value = np.nextafter(value, dtype.type(outward))
                result[r.index] = value
        return result.reshape(np.shape(action))
