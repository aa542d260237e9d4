"""``rate``: at most ``limit`` actions of a kind in any ``window`` of steps.

What "at most" means is the verdict's: the default severity is ``medium``, whose default
verdict is ``warn``, so an action over the limit still runs and is penalised and costs
(a soft limit). To enforce the limit, give the rule ``verdict: block`` (or ``replace``),
or a severity whose verdict stops the action, as ``Governed-MountainCar-v0`` does
(medium: replace); only then does the action mask leave counted actions out.

Which actions count: ``values`` (a ``Discrete`` action's values; an action of several
values, or one with a fraction, is a ``rule_error``), ``dims`` (values of
``MultiDiscrete`` dimensions), ``kinds`` (the world's ``meaning["kind"]``, e.g. the SQL
world's statement kind: ``select``, ``update``, ``delete``, ``drop``, and in text mode
also ``insert``, ``create``, ``alter``, ``other`` and ``unknown``: the statement's own
kind, not the rows its triggers change, so a limit on rows is the ``sql`` rule's; a
proposal whose meaning has no ``kind`` is a ``rule_error``, not a silent count of
nothing, unless ``values`` or ``dims`` are given too: those then decide), or every
action when none is given (an empty list is refused: it would count nothing). Example::

    - kind: rate
      name: push_rate
      values: [0, 2]
      limit: 40
      window: 50
      severity: medium

A proposal of a counted kind is a violation when ``limit`` such actions were counted in
the last ``window`` steps. What is counted is ``count``'s choice:

- ``count: executed`` (the default): actions that reached the world, the proposal's
  own or a replacement's. A blocked proposal is not counted, so a rule with
  ``verdict: block`` holds the world to exactly ``limit`` actions per window.
- ``count: proposed``: every proposal of a counted kind, whatever its verdict, blocked
  ones included (a replaced proposal counts once, as proposed). An agent that keeps
  asking keeps the window full: a limit on how often an agent may *ask*. It needs the
  proposal in :class:`~govgym.kernel.types.Outcome` (``GovernedEnv`` passes it; a
  caller of ``Kernel.review`` that leaves ``Outcome.proposal`` out gets a critical
  ``rule_error``, not a silent count of nothing).

Blocked steps move the window on either way. While the window is full, the action mask
leaves counted actions out: exactly for a ``Discrete`` space (the kernel judges every
action), and per dimension for a ``MultiDiscrete`` one when the rule counts by ``dims``.

With many agents (``Kernel.decide_batch`` / ``review_batch``) the window is shared: an
agent's proposal sees the counted actions of the agents before it in the same step, and
the window moves on once per step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, StrictInt, field_validator

from govgym.kernel.types import Outcome, Proposal, Severity, Violation
from govgym.rules.base import Rule, RuleParams, discrete_value, integral, register_rule
from govgym.rules.forbidden_actions import Dims, dims_mask, entry

__all__ = ["Rate"]


class RateParams(RuleParams):
    limit: StrictInt = Field(ge=1)
    window: StrictInt = Field(ge=1)
    values: list[StrictInt] = []
    dims: Dims = {}
    kinds: list[str] = []
    count: Literal["executed", "proposed"] = "executed"

    @field_validator("values", "kinds")
    @classmethod
    def _not_empty(cls, value: list[Any]) -> list[Any]:  # runs only on a value given
        if not value:  # was: read as "count every proposal", the opposite of what it says
            raise ValueError("an empty list counts nothing; leave values, dims and kinds "
                             "out to count every proposal")
        return value


@dataclass(slots=True)
class RateState:
    step: int = 0
    times: deque[int] = field(default_factory=deque)


@register_rule
class Rate(Rule):
    kind = "rate"
    Params = RateParams
    default_severity = Severity.MEDIUM
    checks_proposals = True
    reviews_outcomes = True

    def __init__(self, name: str, params: RateParams, severity: Severity, cost: float) -> None:
        super().__init__(name, params, severity, cost)
        self._values = frozenset(params.values)
        self._dims = {d: frozenset(v) for d, v in params.dims.items()}
        self._kinds = frozenset(params.kinds)
        self._counts_all = not (self._values or self._dims or self._kinds)
        # count: proposed; Kernel.decide_batch then admits every proposal, not only those that run
        self.admits_all_proposals = params.count == "proposed"

    def initial_state(self) -> RateState:
        return RateState()

    def counts(self, action: Any, meaning: dict[str, Any] | None = None) -> bool:
        if self._counts_all:
            return True
        if self._kinds:
            kind = meaning.get("kind") if isinstance(meaning, Mapping) else None
            if kind in self._kinds:
                return True
            if kind is None and not (self._values or self._dims):
                # was: counted as no kind, so the limit silently never applied
                raise ValueError(
                    f"counts kinds {sorted(self._kinds)}, but this proposal's meaning has no "
                    "'kind' (the world's describe(action) must give one)")
        if self._values and discrete_value(action, "values") in self._values:
            return True
        flat = np.asarray(action).reshape(-1)
        return any(integral(entry(flat, d, "dims key"), f"dims key {d}") in banned
                   for d, banned in self._dims.items())

    def _in_window(self, state: RateState) -> int:
        oldest = state.step - self.params.window
        while state.times and state.times[0] <= oldest:
            state.times.popleft()
        return len(state.times)

    def check(self, proposal: Proposal, state: RateState) -> Sequence[Violation]:
        if not self.counts(proposal.action, proposal.meaning):
            return ()
        used = self._in_window(state)
        if used < self.params.limit:
            return ()
        return [self.violation(
            "rate_exceeded",
            f"{used} counted actions in the last {self.params.window} steps (limit {self.params.limit})")]

    def mask(self, space: Any, state: RateState) -> np.ndarray | None:
        if getattr(space, "nvec", None) is None or not self._dims:
            return None  # Discrete: the kernel enumerates check(); kinds cannot be masked
        if state is None or self._in_window(state) < self.params.limit:
            return np.ones(int(np.sum(space.nvec)), dtype=bool)
        return dims_mask(space, self._dims)

    def admit(self, proposal: Proposal, state: RateState) -> None:
        if self.counts(proposal.action, proposal.meaning):
            state.times.append(state.step)

    def _counted(self, outcome: Outcome) -> bool:
        if not self.admits_all_proposals:  # count: executed
            return outcome.executed and self.counts(outcome.action, outcome.meaning)
        proposal = outcome.proposal
        if proposal is None:
            raise ValueError("count: proposed needs Outcome.proposal, the proposal the step "
                             "began with; this outcome has none")
        return self.counts(proposal.action, proposal.meaning)

    def review(self, outcome: Outcome, state: RateState) -> Sequence[Violation]:
        if self._counted(outcome):
            state.times.append(state.step)
        state.step += 1
        return ()

    def review_step(self, outcomes: Sequence[Outcome], state: RateState) -> list[Sequence[Violation]]:
        counted = [self._counted(outcome) for outcome in outcomes]  # raises before any change
        state.times.extend(state.step for c in counted if c)  # every agent's, in one step
        state.step += 1
        return [() for _ in outcomes]
