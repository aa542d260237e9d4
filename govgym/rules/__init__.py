"""Rule kinds, one module each, registered by name for use in policies."""

from govgym.rules.base import RULE_KINDS, Rule, RuleParams, register_rule, rule_kind
from govgym.rules.budget import Budget
from govgym.rules.forbidden_actions import ForbiddenActions
from govgym.rules.rate import Rate
from govgym.rules.sql import SQL
from govgym.rules.state_bounds import StateBounds

__all__ = [
    "RULE_KINDS",
    "SQL",
    "Budget",
    "ForbiddenActions",
    "Rate",
    "Rule",
    "RuleParams",
    "StateBounds",
    "register_rule",
    "rule_kind",
]
