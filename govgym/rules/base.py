"""The rule interface and the registry of rule kinds.

A rule kind is a class with a ``kind`` name and a pydantic ``Params`` model for its
configuration. One configured instance checks proposals before a step (``check``),
outcomes after it (``review``), or both. Per-episode state lives outside the rule, in
the object ``initial_state`` returns, so one kernel can serve many episodes and agents.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict

from govgym.kernel.types import Outcome, Proposal, Severity, Violation

__all__ = ["INDEX_LIMIT", "RULE_KINDS", "FieldError", "Number", "Rule", "RuleParams", "discrete_value",
           "integral", "register_rule", "rule_kind", "unique_int_keys"]

#: Bound on an index into an action or observation in rule parameters (negative ones
#: count from the end): larger ones cannot address anything, and overflow NumPy's index.
INDEX_LIMIT = 2**31


def _plain_number(value: Any) -> Any:
    """A number as written (``1``, ``0.5``, ``.inf``); a bool or a numeric string is not
    one, although pydantic's float would take it (``low: false`` is not ``low: 0``)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"a number, got {value!r}")
    return value


#: A float parameter that takes numbers only.
Number = Annotated[float, BeforeValidator(_plain_number)]


def unique_int_keys(value: Any) -> Any:
    """A mapping whose keys are integers: refuse two keys that name one integer
    (``1`` and ``"1"``), which pydantic would merge silently, the last one winning."""
    if not isinstance(value, Mapping):
        return value
    seen: dict[int, Any] = {}
    for key in value:
        if isinstance(key, bool):
            raise ValueError(f"key {key!r} is not an integer")
        try:
            number = int(key)
        except (TypeError, ValueError):
            continue  # pydantic reports it
        if number in seen:
            raise ValueError(f"keys {seen[number]!r} and {key!r} name the same integer {number}")
        seen[number] = key
    return value


def integral(value: Any, what: str) -> int:
    """An action value as the integer it is; a value with a fraction (``1.7``) or that is
    no number is an error naming ``what``, never cut down to an integer it is not."""
    if isinstance(value, int | np.integer):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: action value {value!r} is not an integer") from None
    if not number.is_integer():
        raise ValueError(f"{what}: action value {number} is not an integer")
    return int(number)


def discrete_value(action: Any, what: str) -> int:
    """The one integer of a ``Discrete`` action: an int, or an array of one integral value.
    Any other action is an error naming ``what`` (raised in a rule, a ``rule_error``):
    judging only one of its values would silently pass the rest."""
    if type(action) is int:
        return action
    flat = np.asarray(action).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"{what} judges a Discrete action (one integer); this action has "
                         f"{flat.size} values: use dims for a MultiDiscrete action")
    return integral(flat[0], what)


class FieldError(ValueError):
    """A problem a validator of a whole params model finds in one of its fields: raise it
    from a ``model_validator`` and a policy error names that field (and its line), not
    only the rule."""

    def __init__(self, field: str | int | tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc: tuple[str | int, ...] = field if isinstance(field, tuple) else (field,)


def flat_size(space: Any) -> int | None:
    """How many values a space's flattened sample has, told by its shape (rules import no
    Gymnasium): a Box, MultiDiscrete or MultiBinary its shape's product, a Discrete 1;
    ``None`` for a Dict, Tuple, Text or Graph (read at run time, as given)."""
    shape = getattr(space, "shape", None)
    if not isinstance(shape, tuple) or isinstance(getattr(space, "spaces", None), Mapping):
        return None
    return int(np.prod(shape, dtype=np.int64))


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
    #: ``Kernel.decide_batch`` calls :meth:`admit` for every proposal when True, for the
    #: ones that will run (allow, warn) when False
    admits_all_proposals: bool = False
    #: the params that set this kind's severities, when the rule entry's ``severity`` is
    #: not used (a policy that gives it is refused, rather than the key being ignored)
    severity_fields: ClassVar[tuple[str, ...]] = ()

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

    def admit(self, proposal: Proposal, state: Any) -> None:
        """Count, in a trial copy of ``state``, a proposal that will run in the same step
        (any proposal of the step, when ``admits_all_proposals``),
        so that the next agent's proposal in :meth:`Kernel.decide_batch` is judged with it
        (a shared budget is spent, a rate is used). Most rules keep nothing: no-op."""

    def review_step(self, outcomes: Sequence[Outcome], state: Any) -> list[Sequence[Violation]]:
        """The violations of each outcome of one joint step (many agents), in order.
        By default each is reviewed in turn; a rule that keeps per-step state (a rate's
        window) overrides this to advance it once per step, not once per agent."""
        return [self.review(outcome, state) for outcome in outcomes]

    def check_spaces(self, observation_space: Any, action_space: Any) -> None:
        """Raise :class:`FieldError` (the field, and why) if this rule cannot apply to an
        env with these spaces (an observation entry or action dimension it names that
        the space does not have). Called when a wrapper is built, so a policy written for
        another env is refused there, not turned into a ``rule_error`` on every step.
        Most rules fit any env: no-op."""

    def attach(self, world: Any) -> None:
        """Called once with the unwrapped world when a wrapper is built around it.

        A rule that also enforces itself inside the world (the ``sql`` rule installs an
        SQLite authorizer on the world's connection) does it here; most rules do nothing.
        A rule that installs something also implements :meth:`detach`.
        """

    def detach(self, world: Any) -> None:
        """Undo :meth:`attach` on ``world``: remove what it installed there, if it is
        still installed. Called when a wrapper's kernel is replaced, and when attaching
        a kernel's rules fails part-way (for the rules already attached)."""

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
