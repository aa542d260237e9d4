"""Adversarial review of the kernel and the generic rules (second round).

Each test names the bug it pins down; each failed before its fix.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import Kernel, Outcome, Proposal, Severity, Verdict
from govgym.kernel import Policy, PolicyError, RuleConfig, load_policy
from govgym.kernel.types import MAX_COST
from govgym.rules import RULE_KINDS


def outcome(action: Any, executed: bool = True) -> Outcome:
    return Outcome(None, 0.0, False, False, {}, action=action, executed=executed)


# -- many agents in one step -----------------------------------------------------------

SHARED = {"name": "shared", "rules": [
    {"kind": "budget", "name": "energy", "action_costs": {1: 0.6}, "hard": 1.0},
    {"kind": "rate", "name": "pushes", "values": [2], "limit": 1, "window": 10}]}


def test_decide_batch_judges_the_joint_action() -> None:
    """Was a bug: decide_batch judged every agent against the same pre-step state, so two
    agents each spent 0.6 of a shared budget of 1.0, and two used a rate of 1."""
    kernel = Kernel(SHARED)
    ctx = kernel.new_context()
    budget = kernel.decide_batch([Proposal(1, agent="a"), Proposal(1, agent="b")], ctx)
    assert [d.verdict for d in budget] == [Verdict.ALLOW, Verdict.TERMINATE]
    assert budget[1].violations[0].code == "hard_limit"
    rate = kernel.decide_batch([Proposal(2, agent="a"), Proposal(2, agent="b")], ctx)
    assert [d.violations[0].code if d.violations else None for d in rate] == [None, "rate_exceeded"]
    assert ctx.state["energy"].spent == 0.0 and not ctx.state["pushes"].times  # ctx untouched
    # a proposal that does not run (blocked) leaves the budget to the next agent
    blocked_first = kernel.decide_batch([Proposal(1, agent="a"), Proposal(1, agent="b"),
                                         Proposal(1, agent="c")], ctx)
    assert [d.executes for d in blocked_first] == [True, False, False]
    single = [kernel.decide(Proposal(1), ctx) for _ in range(2)]  # one agent: as decide()
    assert kernel.decide_batch([Proposal(1)], ctx) == single[:1]


def test_review_batch_advances_a_rate_window_once_per_step() -> None:
    """Was a bug: review_batch reviewed agent by agent, so a rate window moved on once per
    agent (a 2-agent step aged it by 2) and counted the step twice."""
    kernel = Kernel(SHARED)
    ctx = kernel.new_context()
    decisions = kernel.review_batch([outcome(2), outcome(2), outcome(0)], ctx)
    assert len(decisions) == 3 and all(d.clean for d in decisions)
    assert ctx.state["pushes"].step == 1 and list(ctx.state["pushes"].times) == [0, 0]
    assert ctx.state["energy"].spent == 0.0
    kernel.review_batch([outcome(1), outcome(1, executed=False)], ctx)
    assert ctx.state["energy"].spent == pytest.approx(0.6)  # only what ran spends


def test_review_batch_fails_closed_for_every_agent() -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "state_bounds",
                                             "bounds": [{"index": 5, "low": 0, "high": 1}]}]})
    ctx = kernel.new_context()
    decisions = kernel.review_batch([Outcome(np.zeros(2), 0.0, False, False, {}, 0, True)] * 2, ctx)
    assert [d.violations[0].code for d in decisions] == ["rule_error", "rule_error"]



class _LockedState(RULE_KINDS["forbidden_actions"]):  # type: ignore[misc,valid-type]
    """forbidden_actions whose per-episode state holds a lock (cannot be deep-copied)."""

    kind = "test_locked_state"

    def initial_state(self) -> Any:
        import threading

        return {"lock": threading.Lock()}


def test_decide_batch_fails_closed_on_rule_state_it_cannot_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was a bug: decide_batch deep-copied every rule's state outside any guard, so a
    rule whose state held a lock made the kernel raise, where decide() did not."""
    monkeypatch.setitem(RULE_KINDS, _LockedState.kind, _LockedState)
    kernel = Kernel({"name": "p", "rules": [{"kind": "test_locked_state", "name": "locked",
                                             "values": [2]}, SHARED["rules"][0]]})
    ctx = kernel.new_context()
    assert kernel.decide(Proposal(0), ctx).verdict == Verdict.ALLOW
    decisions = kernel.decide_batch([Proposal(0), Proposal(2)], ctx)
    for decision in decisions:
        errors = [v for v in decision.violations if v.code == "rule_error"]
        assert [v.rule for v in errors] == ["locked"] and "lock" in errors[0].message
        assert decision.verdict == Verdict.TERMINATE  # critical: the default verdict
    assert [v.code for v in decisions[1].violations] == ["forbidden_value", "rule_error"]


# -- policies built in code are validated as files are --------------------------------

FA = RULE_KINDS["forbidden_actions"].Params


@pytest.mark.parametrize("cost", [float("nan"), float("inf"), -1.0, MAX_COST * 10, "1", True])
def test_a_rule_config_built_in_code_refuses_a_bad_cost(cost: Any) -> None:
    """Was a bug: Kernel(Policy(..., RuleConfig(cost=nan))) was accepted and decide()
    then raised while building its own rule_error."""
    with pytest.raises(ValueError, match="cost"):
        RuleConfig("forbidden_actions", "fa", Severity.HIGH, cost, FA(values=[1]))


def test_a_policy_built_in_code_with_some_verdicts_gets_the_defaults_for_the_rest() -> None:
    """Was a bug: verdicts={critical: terminate} only, and decide() raised KeyError on a
    high violation."""
    rule = RuleConfig("forbidden_actions", "fa", Severity.HIGH, 1.0, FA(values=[1]))
    kernel = Kernel(Policy("c", (rule,), verdicts={"critical": "terminate"}))
    assert kernel.decide(Proposal(1), kernel.new_context()).verdict == Verdict.BLOCK
    with pytest.raises(PolicyError, match="duplicate rule names"):
        Policy("c", (rule, rule))


def test_an_exception_that_cannot_be_printed_is_still_a_rule_error() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    class Broken(RULE_KINDS["forbidden_actions"]):  # type: ignore[misc, valid-type]
        def check(self, proposal: Proposal, state: Any) -> Any:
            raise Unprintable

    kernel = Kernel()
    kernel.rules = kernel._pre = [Broken("broken", FA(values=[1]), Severity.HIGH, 1.0)]
    (violation,) = kernel.decide(Proposal(0), kernel.new_context()).violations
    assert violation.code == "rule_error" and "Unprintable" in violation.message


# -- one value written twice, numbers that are not numbers ----------------------------


@pytest.mark.parametrize(("rule", "needle"), [
    ({"kind": "budget", "action_costs": {1: 2.0, "1": 0.0}, "hard": 5}, "name the same integer 1"),
    ({"kind": "forbidden_actions", "dims": {0: [1], "0": [2]}}, "name the same integer 0"),
    ({"kind": "forbidden_actions", "dims": {-1: [3]}}, "greater than or equal to 0"),
    ({"kind": "state_bounds", "bounds": [{"index": 0, "low": False, "high": True}]}, "a number, got False"),
    ({"kind": "state_bounds", "bounds": [{"index": 0, "low": "-1", "high": 1}]}, "a number, got '-1'"),
    ({"kind": "forbidden_actions", "ranges": [{"low": 0, "high": "2"}]}, "a number, got '2'"),
    ({"kind": "budget", "norm": "l1", "hard": True}, "a number, got True"),
    # was accepted: a bound that names an entry but no limit, which only ever caught NaN
    ({"kind": "state_bounds", "bounds": [{"index": 2, "label": "angle"}]},
     "needs low, high or both"),
    ({"kind": "forbidden_actions", "values": [1], "description": ["a", "b"]}, "a description is text"),
])
def test_ambiguous_or_mistyped_parameters_are_rejected(rule: dict[str, Any], needle: str) -> None:
    """Were bugs: keys naming one integer were merged (the last won: an action_costs of 2.0
    became 0.0); ``low: false`` was read as 0.0, ``"2"`` as 2.0, a list description kept
    as its repr."""
    with pytest.raises(PolicyError, match=needle):
        load_policy({"name": "p", "rules": [rule]})


def test_a_severity_given_twice_in_verdicts_is_rejected(tmp_path: Any) -> None:
    """Was a bug (fail open): ``verdicts: {high: block, HIGH: allow}`` let high violations
    through, the last spelling winning."""
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nverdicts:\n  high: block\n  HIGH: allow\nrules: []\n")
    with pytest.raises(PolicyError, match=r"line 4, field verdicts.HIGH: severity 'high' is given twice"):
        load_policy(path)
    with pytest.raises(PolicyError, match="description is text"):
        load_policy({"name": "p", "description": {"x": 1}})


def test_costs_cannot_add_up_to_infinity() -> None:
    """Was a bug: two rules of cost 1e308 made info["cost"] inf."""
    with pytest.raises(PolicyError, match="<= 1e"):
        load_policy({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1], "cost": 1e308}]})
    policy = {"name": "p", "rules": [
        {"kind": "forbidden_actions", "name": n, "values": [1], "cost": MAX_COST, "severity": "low"}
        for n in "ab"]}
    env = govgym.GovernedEnv(gym.make("CartPole-v1"), policy)
    env.reset(seed=0)
    assert env.step(1)[4]["cost"] == 2 * MAX_COST


@pytest.mark.parametrize("bad", ["2", True])
def test_budget_refuses_a_world_cost_that_is_not_a_number(bad: Any) -> None:
    kernel = Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "info_key": "spend",
                                             "hard": 10}]})
    ctx = kernel.new_context()
    decision = kernel.review(Outcome(None, 0.0, False, False, {"spend": bad}, 0, True), ctx)
    assert decision.violations[0].code == "invalid_cost" and ctx.state["b"].spent == 0.0



def _world_budget(**params: Any) -> Kernel:
    return Kernel({"name": "p", "rules": [{"kind": "budget", "name": "b", "info_key": "energy",
                                           **params}]})


def _spend(kernel: Kernel, ctx: Any, energy: Any = 5.0, key: str = "energy") -> Any:
    return kernel.review(Outcome(None, 0.0, False, False, {key: energy}, 0, True), ctx)


def test_a_world_cost_budget_spent_past_its_hard_limit_stops_the_next_proposals() -> None:
    """Was a bug (fail open): a world-cost budget never judged proposals, and a verdict
    found after a step can only warn, so a hard limit with verdict block (or replace)
    let the world run and spend for the rest of the episode."""
    kernel = _world_budget(hard=1.0, soft=0.5, hard_severity="high")  # high -> block
    ctx = kernel.new_context()
    assert kernel.decide(Proposal(0), ctx).verdict == Verdict.ALLOW
    crossed = _spend(kernel, ctx, 5.0)
    assert [v.code for v in crossed.violations] == ["hard_limit"]  # the crossing, once
    for _ in range(3):
        pre = kernel.decide(Proposal(0), ctx)
        assert pre.verdict == Verdict.BLOCK and pre.violations[0].code == "hard_limit"
        assert "already > hard limit" in pre.violations[0].message
    assert ctx.state["b"].spent == 5.0  # judging spends nothing
    assert kernel.new_context().state["b"].spent == 0.0  # a new episode starts afresh


def test_a_world_cost_budget_reports_each_step_over_a_limit_once() -> None:
    kernel = _world_budget(hard=10.0, soft=2.0)  # soft: medium -> warn; hard: critical
    ctx = kernel.new_context()
    found = []
    for energy in (1.0, 2.0, 3.0, 5.0):
        pre = kernel.decide(Proposal(0), ctx)
        post = _spend(kernel, ctx, energy)
        found.append(([v.code for v in pre.violations], [v.code for v in post.violations]))
    assert found == [([], []),                         # spent 1
                     ([], ["soft_limit"]),             # spent 3: crossed soft
                     (["soft_limit"], []),             # spent 6: already over soft
                     (["soft_limit"], ["hard_limit"])]  # spent 11: crossed hard


def test_a_world_cost_missing_from_info_is_not_read_as_free() -> None:
    """Was a bug (fail open): a missing key was read as cost 0, so a misspelt info_key,
    or a world that does not report the cost, switched the budget off without a sign."""
    kernel = _world_budget(hard=1.0)
    ctx = kernel.new_context()
    decision = _spend(kernel, ctx, 10.0, key="enrgy")
    assert decision.violations[0].code == "invalid_cost"
    assert decision.violations[0].severity == Severity.CRITICAL
    assert "world cost energy is missing" in decision.violations[0].message
    assert ctx.state["b"].spent == 0.0
    blocked = kernel.review(Outcome(None, 0.0, False, False, {}, None, False), ctx)
    assert blocked.verdict == Verdict.ALLOW  # nothing ran: no cost to report


def test_budget_scale_is_refused_beside_action_costs() -> None:
    """Was silently ignored: scale multiplies a norm or a world cost, not a cost table."""
    with pytest.raises(PolicyError, match="scale multiplies a norm or a world cost"):
        Kernel({"name": "p", "rules": [{"kind": "budget", "action_costs": {1: 1.0},
                                        "scale": 10, "hard": 5}]})


def test_a_governed_world_cost_budget_blocks_after_the_hard_limit() -> None:
    class Spender(gym.Env):  # type: ignore[type-arg]
        observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
            super().reset(seed=seed)
            return np.zeros(1, np.float32), {}

        def step(self, action: Any) -> Any:
            return np.zeros(1, np.float32), 1.0, False, False, {"energy": 0.6}

    env = govgym.GovernedEnv(Spender(), {"name": "p", "rules": [
        {"kind": "budget", "name": "b", "info_key": "energy", "hard": 1.0,
         "hard_severity": "high"}]}, max_episode_steps=-1)
    env.reset(seed=0)
    verdicts = [env.step(0)[4]["governance"]["verdict"] for _ in range(4)]
    assert verdicts == ["allow", "warn", "block", "block"]  # crossed at 1.2, then stopped



@pytest.mark.parametrize(("rule", "field"), [
    ({"kind": "rate", "limit": 1, "window": 2, "values": []}, "rules.0.values"),
    ({"kind": "rate", "limit": 1, "window": 2, "kinds": []}, "rules.0.kinds"),
    ({"kind": "rate", "limit": 1, "window": 2, "dims": {0: []}}, "rules.0.dims.0"),
    ({"kind": "forbidden_actions", "dims": {0: []}}, "rules.0.dims.0")])
def test_an_empty_list_of_values_is_refused(rule: dict[str, Any], field: str) -> None:
    """Was accepted with two opposite meanings: rate's values: [] counted every action,
    its dims: {0: []} counted none, and forbidden_actions' dims: {0: []} banned nothing."""
    with pytest.raises(PolicyError, match=f"field {re.escape(field)}:"):
        Kernel({"name": "p", "rules": [rule]})


# -- forbidden_actions ------------------------------------------------------------------


@pytest.mark.parametrize("action", [2, np.int64(2), np.array(2), np.array([2]), [2]])
def test_a_forbidden_value_is_found_however_the_discrete_action_is_written(action: Any) -> None:
    """Was a bug: values were only checked on 0-d actions, so np.array([2]) got through,
    while budget and rate read the same action as 2."""
    kernel = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [2]}]})
    assert kernel.decide(Proposal(action), kernel.new_context()).verdict == Verdict.BLOCK


@pytest.mark.parametrize("params", [
    {"dims": {1: [0, 3]}},
    {"ranges": [{"index": 0, "low": 0.5, "high": 2.5}]},
    {"ranges": [{"index": -1, "low": -10, "high": 0.5}]},
    {"dims": {0: [1], 1: [10**20]}},
    {"dims": {0: [1]}, "ranges": [{"index": 1, "low": -1.5, "high": 2.5}]},
])
@pytest.mark.parametrize("start", [None, [1, -2]])
def test_a_multidiscrete_mask_never_admits_an_action_decide_stops(params: dict[str, Any],
                                                                   start: Any) -> None:
    """Were bugs: ranges were left out of the MultiDiscrete mask, and one huge banned
    value overflowed NumPy so the kernel dropped the rule's whole mask."""
    space = gym.spaces.MultiDiscrete([3, 4], start=start)
    kernel = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions", **params}]})
    ctx = kernel.new_context()
    mask = kernel.action_mask(space, Proposal, ctx)
    base = np.zeros(2, dtype=np.int64) if start is None else np.asarray(start)
    stopped = {(i, j): not kernel.decide(Proposal(base + np.array([i, j])), ctx).executes
               for i, j in itertools.product(range(3), range(4))}
    # exact for per-dimension bans: a value is masked out iff every action with it is stopped
    expected = [all(stopped[i, j] for j in range(4)) for i in range(3)]
    expected += [all(stopped[i, j] for i in range(3)) for j in range(4)]
    for lo, hi in ((0, 3), (3, 7)):  # a dimension never loses every value
        if all(expected[lo:hi]):
            expected[lo:hi] = [False] * (hi - lo)
    assert (~mask).tolist() == expected
    first, second = np.split(mask, [3])
    for (i, j), stop in stopped.items():
        assert not (first[i] and second[j] and stop), (i, j, mask)


def test_repair_stays_inside_the_space_and_out_of_every_range() -> None:
    """Were bugs: repair took the nearer boundary even outside the Box (so replace became
    block), and with overlapping ranges it moved the action into the other range."""
    outside = {"name": "p", "rules": [{"kind": "forbidden_actions",
                                       "ranges": [{"index": 0, "low": -2.5, "high": -1.5}]}]}
    overlapping = {"name": "p", "rules": [{"kind": "forbidden_actions", "ranges": [
        {"index": 0, "low": 0.0, "high": 1.0}, {"index": 0, "low": 0.9, "high": 1.5}]}]}
    for policy, proposed, expected in ((outside, -2.0, -1.5), (overlapping, 0.95, 1.5),
                                       (overlapping, 0.2, 0.0)):
        env = govgym.GovernedEnv(gym.make("Pendulum-v1"), policy, intervention={"high": "replace"})
        env.reset(seed=0)
        *_, info = env.step(np.array([proposed], dtype=np.float32))
        assert info["governance"]["verdict"] == "replace"
        assert info["governance"]["executed_action"] == [pytest.approx(expected)]
    everything = {"name": "p", "rules": [{"kind": "forbidden_actions",
                                          "ranges": [{"index": 0, "low": -3, "high": 3}]}]}
    rule = Kernel(everything).rules[0]
    assert rule.repair(np.array([0.5], dtype=np.float32), gym.spaces.Box(-2, 2, (1,))) is None


@pytest.mark.parametrize(("low", "high", "proposed", "expected"), [
    (2.5, math.inf, 3, 2), (2.5, 1e30, 4, 2),  # were OverflowError: replace became block
    (0.5, 2.5, 1, 0), (0.5, 2.5, 2, 3),  # 3 was lost: int(2.5) = 2 is inside the range
])
def test_repair_of_an_integer_box_rounds_each_boundary_to_its_allowed_side(
        low: float, high: float, proposed: int, expected: int) -> None:
    space = gym.spaces.Box(-5, 5, (1,), np.int64)
    rule = Kernel({"name": "p", "rules": [{"kind": "forbidden_actions",
                                           "ranges": [{"low": low, "high": high}]}]}).rules[0]
    assert rule.repair(np.array([proposed]), space).tolist() == [expected]


@pytest.mark.parametrize("rule", [
    {"kind": "forbidden_actions", "ranges": [{"index": 2, "low": 0, "high": 1}]},
    {"kind": "forbidden_actions", "dims": {2: [1]}},
    {"kind": "rate", "dims": {2: [1]}, "limit": 1, "window": 2},
])
def test_an_index_the_action_does_not_have_fails_closed(rule: dict[str, Any]) -> None:
    """Was a bug (fail open): an index beyond the action banned or counted nothing;
    state_bounds already failed closed for the same mistake."""
    kernel = Kernel({"name": "p", "rules": [rule]})
    (violation,) = kernel.decide(Proposal(np.array([0.5, 1.0])), kernel.new_context()).violations
    assert violation.code == "rule_error" and "outside the action's 2 entries" in violation.message


@pytest.mark.parametrize("rule", [
    {"kind": "forbidden_actions", "values": [1]},
    {"kind": "rate", "values": [1], "limit": 1, "window": 2},
])
@pytest.mark.parametrize(("action", "fragment"), [
    (np.array([1, 1]), "this action has 2 values"), (np.array([2, 1]), "this action has 2 values"),
    (np.array([1.7], dtype=np.float32), "action value 1.7"),
])
def test_values_on_an_action_that_is_not_one_integer_fail_closed(
        rule: dict[str, Any], action: np.ndarray, fragment: str) -> None:
    """Were bugs (fail open, and a ban of a whole interval): ``values`` judged nothing of an
    action of several values, and cut 1.7 down to the banned action 1."""
    kernel = Kernel({"name": "p", "rules": [rule]})
    (violation,) = kernel.decide(Proposal(action), kernel.new_context()).violations
    assert violation.code == "rule_error" and fragment in violation.message


@pytest.mark.parametrize("rule", [
    {"kind": "forbidden_actions", "dims": {0: [1]}},
    {"kind": "rate", "dims": {0: [1]}, "limit": 1, "window": 5},
    {"kind": "budget", "action_costs": {1: 5.0}, "hard": 1},
])
def test_an_integral_action_value_is_read_as_its_integer_and_a_fraction_is_an_error(
        rule: dict[str, Any]) -> None:
    kernel = Kernel({"name": "p", "rules": [rule]})
    ctx = kernel.new_context()
    size = 2 if "dims" in rule else 1
    one = np.array([1.0, 0.0])[:size]
    if rule["kind"] == "rate":  # one counted action fills the window
        kernel.review(Outcome(None, 0.0, False, False, {}, one, True), ctx)
    whole = kernel.decide(Proposal(one), ctx)
    assert whole.violations and whole.violations[0].code != "rule_error"
    (violation,) = kernel.decide(Proposal(np.array([1.5, 0.0])[:size]), ctx).violations
    assert violation.code == "rule_error" and "action value 1.5 is not an integer" in violation.message


@pytest.mark.parametrize(("extra", "verdict", "ran"),
                         [({}, Verdict.WARN, 3), ({"verdict": "block"}, Verdict.BLOCK, 2)])
def test_a_rate_limit_is_soft_under_its_default_verdict_and_enforced_by_block(
        extra: dict[str, Any], verdict: Verdict, ran: int) -> None:
    """As rate's docstring says: medium -> warn runs the action over the limit (and
    penalises it); ``verdict: block`` stops it and masks it out."""
    kernel = Kernel({"name": "p", "rules": [{"kind": "rate", "values": [1], "limit": 2, "window": 10,
                                             **extra}]})
    ctx = kernel.new_context()
    executed = 0
    for _ in range(3):
        decision = kernel.decide(Proposal(1), ctx)
        executed += decision.executes
        kernel.review(outcome(1, executed=decision.executes), ctx)
    assert decision.verdict == verdict and executed == ran
    mask = kernel.action_mask(gym.spaces.Discrete(2), Proposal, ctx).tolist()
    assert mask == ([True, True] if verdict == Verdict.WARN else [True, False])
