"""The data that flows through one governed step: proposals, violations, decisions.

Nothing here imports Gymnasium: the kernel judges plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

#: The largest cost one violation (or a rule's ``cost``) may carry. Above it an episode's
#: sum of costs could overflow to ``inf``, which no budget or cost limit can compare.
MAX_COST = 1e15

__all__ = [
    "EXECUTING_VERDICTS",
    "MAX_COST",
    "SEVERITY_NAMES",
    "Decision",
    "Outcome",
    "Proposal",
    "Severity",
    "Verdict",
    "Violation",
    "check_cost",
]


class _Level(IntEnum):
    """An ordered enum written in YAML and info as its lower-case name."""

    @classmethod
    def parse(cls, value: Any) -> Any:
        """A member from itself, its number, or its name in any case."""
        if isinstance(value, cls):
            return value
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                return cls(value)
            return cls[str(value).upper()]
        except (KeyError, ValueError):
            names = ", ".join(member.name.lower() for member in cls)
            raise ValueError(f"unknown {cls.__name__.lower()} {value!r}; expected one of {names}") from None

    def __str__(self) -> str:
        return self.name.lower()


class Severity(_Level):
    """How bad a violation is; the policy maps each severity to a verdict."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Verdict(_Level):
    """The kernel's verdict, ordered from most to least permissive.

    When several violations apply, the strictest verdict wins.
    """

    ALLOW = 0
    WARN = 1
    REPLACE = 2
    BLOCK = 3
    TERMINATE = 4


#: Verdicts under which the proposed action itself reaches the world.
EXECUTING_VERDICTS = frozenset({Verdict.ALLOW, Verdict.WARN})


#: NumPy's bool type by name (``bool_`` in NumPy 1, ``bool`` in NumPy 2; a Python bool is
#: caught by isinstance): a bool is not a cost, whatever its type
_NUMPY_BOOL_NAMES = frozenset({"bool_", "bool"})


def check_cost(value: Any, where: str) -> float:
    """Return ``value`` as a float cost, or raise if it is not a number (a string or a
    bool is not), is NaN, infinite, negative or above :data:`MAX_COST`."""
    if (isinstance(value, str | bytes | bool) or type(value).__name__ in _NUMPY_BOOL_NAMES
            or getattr(getattr(value, "dtype", None), "kind", None) == "b"):  # a bool array
        raise ValueError(f"{where}: cost {value!r} is not a number")
    try:
        cost = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
        raise ValueError(f"{where}: cost {value!r} is not a number") from None
    if not 0.0 <= cost <= MAX_COST:  # NaN fails too
        raise ValueError(f"{where}: cost must be finite, >= 0 and <= {MAX_COST:g}, got {value!r}")
    return cost


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule. ``cost`` is the constraint cost it adds (finite, >= 0);
    ``severity`` may be given by name (``"high"``) and is stored as a :class:`Severity`."""

    rule: str
    code: str
    severity: Severity
    message: str
    cost: float = 1.0

    # Hand-written (dataclass keeps an ``__init__`` the class defines): the generated
    # frozen one costs ~1.3 us, and violations are built on the hot path of a step.
    def __init__(self, rule: str, code: str, severity: Severity, message: str,
                 cost: float = 1.0) -> None:
        if type(cost) is not float or not 0.0 <= cost <= MAX_COST:  # NaN fails too
            cost = check_cost(cost, f"violation {rule}/{code}")
        if type(severity) is not Severity:  # a name or number; anything else raises
            severity = Severity.parse(severity)
        _set_rule(self, rule)
        _set_code(self, code)
        _set_severity(self, severity)
        _set_message(self, message)
        _set_cost(self, cost)

    def as_dict(self) -> dict[str, Any]:
        severity = self.severity
        return {
            "rule": self.rule,
            "code": self.code,
            "severity": SEVERITY_NAMES.get(severity) or str(severity),
            "message": self.message,
            "cost": self.cost,
        }


# slot setters: they bypass the frozen ``__setattr__``, as the generated ``__init__`` does
_set_rule, _set_code, _set_severity, _set_message, _set_cost = (
    Violation.__dict__[name].__set__ for name in ("rule", "code", "severity", "message", "cost"))

#: ``str(severity)`` for each member, without going through ``Enum.name`` (~230 ns).
SEVERITY_NAMES: dict[Any, str] = {member: str(member) for member in Severity}


@dataclass(slots=True)
class Proposal:
    """What an agent wants to do this step.

    ``action`` is the raw action; ``meaning`` is what the world says it means (for
    example ``{"sql": "SELECT ..."}``); ``observation`` is the last observation the
    agent saw; ``agent`` names the agent in multi-agent settings.
    """

    action: Any
    meaning: dict[str, Any] = field(default_factory=dict)
    observation: Any = None
    agent: str | None = None


@dataclass(slots=True)
class Outcome:
    """What happened after an action reached the world (or did not)."""

    observation: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    action: Any = None
    executed: bool = True
    meaning: dict[str, Any] = field(default_factory=dict)
    agent: str | None = None
    #: the proposal the step began with (``None`` when nothing judged proposals): what a
    #: ``rate`` rule with ``count: proposed`` counts, whatever the verdict did with it
    proposal: Proposal | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The kernel's verdict on a proposal or an outcome, with its violations and cost."""

    verdict: Verdict
    violations: tuple[Violation, ...] = ()
    cost: float = 0.0
    stage: str = "pre"

    def __init__(self, verdict: Verdict, violations: tuple[Violation, ...] = (),
                 cost: float = 0.0, stage: str = "pre") -> None:
        _set_verdict(self, verdict)  # as Violation: the generated frozen __init__ is slow
        _set_violations(self, violations)
        _set_decision_cost(self, cost)
        _set_stage(self, stage)

    @property
    def executes(self) -> bool:
        """True when the proposed action itself may reach the world."""
        return self.verdict in EXECUTING_VERDICTS

    @property
    def clean(self) -> bool:
        return not self.violations

    def cost_by_rule(self) -> dict[str, float]:
        costs: dict[str, float] = {}
        for v in self.violations:
            costs[v.rule] = costs.get(v.rule, 0.0) + v.cost
        return costs

    def merge(self, other: Decision) -> Decision:
        """Combine a pre-step and a post-step decision: strictest verdict, summed cost."""
        return Decision(
            verdict=max(self.verdict, other.verdict),
            violations=self.violations + other.violations,
            cost=self.cost + other.cost,
            stage=f"{self.stage}+{other.stage}",
        )


_set_verdict, _set_violations, _set_decision_cost, _set_stage = (
    Decision.__dict__[name].__set__ for name in ("verdict", "violations", "cost", "stage"))

ALLOW = Decision(Verdict.ALLOW)
