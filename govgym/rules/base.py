"""The rule interface and the registry of rule kinds.

A rule kind is a class with a ``kind`` name and a pydantic ``Params`` model for its
configuration. One configured instance checks proposals before a step (``check``),
outcomes after it (``review``), or both. Per-episode state lives outside the rule, in
the object ``initial_state`` returns, so one kernel can serve many episodes and agents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from govgym.kernel.types import Outcome, Proposal, Severity, Violation

__all__ = ["INDEX_LIMIT", "RULE_KINDS", "Rule", "RuleParams", "register_rule", "rule_kind"]

#: Bound on an index into an action or observation in rule parameters (negative ones
#: count from the end): larger ones cannot address anything, and overflow NumPy's index.
INDEX_LIMIT = 2**31


class RuleParams(BaseModel):
    """Base for a rule kind's parameters: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule:
    """One configured check. Subclasses set ``kind``, ``Params`` and override hooks.

    ``checks_proposals`` / ``reviews_outcomes`` tell the kernel which stage to call,
    so a rule costs nothing in a stage it does not take part in.
    """

    kind: ClassVar[str] = ""
    Params: ClassVar[type[RuleParams]] = RuleParams
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    checks_proposals: ClassVar[bool] = False
    reviews_outcomes: ClassVar[bool] = False

    def __init__(self, name: str, params: RuleParams, severity: Severity, cost: float) -> None:
        self.name = name
        self.params = params
        self.severity = severity
        self.cost = cost

    def initial_state(self) -> Any:
        """Fresh per-episode state (``None`` for stateless rules)."""
        return None

    def check(self, proposal: Proposal, state: Any) -> Sequence[Violation]:
        """Violations of a proposal before it reaches the world."""
        return ()

    def review(self, outcome: Outcome, state: Any) -> Sequence[Violation]:
        """Violations found in an outcome after the step; may also update ``state``."""
        return ()

    def mask(self, space: Any, state: Any) -> np.ndarray | None:
        """Allowed-action mask for a discrete space, or ``None`` if this rule cannot say.

        For ``Discrete(n)`` a bool array of length ``n``; for ``MultiDiscrete`` the
        per-dimension masks concatenated (the layout sb3-contrib expects).
        """
        return None

    def repair(self, action: Any, space: Any) -> Any | None:
        """A nearby action this rule allows, or ``None``. Used by the ``replace`` verdict."""
        return None

    def attach(self, world: Any) -> None:
        """Called once with the unwrapped world when a wrapper is built around it.

        A rule that also enforces itself inside the world (the ``sql`` rule installs an
        SQLite authorizer on the world's connection) does it here; most rules do nothing.
        """

    def violation(self, code: str, message: str, severity: Severity | None = None,
                  cost: float | None = None) -> Violation:
        return Violation(
            rule=self.name,
            code=code,
            severity=self.severity if severity is None else severity,
            message=message,
            cost=self.cost if cost is None else cost,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, {self.params!r})"


RULE_KINDS: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a rule kind available to policies by its ``kind`` name."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind name")
    if cls.kind in RULE_KINDS and RULE_KINDS[cls.kind] is not cls:
        raise ValueError(f"rule kind {cls.kind!r} is already registered by {RULE_KINDS[cls.kind]}")
    RULE_KINDS[cls.kind] = cls
    return cls


def rule_kind(kind: str) -> type[Rule]:
    try:
        return RULE_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(RULE_KINDS))
        raise ValueError(f"unknown rule kind {kind!r}; known kinds: {known}") from None
