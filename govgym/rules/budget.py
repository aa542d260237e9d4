"""``budget``: a per-episode cost budget with a soft and a hard limit.

The cost of a step comes from exactly one source:

- ``action_costs``: a table for a ``Discrete`` action (missing actions cost 0); any
  other action (``MultiDiscrete``, an array) is a ``rule_error``, never priced by a
  part of it;
- ``norm``: ``l1`` or ``l2`` norm of a Box action, times ``scale``;
- ``info_key``: a cost the world reports in ``info`` after the step.

Example::

    - kind: budget
      name: torque_energy
      norm: l1
      scale: 1.0
      soft: 150
      hard: 250
      soft_severity: medium
      hard_severity: critical

The limits have their own severities (``soft_severity``, ``hard_severity``); a rule entry
that gives ``severity`` is refused. With an action cost the rule looks ahead: a proposal
whose cost would cross a limit is a violation before it runs (and, for a ``Discrete``
space, is masked when its verdict stops the action: by default the hard limit's,
critical -> terminate, not the soft limit's, medium -> warn). With a world cost it can
only look back: the step that crossed a limit is reported after it ran, and every later
proposal of the episode is reported before it runs (the budget is already spent past
that limit), so a ``block`` or ``replace`` verdict on the hard limit stops every step
after the one that crossed it (a verdict found after a step can only warn). Each action
over a limit costs the rule's ``cost`` once, at the strictest limit it is over: with a
world cost, a step reported past the soft limit before it ran that then crosses the
hard limit carries both violations, the second at cost 0. (A ``replace`` step judges two
actions, the proposal and its substitute, and reports each one over a limit.)
Only executed actions spend the budget. A world cost that is missing from the step's
``info``, NaN, infinite, negative or not a number is a critical ``invalid_cost``
violation and is never added (a finite one above ``MAX_COST``, 1e15, is added as
``MAX_COST``): a bad number (or a misspelt ``info_key``) cannot reset,
corrupt or silently switch off the budget. ``scale`` multiplies a ``norm`` or a world
cost; ``action_costs`` are the costs themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator

from govgym.kernel.types import MAX_COST, Outcome, Proposal, Severity, Violation, check_cost
from govgym.rules.base import (
    FieldError,
    Number,
    Rule,
    RuleParams,
    integral,
    register_rule,
    unique_int_keys,
)

__all__ = ["Budget"]


class BudgetParams(RuleParams):
    hard: Number = Field(gt=0, allow_inf_nan=False)
    soft: Number | None = Field(default=None, gt=0, allow_inf_nan=False)
    soft_severity: str = "medium"
    hard_severity: str = "critical"
    action_costs: Annotated[dict[int, Number], BeforeValidator(unique_int_keys)] | None = None
    norm: Literal["l1", "l2"] | None = None
    scale: Number = Field(default=1.0, ge=0, allow_inf_nan=False)
    info_key: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BudgetParams:
        sources = [self.action_costs is not None, self.norm is not None, self.info_key is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one cost source: action_costs, norm or info_key")
        if self.soft is not None and self.soft > self.hard:
            raise FieldError("soft", f"soft ({self.soft}) must be <= hard ({self.hard})")
        if self.action_costs is not None and self.scale != 1.0:
            raise FieldError("scale", "scale multiplies a norm or a world cost (info_key); "
                             "action_costs are the costs themselves: leave scale out")
        for action, cost in (self.action_costs or {}).items():
            if not (math.isfinite(cost) and cost >= 0):
                raise FieldError(("action_costs", action),
                                 f"action_costs[{action}] must be finite and >= 0, got {cost}")
        return self

    @field_validator("soft_severity", "hard_severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        Severity.parse(value)
        return value


def _spendable(raw: Any) -> float | None:
    """``raw`` as a cost to add to the budget, or ``None`` if it is not one (a string, a
    bool, NaN, an infinity, < 0). A finite cost above ``MAX_COST`` is ``MAX_COST``: a real,
    huge spend saturates the budget (before and after the step alike) instead of being
    refused after the step it was judged on."""
    try:
        return check_cost(raw, "cost")
    except ValueError:
        pass
    if isinstance(raw, str | bytes | bool | np.bool_):
        return None
    try:
        value = float(raw)
    except OverflowError:  # an int beyond float's range: finite, and huge
        return MAX_COST if isinstance(raw, int) and raw > 0 else None
    except (TypeError, ValueError):
        return None
    return MAX_COST if math.isfinite(value) and value > MAX_COST else None


#: Values up to which a norm is summed in Python (below it, faster than NumPy's call)
_PYTHON_NORM_SIZE = 32


@dataclass(slots=True)
class BudgetState:
    spent: float = 0.0


@register_rule
class Budget(Rule):
    kind = "budget"
    Params = BudgetParams
    default_severity = Severity.CRITICAL
    checks_proposals = True
    reviews_outcomes = True
    severity_fields = ("soft_severity", "hard_severity")

    def __init__(self, name: str, params: BudgetParams, severity: Severity, cost: float) -> None:
        super().__init__(name, params, severity, cost)
        self._soft_severity = Severity.parse(params.soft_severity)
        self._hard_severity = Severity.parse(params.hard_severity)
        self._looks_ahead = params.info_key is None

    def initial_state(self) -> BudgetState:
        return BudgetState()

    def action_cost(self, action: Any) -> float:
        p = self.params
        if p.action_costs is not None:
            flat = np.asarray(action).reshape(-1)
            if flat.size != 1:  # was: dimension 0 priced, the rest silently free
                raise ValueError(
                    f"action_costs prices a Discrete action (one integer); this action has "
                    f"{flat.size} values: use norm, or a world cost (info_key)")
            return p.action_costs.get(integral(flat[0], "action_costs"), 0.0)
        # A norm past the float range must come out inf (then refused as invalid_cost)
        # without NumPy's "overflow encountered" warning, which a warnings filter turns
        # into an exception: Python floats for the few values of a usual Box action
        # (faster there), NumPy with the warning off for a large one (faster there)
        flat = np.asarray(action, dtype=np.float64).reshape(-1)
        if flat.size <= _PYTHON_NORM_SIZE:
            values = flat.tolist()
            norm = sum(map(abs, values)) if p.norm == "l1" else math.hypot(*values)
        else:
            with np.errstate(over="ignore"):
                norm = (np.abs(flat).sum() if p.norm == "l1"
                        else np.hypot.reduce(np.abs(flat)))
        return float(norm) * p.scale

    def _level(self, total: float) -> int:
        """2 past the hard limit, 1 past the soft limit, else 0."""
        p = self.params
        return 2 if total > p.hard else 1 if p.soft is not None and total > p.soft else 0

    def _limit_violations(self, total: float, already: str = "",
                          cost: float | None = None) -> list[Violation]:
        p = self.params
        level = self._level(total)
        if level == 2:
            return [self.violation(
                "hard_limit", f"episode cost {total:.4g} {already}> hard limit {p.hard:.4g}",
                severity=self._hard_severity, cost=cost)]
        if level == 1:
            return [self.violation(
                "soft_limit", f"episode cost {total:.4g} {already}> soft limit {p.soft:.4g}",
                severity=self._soft_severity, cost=cost)]
        return []

    def _invalid(self, what: str, value: Any) -> list[Violation]:
        return [self.violation("invalid_cost", f"{what}={value!r} is not a finite cost >= 0; "
                               "not added to the budget", severity=Severity.CRITICAL)]

    def check(self, proposal: Proposal, state: BudgetState) -> Sequence[Violation]:
        if not self._looks_ahead:  # what the world will charge is not known: what it has
            return self._limit_violations(state.spent, "already ") if state.spent else ()
        raw = self.action_cost(proposal.action)
        step_cost = _spendable(raw)
        if step_cost is None:
            return self._invalid("action cost", raw)
        return self._limit_violations(state.spent + step_cost)

    def admit(self, proposal: Proposal, state: BudgetState) -> None:
        if self._looks_ahead:  # a world cost is only known after the step
            step_cost = _spendable(self.action_cost(proposal.action))
            if step_cost is not None:
                state.spent += step_cost

    def review(self, outcome: Outcome, state: BudgetState) -> Sequence[Violation]:
        if not outcome.executed:
            return ()
        if self._looks_ahead:
            raw: Any = self.action_cost(outcome.action)
            what = "action cost"
        else:
            key = self.params.info_key
            what = f"world cost {key}"
            try:
                raw = outcome.info[key]
            except KeyError:  # was: read as 0, so a misspelt key switched the budget off
                return [self.violation(
                    "invalid_cost", f"{what} is missing from the step's info; the step's cost "
                    "is unknown, not added to the budget", severity=Severity.CRITICAL)]
        step_cost = _spendable(raw)
        if step_cost is None:  # a string, a bool, NaN, inf, < 0: never added
            return self._invalid(what, raw)
        if self._looks_ahead:
            state.spent += step_cost
            return ()
        before = self._level(state.spent)  # a limit already passed was reported before the step
        state.spent += min(step_cost * self.params.scale, MAX_COST)
        if self._level(state.spent) <= before:
            return []
        # the step's proposal was reported past the soft limit, and charged: not again
        return self._limit_violations(state.spent, cost=0.0 if before else None)
