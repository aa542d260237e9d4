"""Proposal, violation and decision types; the kernel; policy loading and validation.

Nothing in this package imports Gymnasium or PettingZoo.
"""

from govgym.kernel.kernel import Context, Kernel
from govgym.kernel.policy import (
    DEFAULT_VERDICTS,
    Policy,
    PolicyError,
    RuleConfig,
    available_policies,
    load_policy,
)
from govgym.kernel.types import Decision, Outcome, Proposal, Severity, Verdict, Violation

__all__ = [
    "DEFAULT_VERDICTS",
    "Context",
    "Decision",
    "Kernel",
    "Outcome",
    "Policy",
    "PolicyError",
    "Proposal",
    "RuleConfig",
    "Severity",
    "Verdict",
    "Violation",
    "available_policies",
    "load_policy",
]
