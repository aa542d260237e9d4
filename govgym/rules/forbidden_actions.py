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
too. A NaN in a ranged entry is banned (it cannot be judged; no repair). ``repair``
only picks a value that the space's bounds allow and that no other range bans, else
there is none and the step is blocked. Discrete bans also give an exact action mask,
and ``dims`` and ``ranges`` a per-dimension mask for ``MultiDiscrete``.

A ``Discrete`` action may come as an int or an array of one value. An index (``dims``
key, range ``index``) that the action does not have, ``values`` on an action of several
values, or a ``values``/``dims`` value with a fraction (``1.7`` is not action 1) is an
error of the rule, reported as a critical ``rule_error``: it never silently bans nothing.
A governed env whose action space already shows such a misfit (an index or dimension
it lacks, ``values`` on an action of several values) refuses the policy when it is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field, StrictInt, model_validator

from govgym.kernel.types import Proposal, Severity, Violation
from govgym.rules.base import (
    INDEX_LIMIT,
    FieldError,
    Number,
    Rule,
    RuleParams,
    discrete_value,
    flat_size,
    integral,
    register_rule,
    unique_int_keys,
)

__all__ = ["ForbiddenActions"]


class Range(RuleParams):
    index: StrictInt = Field(default=0, ge=-INDEX_LIMIT, lt=INDEX_LIMIT)
    low: Number
    high: Number

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise FieldError("high", f"low ({self.low}) must be < high ({self.high})")
        return self


#: ``dims``: dimension (>= 0) -> values (at least one); two keys for one dimension are
#: refused
Dims = Annotated[dict[Annotated[int, Field(ge=0, lt=INDEX_LIMIT)],
                      Annotated[list[StrictInt], Field(min_length=1)]],
                 BeforeValidator(unique_int_keys)]


class ForbiddenActionsParams(RuleParams):
    values: list[StrictInt] = []
    dims: Dims = {}
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


def dims_mask(space: Any, dims: dict[int, frozenset[int]],
              ranges: Sequence[Range] = ()) -> np.ndarray:
    """A ``MultiDiscrete`` space's per-dimension masks, concatenated, with the values in
    ``dims`` (dimension -> action values, ``start`` included) and the values inside
    ``ranges`` (by ``index``, negative from the end) masked out."""
    nvec = np.asarray(space.nvec).reshape(-1)
    start = np.broadcast_to(np.asarray(getattr(space, "start", 0)).reshape(-1), nvec.shape)
    by_dim = _by_entry(ranges, nvec.size)
    parts = []
    for dim, n in enumerate(nvec):
        n, first = int(n), int(start[dim])  # Python ints: a huge banned value cannot overflow
        part = np.ones(n, dtype=bool)
        for value in dims.get(dim, ()):
            if 0 <= value - first < n:
                part[value - first] = False
        for r in by_dim.get(dim, ()):
            for offset in range(n):
                if _inside(float(first + offset), r):
                    part[offset] = False
        parts.append(part)
    return np.concatenate(parts)


def _by_entry(ranges: Sequence[Range], size: int) -> dict[int, list[Range]]:
    """The ranges that address each entry of a flat action of ``size`` entries, by the
    entry's index (a negative ``index`` counts from the end; one the action lacks is left
    out, as :func:`entry` reports it when the action is checked)."""
    grouped: dict[int, list[Range]] = {}
    for r in ranges:
        if -size <= r.index < size:
            grouped.setdefault(r.index % size, []).append(r)
    return grouped


def entry(flat: np.ndarray, index: int, what: str) -> Any:
    """``flat[index]``, or an error naming the parameter: an index the action does not
    have would otherwise ban nothing (fail open); raised, it is a ``rule_error``."""
    if not -flat.size <= index < flat.size:
        raise IndexError(f"{what} {index} is outside the action's {flat.size} entries")
    return flat[index]


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

    def check_spaces(self, observation_space: Any, action_space: Any) -> None:
        size = flat_size(action_space)
        if size is None:
            return  # a Tuple, Dict, Text action: judged at run time, as given
        for number, r in enumerate(self.params.ranges):
            if not -size <= r.index < size:
                raise FieldError(("ranges", number, "index"), (
                    f"index {r.index} is outside the action of {size} value(s) "
                    f"({action_space}): is the policy for another env?"))
        for dim in self.params.dims:
            if not 0 <= dim < size:
                raise FieldError(("dims", dim), (
                    f"dimension {dim} is outside the action of {size} value(s) "
                    f"({action_space}): is the policy for another env?"))
        if self.params.values and size != 1:
            raise FieldError("values", (
                f"values ban whole actions of one value; this action has {size} "
                f"({action_space}): use dims (MultiDiscrete) or ranges (Box)"))

    def check(self, proposal: Proposal, state: Any) -> Sequence[Violation]:
        action = proposal.action
        found: list[Violation] = []
        if self._values:  # a Discrete action: an int, or an array of one (as budget and rate read it)
            value = action if type(action) is int else discrete_value(action, "values")
            if value in self._values:
                found.append(self.violation("forbidden_value", f"action {value} is forbidden"))
        if self._dims:
            flat = np.asarray(action).reshape(-1)
            for dim, banned in self._dims.items():
                value = integral(entry(flat, dim, "dims key"), f"dims key {dim}")
                if value in banned:
                    found.append(self.violation("forbidden_value", f"action[{dim}]={value} is forbidden"))
        if self._ranges:
            flat = np.asarray(action, dtype=np.float64).reshape(-1)
            for r in self._ranges:
                value = float(entry(flat, r.index, "ranges index"))
                if _inside(value, r):
                    found.append(self.violation(
                        "forbidden_range",
                        f"action[{r.index}]={value:.4g} inside forbidden ({r.low}, {r.high})"))
        return found

    def mask(self, space: Any, state: Any) -> np.ndarray | None:
        nvec = getattr(space, "nvec", None)
        if nvec is not None:
            dims = self._dims
            if self._values and np.size(nvec) == 1:  # a one-value action: values ban it, as check does
                dims = {**dims, 0: dims.get(0, frozenset()) | self._values}
            return dims_mask(space, dims, self._ranges)
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
        """The action with each banned entry moved to the nearest value that no range
        bans and the space allows (a boundary of one of the entry's ranges, in the
        space's dtype, rounded toward the allowed side); ``None`` if an entry has none."""
        if not self._ranges:
            return None
        flat = np.array(action, dtype=np.float64).reshape(-1)
        dtype = np.dtype(getattr(space, "dtype", None) or np.float32)
        with np.errstate(over="ignore"):  # no warning (an error under a filter) for a huge action
            result = flat.astype(dtype)
        lows = _space_bound(space, "low", -np.inf, flat.size)
        highs = _space_bound(space, "high", np.inf, flat.size)
        limits = np.iinfo(dtype) if dtype.kind in "iu" else None  # an integer dtype's range
        for i, ranges in _by_entry(self._ranges, flat.size).items():
            a = float(flat[i])
            if a != a:
                return None  # NaN: no nearer value
            if not any(_inside(a, r) for r in ranges):
                continue
            candidates = []
            for r in ranges:
                for boundary, outward in ((r.low, -np.inf), (r.high, np.inf)):
                    if dtype.kind in "iu":  # the nearest integer on the allowed side
                        if not math.isfinite(boundary):
                            continue  # an infinite end bans everything past it
                        whole = math.floor(boundary) if outward < 0 else math.ceil(boundary)
                        if not limits.min <= whole <= limits.max:
                            continue
                        value = dtype.type(whole)
                    else:  # a boundary past the dtype's range casts to inf (then refused)
                        with np.errstate(over="ignore"):
                            value = dtype.type(boundary)
                    if dtype.kind == "f" and _inside(float(value), r):  # rounded into the range
                        value = np.nextafter(value, dtype.type(outward))
                    v = float(value)
                    if lows[i] <= v <= highs[i] and not any(_inside(v, other) for other in ranges):
                        distance = abs(v - a)
                        candidates.append((distance if distance == distance else np.inf, v, value))
            if not candidates:
                return None
            result[i] = min(candidates, key=lambda c: (c[0], c[1]))[2]  # ties: the lower value
        return result.reshape(np.shape(action))


def _space_bound(space: Any, name: str, default: float, size: int) -> np.ndarray:
    """A Box space's ``low`` or ``high`` per flattened entry (``default`` without one)."""
    bound = getattr(space, name, None)
    if bound is None:
        return np.full(size, default)
    bound = np.asarray(bound, dtype=np.float64).reshape(-1)
    if bound.size == size:
        return bound
    return np.full(size, bound[0] if bound.size == 1 else default)
