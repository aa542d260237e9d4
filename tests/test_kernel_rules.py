"""The kernel and the generic rule kinds, on plain data (no Gymnasium)."""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import govgym
from govgym import Kernel, Outcome, Proposal, Severity, Verdict, Violation
from govgym.rules import Rule, RuleParams, register_rule


def outcome(obs: Any = (0.0,), action: Any = 0, executed: bool = True, info: dict | None = None,
            meaning: dict | None = None) -> Outcome:
    return Outcome(np.asarray(obs, dtype=np.float64), 0.0, False, False, info or {}, action,
                   executed, meaning or {})


def _imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_dependency_direction() -> None:
    """kernel and rules import neither Gymnasium nor PettingZoo; worlds import neither
    kernel nor wrappers (DESIGN.md, "Dependency direction")."""
    package = Path(govgym.__file__).parent
    for folder in ("kernel", "rules"):
        tops = {name.split(".")[0] for name in _imports(package / folder)}
        assert not tops & {"gymnasium", "pettingzoo"}, folder
    world_imports = _imports(package / "worlds")
    assert not {n for n in world_imports if n.startswith(("govgym.kernel", "govgym.wrappers",
                                                          "govgym.rules"))}


def test_empty_policy_allows_everything() -> None:
    kernel = Kernel(None)
    ctx = kernel.new_context()
    decision = kernel.decide(Proposal(action=123), ctx)
    assert decision.verdict == Verdict.ALLOW and decision.cost == 0.0 and decision.clean
    assert kernel.review(outcome(), ctx).verdict == Verdict.ALLOW


def test_strictest_verdict_wins_and_costs_add_up() -> None:
    kernel = Kernel({"name": "p", "rules": [
        {"kind": "forbidden_actions", "name": "a", "values": [1], "severity": "low", "cost": 0.5},
        {"kind": "forbidden_actions", "name": "b", "values": [1], "severity": "critical", "cost": 2},
    ]})
    decision = kernel.decide(Proposal(1), kernel.new_context())
    assert decision.verdict == Verdict.TERMINATE
    assert decision.cost == 2.5
    assert decision.cost_by_rule() == {"a": 0.5, "b": 2.0}


def test_rule_level_verdict_overrides_severity_mapping() -> None:
    kernel = Kernel({"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [1], "severity": "critical", "verdict": "replace"}]})
    assert kernel.decide(Proposal(1), kernel.new_context()).verdict == Verdict.REPLACE


def test_post_step_block_becomes_warn_but_terminate_stays() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "state_bounds", "bounds": [
        {"index": 0, "low": -1, "high": 1},
        {"index": 0, "low": -5, "high": 5, "severity": "critical"}]}]})
    ctx = kernel.new_context()
    assert kernel.review(outcome([0.5]), ctx).verdict == Verdict.ALLOW
    high = kernel.review(outcome([2.0]), ctx)
    assert high.verdict == Verdict.WARN and high.violations[0].severity == Severity.HIGH
    assert kernel.review(outcome([9.0]), ctx).verdict == Verdict.TERMINATE


class BoomParams(RuleParams):
    mode: str = "raise"


@register_rule
class Boom(Rule):
    """A deliberately broken rule kind, to test that the kernel fails closed."""

    kind = "test_boom"
    Params = BoomParams
    checks_proposals = True
    reviews_outcomes = True

    def check(self, proposal: Proposal, state: Any) -> Sequence[Violation]:
        if self.params.mode == "raise":
            raise RuntimeError("kaboom")
        if self.params.mode == "nan":
            return [self.violation("x", "bad", cost=math.nan)]
        if self.params.mode == "unhashable":  # was: TypeError out of Kernel.decide
            return [Violation(["not", "hashable"], "c", "high", "m")]  # type: ignore[arg-type]
        return ["not a violation"]  # type: ignore[list-item]

    def review(self, outcome: Outcome, state: Any) -> Sequence[Violation]:
        raise KeyError("missing")


@pytest.mark.parametrize("mode, fragment", [("raise", "RuntimeError: kaboom"),
                                            ("nan", "cost must be finite"),
                                            ("junk", "returned str, not a Violation"),
                                            ("unhashable", "rule or code is not text")])
def test_a_broken_rule_fails_closed(mode: str, fragment: str) -> None:
    kernel = Kernel({"name": "p", "rules": [  # the second rule's verdict: overrides are looked up
        {"kind": "test_boom", "name": "boom", "mode": mode},
        {"kind": "forbidden_actions", "name": "other", "values": [5], "verdict": "warn"}]})
    ctx = kernel.new_context()
    decision = kernel.decide(Proposal(0), ctx)
    assert decision.verdict == Verdict.TERMINATE
    (violation,) = decision.violations
    assert violation.code == "rule_error" and violation.severity == Severity.CRITICAL
    assert violation.rule == "boom" and fragment in violation.message
    post = kernel.review(outcome(), ctx)
    assert post.violations[0].code == "rule_error" and "KeyError" in post.violations[0].message


@pytest.mark.parametrize("own", ["allow", "warn"])
def test_a_broken_rule_fails_closed_whatever_its_own_verdict(own: str) -> None:
    """A rule's own ``verdict`` judges what it finds, not the rule breaking: a rule_error
    still gets the policy's critical verdict, so the action does not run."""
    kernel = Kernel({"name": "p", "rules": [
        {"kind": "test_boom", "name": "boom", "mode": "raise", "verdict": own}]})
    ctx = kernel.new_context()
    decision = kernel.decide(Proposal(0), ctx)
    assert decision.verdict == Verdict.TERMINATE and not decision.executes
    assert kernel.verdict_of(decision.violations[0]) == Verdict.TERMINATE
    monitor = Kernel({"name": "p", "verdicts": {"critical": "warn"}, "rules": [
        {"kind": "test_boom", "name": "boom", "mode": "raise", "verdict": own}]})
    assert monitor.decide(Proposal(0), monitor.new_context()).verdict == Verdict.WARN


def test_violation_rejects_bad_costs() -> None:
    for bad in (math.nan, math.inf, -0.1):
        with pytest.raises(ValueError, match="finite"):
            Violation("r", "c", Severity.LOW, "m", bad)


def test_state_bounds_checks_all_bounds_at_once_and_nan() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "state_bounds", "name": "sb", "bounds": [
        {"index": 0, "low": -1, "high": 1, "label": "x"},
        {"index": 2, "low": -0.1, "high": 0.1, "label": "theta"}]}]})
    ctx = kernel.new_context()
    decision = kernel.review(outcome([2.0, 0.0, -0.5, 0.0]), ctx)
    assert [v.message.split("=")[0] for v in decision.violations] == ["x", "theta"]
    nan = kernel.review(outcome([math.nan, 0.0, 0.0, 0.0]), ctx)
    assert len(nan.violations) == 1  # NaN is never "inside" a bound


def test_state_bounds_on_dict_observations() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "state_bounds", "bounds": [
        {"key": "pos", "index": 1, "low": 0, "high": 1}]}]})
    ctx = kernel.new_context()
    obs = {"pos": np.array([5.0, 0.5]), "vel": np.array([9.0])}
    assert kernel.review(Outcome(obs, 0.0, False, False, {}), ctx).clean
    obs["pos"][1] = 3.0
    assert not kernel.review(Outcome(obs, 0.0, False, False, {}), ctx).clean


def test_forbidden_actions_values_dims_and_ranges() -> None:
    def kernel_of(**params: Any) -> Kernel:
        return Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", **params}]})

    values, dims = kernel_of(values=[2]), kernel_of(dims={1: [0]})
    ranges = kernel_of(ranges=[{"index": 0, "low": 1.5, "high": 2.5}])
    ctx = Kernel().new_context()
    assert values.decide(Proposal(np.int64(2)), ctx).violations[0].code == "forbidden_value"
    assert values.decide(Proposal(np.array([2])), ctx).violations[0].code == "forbidden_value"
    assert values.decide(Proposal(3), ctx).clean
    assert dims.decide(Proposal(np.array([3, 0])), ctx).violations[0].code == "forbidden_value"
    assert dims.decide(Proposal(np.array([3, 1])), ctx).clean
    assert ranges.decide(Proposal(np.array([1.7], dtype=np.float32)), ctx).violations[0].code == (
        "forbidden_range")
    assert ranges.decide(Proposal(np.array([1.5], dtype=np.float32)), ctx).clean  # boundary allowed
    kernel = ranges
    repaired = kernel.rules[0].repair(np.array([1.7], dtype=np.float32), None)
    assert repaired.tolist() == [1.5]


def test_budget_with_action_costs_looks_ahead() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "action_costs": {1: 4.0},
                                             "soft": 5, "hard": 10}]})
    ctx = kernel.new_context()
    assert kernel.decide(Proposal(1), ctx).clean
    kernel.review(outcome(action=1), ctx)  # spent 4
    soft = kernel.decide(Proposal(1), ctx)  # 8 > soft
    assert soft.violations[0].code == "soft_limit" and soft.verdict == Verdict.WARN
    kernel.review(outcome(action=1), ctx)  # spent 8
    hard = kernel.decide(Proposal(1), ctx)  # 12 > hard
    assert hard.violations[0].code == "hard_limit" and hard.verdict == Verdict.TERMINATE
    assert kernel.decide(Proposal(0), ctx).executes  # past soft: warned, not stopped
    kernel.review(outcome(action=1, executed=False), ctx)  # a blocked action spends nothing
    assert ctx.state["b"].spent == 8.0


def test_budget_action_costs_refuses_to_price_part_of_a_multi_value_action() -> None:
    """Was a bug: ``action_costs`` priced a MultiDiscrete action by its dimension 0, so
    ``[0, 1]`` cost nothing however costly the 1 was. Now a rule_error (fail closed)
    that says what to use instead; the budget is not touched."""
    kernel = Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "action_costs": {1: 4.0},
                                             "hard": 10}]})
    ctx = kernel.new_context()
    for stage in (kernel.decide(Proposal(np.array([0, 1])), ctx),
                  kernel.review(outcome(action=np.array([0, 1])), ctx)):
        (violation,) = stage.violations
        assert violation.code == "rule_error" and violation.severity == Severity.CRITICAL
        assert "action_costs prices a Discrete action" in violation.message
        assert "2 values" in violation.message
    assert ctx.state["b"].spent == 0.0
    kernel.review(outcome(action=np.array([1])), ctx)  # a one-value array is a Discrete action
    assert ctx.state["b"].spent == 4.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -3.0, "lots", None])
def test_budget_never_accepts_a_bad_world_cost(bad: object) -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "info_key": "spend",
                                             "hard": 10}]})
    ctx = kernel.new_context()
    kernel.review(outcome(info={"spend": 6.0}), ctx)
    decision = kernel.review(outcome(info={"spend": bad}), ctx)
    assert decision.violations[0].code == "invalid_cost"
    assert decision.violations[0].severity == Severity.CRITICAL
    assert ctx.state["b"].spent == 6.0  # neither reset nor corrupted
    over = kernel.review(outcome(info={"spend": 5.0}), ctx)
    assert over.violations[0].code == "hard_limit"


def test_budget_rejects_a_nan_action_cost_and_keeps_counting() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "norm": "l1", "hard": 3}]})
    ctx = kernel.new_context()
    nan_action = np.array([np.nan])
    assert kernel.decide(Proposal(nan_action), ctx).violations[0].code == "invalid_cost"
    assert kernel.review(outcome(action=nan_action), ctx).violations[0].code == "invalid_cost"
    kernel.review(outcome(action=np.array([2.0])), ctx)
    assert ctx.state["b"].spent == 2.0
    assert kernel.decide(Proposal(np.array([2.0])), ctx).violations[0].code == "hard_limit"


@pytest.mark.parametrize("size", [2, 1000], ids=["small", "large"])  # both ways it is summed
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_budget_norm_past_the_float_range_is_an_invalid_cost_without_a_numpy_warning(
        norm: str, size: int) -> None:
    """Was: NumPy's sum (l1) and hypot.reduce (l2) of finite values past 1.8e308 warned
    "overflow encountered in reduce"; under ``-W error`` (or a warnings filter) that
    warning raised inside the rule and the step got a ``rule_error`` in place of the
    budget's own ``invalid_cost``."""
    kernel = Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "norm": norm,
                                             "hard": 3}]})
    ctx = kernel.new_context()
    huge = np.zeros(size)
    huge[:2] = 1.5e308, -1.5e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre = kernel.decide(Proposal(huge), ctx)
        post = kernel.review(outcome(action=huge), ctx)
    assert [v.code for v in pre.violations] == ["invalid_cost"]
    assert [v.code for v in post.violations] == ["invalid_cost"]
    assert ctx.state["b"].spent == 0.0
    kernel.review(outcome(action=np.array([1.0, -1.0] + [0.0] * (size - 2))), ctx)  # 2, sqrt 2
    assert ctx.state["b"].spent == pytest.approx(2.0 if norm == "l1" else math.sqrt(2))


def test_rate_counts_only_executed_actions_in_the_window() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "rate", "name": "r", "values": [1], "limit": 2,
                                             "window": 4}]})
    ctx = kernel.new_context()
    for step, (action, executed) in enumerate([(1, True), (1, False), (1, True)]):
        assert kernel.decide(Proposal(action), ctx).clean, step
        kernel.review(outcome(action=action, executed=executed), ctx)
    assert kernel.decide(Proposal(1), ctx).violations[0].code == "rate_exceeded"
    assert kernel.decide(Proposal(0), ctx).clean
    kernel.review(outcome(action=0), ctx)  # the window (steps 1-4) moves on: step 0 drops out
    assert kernel.decide(Proposal(1), ctx).clean


def test_rate_count_proposed_counts_blocked_proposals_and_needs_the_proposal() -> None:
    rules = [{"kind": "rate", "name": "r", "values": [1], "limit": 2, "window": 4,
              "count": "proposed", "verdict": "block"}]
    kernel = Kernel({"name": "p", "rules": rules})
    ctx = kernel.new_context()
    for step, executed in enumerate([True, False]):  # the second one was blocked: still counts
        assert kernel.decide(Proposal(1), ctx).clean, step
        review = Outcome((0.0,), 0.0, False, False, {}, 1 if executed else None, executed,
                         proposal=Proposal(1))
        assert kernel.review(review, ctx).clean
    assert list(ctx.state["r"].times) == [0, 1]
    assert kernel.decide(Proposal(1), ctx).verdict == Verdict.BLOCK
    # the same steps counted by the default (executed): only the first
    default = Kernel({"name": "p", "rules": [{**rules[0], "count": "executed"}]})
    dctx = default.new_context()
    for executed in (True, False):
        default.review(Outcome((0.0,), 0.0, False, False, {}, 1 if executed else None, executed,
                               proposal=Proposal(1)), dctx)
    assert list(dctx.state["r"].times) == [0] and default.decide(Proposal(1), dctx).clean
    # an outcome without its proposal: fail closed, naming what is missing, no state change
    lost = kernel.review(outcome(action=1), ctx)
    assert [(v.code, v.severity) for v in lost.violations] == [("rule_error", Severity.CRITICAL)]
    assert "count: proposed needs Outcome.proposal" in lost.violations[0].message
    assert list(ctx.state["r"].times) == [0, 1]
    with pytest.raises(ValueError, match=r"count"):
        Kernel({"name": "p", "rules": [{**rules[0], "count": "asked"}]})


def test_rate_count_proposed_in_a_batch_counts_the_blocked_agents_too() -> None:
    # agent a proposes 2 (counted, and forbidden: blocked), then agent b proposes 1
    forbid_2 = {"kind": "forbidden_actions", "name": "f", "values": [2], "verdict": "block"}
    rate = {"kind": "rate", "name": "r", "values": [1, 2], "limit": 1, "window": 5,
            "verdict": "block"}
    proposals = [Proposal(2, agent="a"), Proposal(1, agent="b")]
    for count, b_verdict in (("executed", Verdict.ALLOW), ("proposed", Verdict.BLOCK)):
        kernel = Kernel({"name": "p", "rules": [forbid_2, {**rate, "count": count}]})
        decisions = kernel.decide_batch(proposals, kernel.new_context())
        assert [d.verdict for d in decisions] == [Verdict.BLOCK, b_verdict], count
    kernel = Kernel({"name": "p", "rules": [{**rate, "count": "proposed", "limit": 2}]})
    ctx = kernel.new_context()
    kernel.review_batch([Outcome((0.0,), 0.0, False, False, {}, None, False, proposal=p)
                         for p in proposals], ctx)  # two blocked proposals in one step
    assert list(ctx.state["r"].times) == [0, 0] and ctx.state["r"].step == 1
    assert kernel.decide(Proposal(1), ctx).verdict == Verdict.BLOCK


def test_rate_by_meaning_kind() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "rate", "kinds": ["delete"], "limit": 1,
                                             "window": 10}]})
    ctx = kernel.new_context()
    kernel.review(outcome(action="x", meaning={"kind": "delete"}), ctx)
    assert not kernel.decide(Proposal("y", {"kind": "delete"}), ctx).clean
    assert kernel.decide(Proposal("y", {"kind": "select"}), ctx).clean


def test_action_mask_discrete_is_exact_and_never_empty() -> None:
    from gymnasium.spaces import Discrete, MultiDiscrete

    kernel = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [0, 2]}]})
    ctx = kernel.new_context()
    assert kernel.action_mask(Discrete(3), Proposal, ctx).tolist() == [False, True, False]
    everything = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [0, 1]}]})
    assert everything.action_mask(Discrete(2), Proposal, ctx).tolist() == [True, True]
    md = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", "dims": {0: [1], 1: [0, 1]}}]})
    assert md.action_mask(MultiDiscrete([3, 2]), Proposal, md.new_context()).tolist() == [
        True, False, True, True, True]  # dimension 1 would be empty: left to the step-time verdict
    warn_only = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", "dims": {0: [1]},
                                                "severity": "low"}]})
    assert warn_only.action_mask(MultiDiscrete([2]), Proposal, warn_only.new_context()).all()


def test_batch_decisions_keep_order() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1]}]})
    proposals = [Proposal(a, agent=f"agent_{i}") for i, a in enumerate([0, 1, 0, 1])]
    verdicts = [d.verdict for d in kernel.decide_batch(proposals, kernel.new_context())]
    assert verdicts == [Verdict.ALLOW, Verdict.BLOCK, Verdict.ALLOW, Verdict.BLOCK]


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                     max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(action=anything, obs=anything, info=st.dictionaries(st.text(max_size=6), anything, max_size=3))
def test_the_kernel_never_raises(action: Any, obs: Any, info: dict) -> None:
    kernel = Kernel({"name": "all", "rules": [
        {"kind": "forbidden_actions", "name": "fa", "values": [1], "dims": {0: [2]},
         "ranges": [{"index": 0, "low": 0.5, "high": 0.7}]},
        {"kind": "budget", "name": "b1", "norm": "l2", "hard": 5},
        {"kind": "budget", "name": "b2", "info_key": "c", "hard": 5},
        {"kind": "rate", "name": "r", "values": [1], "limit": 1, "window": 2},
        {"kind": "state_bounds", "name": "sb", "bounds": [{"index": 0, "low": -1, "high": 1}]}]})
    ctx = kernel.new_context()
    for _ in range(2):
        pre = kernel.decide(Proposal(action, observation=obs), ctx)
        post = kernel.review(Outcome(obs, 0.0, False, False, {"c": info.get("c")}, action), ctx)
        for decision in (pre, post):
            assert isinstance(decision.verdict, Verdict)
            assert math.isfinite(decision.cost) and decision.cost >= 0


def test_a_broken_rule_does_not_replay_the_other_rules() -> None:
    """Stateful rules run exactly once per step even when a neighbour raises."""
    kernel = Kernel({"name": "p", "rules": [
        {"kind": "rate", "name": "r", "limit": 5, "window": 10},
        {"kind": "test_boom", "name": "boom"},
        {"kind": "budget", "name": "b", "action_costs": {0: 1.0}, "hard": 10}]})
    ctx = kernel.new_context()
    decision = kernel.review(outcome(action=0), ctx)
    assert [v.code for v in decision.violations] == ["rule_error"]
    assert list(ctx.state["r"].times) == [0] and ctx.state["b"].spent == 1.0


def test_a_rule_returning_a_generator_is_not_allowed_by_using_it_up() -> None:
    """A rule written with ``yield`` (or returning ``map``/``filter``) was checked by
    iterating its result, which emptied it: the kernel allowed the proposal (failed open)."""
    from govgym.kernel import Kernel, Proposal, Violation
    from govgym.rules.forbidden_actions import ForbiddenActions

    kernel = Kernel({"name": "gen", "rules": [{"kind": "forbidden_actions", "values": [1]}]})
    rule = kernel.rules[0]
    assert isinstance(rule, ForbiddenActions)
    plain = rule.check

    def as_generator(proposal, state):  # type: ignore[no-untyped-def]
        yield from plain(proposal, state)

    rule.check = as_generator  # type: ignore[method-assign]
    decision = kernel.decide(Proposal(action=1), kernel.new_context())
    assert decision.verdict.name == "BLOCK" and len(decision.violations) == 1
    assert isinstance(decision.violations[0], Violation)
