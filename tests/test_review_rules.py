"""A CMDP researcher's review of the generic rules (budget, forbidden_actions) and of
shaping: each test is a bug the review found ("Was a bug"), run for real."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import GovernedEnv, Kernel, Outcome, Proposal, Severity, load_policy
from govgym.kernel.types import MAX_COST
from govgym.rules.base import RULE_KINDS, Rule
from govgym.shaping import Shaping


class _World(gym.Env):
    """Discrete(2) actions; each step reports the next of ``costs`` as ``info["c"]``."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def __init__(self, costs: list[Any] = (), action_space: gym.Space | None = None) -> None:
        self.costs = list(costs)
        self.action_space = action_space or gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        cost = self.costs[min(self.t, len(self.costs) - 1)] if self.costs else 0.0
        self.t += 1
        return np.zeros(1, np.float32), 0.0, False, False, {"c": cost}


def test_a_budget_refuses_severity_and_names_its_two_severities() -> None:
    """Was a bug: ``severity: low`` on a budget passed the policy check and was ignored
    (its limits have ``soft_severity`` / ``hard_severity``), so the hard limit still
    ended episodes as critical."""
    with pytest.raises(ValueError, match=r"soft_severity and hard_severity") as caught:
        load_policy({"name": "b", "rules": [
            {"kind": "budget", "severity": "low", "action_costs": {1: 5}, "hard": 3}]})
    assert "rules.0.severity" in str(caught.value)


@pytest.mark.parametrize("source", ["world", "action"])
def test_a_step_that_crosses_the_hard_limit_is_charged_once_whatever_the_cost_source(
        source: str) -> None:
    """Was a bug: with a world cost (``info_key``), the step that crossed the hard limit
    after the soft one was reported twice, ``soft_limit`` before it ran and
    ``hard_limit`` after, and cost 2.0; priced by the action, the same spending cost 1.0."""
    common = {"kind": "budget", "name": "b", "soft": 1, "hard": 2, "hard_severity": "high"}
    if source == "world":
        rule, actions = {**common, "info_key": "c"}, [0, 0, 0, 0]
    else:
        rule, actions = {**common, "action_costs": {0: 0.5, 1: 0.5, 2: 1.0}}, [0, 0, 1, 2]
    env = GovernedEnv(_World([0.5, 0.5, 0.5, 1.0], gym.spaces.Discrete(3)),
                      {"name": "p", "verdicts": {"high": "warn"}, "rules": [rule]})
    env.reset(seed=0)
    costs = []
    for action in actions:
        *_, info = env.step(action)
        costs.append(info["cost"])
    assert costs == [0.0, 0.0, 1.0, 1.0], costs  # over soft at the third step, hard at the fourth
    assert info["episode_cost"] == 2.0
    assert {v["code"] for v in info["governance"]["violations"]} >= {"hard_limit"}


def test_a_finite_cost_above_max_cost_saturates_the_budget_it_does_not_vanish() -> None:
    """Was a bug: an action cost of 1e16 crossed the hard limit before the step (the
    check took any finite cost) but was refused after it (above MAX_COST, so never
    added): under warn or monitor every later step was clean."""
    kernel = Kernel(load_policy({"name": "b", "rules": [
        {"kind": "budget", "name": "b", "norm": "l1", "hard": 250}]}).monitor_only())
    ctx = kernel.new_context()
    found = []
    for action in (np.array([1e16]), np.array([1.0])):
        decision = kernel.decide(Proposal(action), ctx)
        review = kernel.review(Outcome(None, 0.0, False, False, {}, action, True), ctx)
        found.append(([v.code for v in decision.violations], [v.code for v in review.violations]))
    assert found == [(["hard_limit"], []), (["hard_limit"], [])]
    assert ctx.state["b"].spent == MAX_COST + 1.0


def test_a_world_cost_above_max_cost_is_spent_as_max_cost() -> None:
    env = GovernedEnv(_World([1e300, 0.0]), {"name": "p", "verdicts": {"critical": "warn"}, "rules": [
        {"kind": "budget", "name": "b", "info_key": "c", "hard": 2}]})
    env.reset(seed=0)
    *_, info = env.step(0)
    assert [v["code"] for v in info["governance"]["violations"]] == ["hard_limit"]
    *_, info = env.step(0)  # past the hard limit: reported before the step
    assert [v["code"] for v in info["governance"]["violations"]] == ["hard_limit"]


def test_one_dimensional_multidiscrete_masks_what_values_forbid() -> None:
    """Was a bug: ``values: [2]`` blocks the action ``[2]`` of a MultiDiscrete([4]) space,
    but ``action_masks()`` left it allowed, so MaskablePPO kept sampling it."""
    env = GovernedEnv(_World(action_space=gym.spaces.MultiDiscrete([4])), {"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [2]}]})
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, True, False, True]
    for value, allowed in enumerate(env.action_masks()):
        *_, info = env.step(np.array([value]))
        assert (info["governance"]["verdict"] == "allow") == allowed, value


def test_shaping_refuses_a_severity_given_twice() -> None:
    """Was a bug: ``{"high": 0.5, "HIGH": 0.0}`` kept the last spelling, switching the
    penalty off, where a verdict table refuses the same input."""
    with pytest.raises(ValueError, match="given twice"):
        Shaping.from_config({"penalties": {"high": 0.5, "HIGH": 0.0}})
    with pytest.raises(ValueError, match="given twice"):
        govgym.make("CartPole-v1", policy="cartpole-envelope",
                    shaping={"penalties": {"high": 0.5, "High": 0.1}})


def test_a_range_beyond_float32_clips_without_a_numpy_warning() -> None:
    """Was a bug: a range bound of 1e39 on a float32 Box made the repair cast overflow
    with a NumPy warning, which a warnings filter turns into an error: the repair failed
    and ``safe_action`` ran instead of the clip."""
    env = govgym.make("Pendulum-v1", policy={"name": "p", "rules": [
        {"kind": "forbidden_actions", "ranges": [{"low": 1.8, "high": 1e39}]}]},
        intervention={"high": "replace"}, safe_action=[0.0])
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        *_, info = env.step(np.array([2.0], np.float32))
    assert "repair_errors" not in info["governance"]
    assert info["governance"]["executed_action"][0] == pytest.approx(1.8, abs=1e-6)
    assert info["governance"]["executed_action"][0] < 1.8


RATE_BY_KIND = {"name": "p", "rules": [{"kind": "rate", "name": "writes", "kinds": ["update"],
                                        "limit": 1, "window": 10, "verdict": "block"}]}


def test_a_rate_by_kind_counts_the_sql_worlds_statement_kinds() -> None:
    """Was a bug: the rate rule's docstring offers ``kinds`` for SQL statement kinds, but
    the SQL world's describe() gave no ``kind``: a limit of one UPDATE per 10 steps
    counted nothing and allowed every one."""
    from govgym.worlds.sql import make_action

    env = govgym.make("Governed-SQL-v0", policy=RATE_BY_KIND)
    env.reset(seed=0, options={"task": "count_rows:customers"})
    update = make_action("update", "products", "stock", "stock_lt", 1)
    assert env.unwrapped.describe(update)["kind"] == "update"
    assert env.unwrapped.describe(make_action("count", "orders"))["kind"] == "select"
    verdicts = [env.step(action)[-1]["governance"]["verdict"]
                for action in (make_action("count", "orders"), update, update)]
    assert verdicts == ["allow", "allow", "block"]


def test_a_rate_by_kind_fails_closed_when_the_world_says_no_kind() -> None:
    """Counting by kind on a world whose describe() gives none (any Gymnasium env) was a
    silent count of nothing: it is a critical rule_error now."""
    env = govgym.make("CartPole-v1", policy=RATE_BY_KIND)
    env.reset(seed=0)
    *_, info = env.step(0)
    (violation,) = info["governance"]["violations"]
    assert violation["code"] == "rule_error" and "no 'kind'" in violation["message"]
    assert info["governance"]["verdict"] == "terminate"



class _BadMask(Rule):
    """A custom rule whose mask has the wrong length (one value for every action)."""

    kind = "review_rules_bad_mask"
    checks_proposals = True
    default_severity = Severity.HIGH

    def check(self, proposal: Proposal, state: Any) -> list:
        return []

    def mask(self, space: Any, state: Any) -> np.ndarray:
        return np.array([False, True])


@pytest.mark.parametrize("shape", [[3, 3], [4]])
def test_a_rules_mask_of_the_wrong_shape_masks_nothing(shape: list[int],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Was a bug: ``mask &= part`` raised for a part of the wrong length (action_masks()
    crashed a MaskablePPO rollout)."""
    monkeypatch.setitem(RULE_KINDS, _BadMask.kind, _BadMask)
    kernel = Kernel({"name": "p", "verdicts": {"high": "block"}, "rules": [{"kind": _BadMask.kind}]})
    mask = kernel.action_mask(gym.spaces.MultiDiscrete(shape), Proposal, kernel.new_context())
    assert mask.tolist() == [True] * sum(shape)


def test_a_severity_equal_to_the_kinds_default_still_loads() -> None:
    """What Policy.to_dict wrote before it left ``severity`` out for these kinds (a saved
    ``env.spec.to_json()``): the default value said nothing wrong, so it loads."""
    old = {"name": "p", "rules": [
        {"kind": "budget", "name": "b", "severity": "critical", "action_costs": {1: 5}, "hard": 3}]}
    assert load_policy(old) == load_policy({**old, "rules": [
        {k: v for k, v in old["rules"][0].items() if k != "severity"}]})


def test_a_code_built_budget_with_another_severity_is_refused() -> None:
    """A RuleConfig built in code with a severity the kind does not use would not come back
    from to_dict() (which leaves it out): refused as the file form is."""
    from govgym.kernel.policy import RuleConfig
    from govgym.rules.budget import BudgetParams

    params = BudgetParams(action_costs={1: 5}, hard=3)
    with pytest.raises(ValueError, match="soft_severity and hard_severity"):
        RuleConfig("budget", "b", Severity.LOW, 1.0, params)
    RuleConfig("budget", "b", Severity.CRITICAL, 1.0, params)  # the default: fine


@pytest.mark.parametrize("bad", [True, np.True_, np.bool_(False)])
def test_a_bool_is_no_cost_numpy_or_not(bad: Any) -> None:
    """Was a bug: NumPy 2 names its bool type ``bool``, so the check for ``bool_`` missed
    it and a world cost of ``np.True_`` was spent as 1.0."""
    from govgym.kernel.types import check_cost

    with pytest.raises(ValueError, match="not a number"):
        check_cost(bad, "cost")
    kernel = Kernel({"name": "b", "rules": [{"kind": "budget", "name": "b", "info_key": "c", "hard": 5}]})
    ctx = kernel.new_context()
    review = kernel.review(Outcome(None, 0.0, False, False, {"c": bad}, 0, True), ctx)
    assert [v.code for v in review.violations] == ["invalid_cost"] and ctx.state["b"].spent == 0.0


def test_a_rate_by_kind_reads_any_mapping_and_falls_back_to_values() -> None:
    from types import MappingProxyType

    kernel = Kernel(RATE_BY_KIND)
    assert kernel.decide(Proposal(0, MappingProxyType({"kind": "select"})),
                         kernel.new_context()).verdict == govgym.Verdict.ALLOW
    both = {"name": "p", "rules": [{**RATE_BY_KIND["rules"][0], "values": [1], "limit": 1}]}
    kernel = Kernel(both)  # no kind in the meaning: counted by its values, not an error
    ctx = kernel.new_context()
    assert kernel.decide(Proposal(0, {}), ctx).verdict == govgym.Verdict.ALLOW


@pytest.mark.parametrize("bad", [np.array(True), np.array([False]), np.array(True, dtype=object)])
def test_a_numpy_bool_array_is_no_cost(bad: Any) -> None:
    """Was a bug: a 0-d bool array (``np.asarray(a == 1)``) was charged as 1.0."""
    from govgym.kernel.types import check_cost

    if bad.dtype == object:
        bad = bad.item()  # a Python bool inside an object array: the plain bool case
    with pytest.raises(ValueError, match="not a number"):
        check_cost(bad, "cost")
