"""Adversarial review of the governed wrapper's semantics (GovernedEnv, shaping, the
kernel, the budget / rate / forbidden_actions / state_bounds rules, the env specs).

Tests whose docstring starts "Was a bug" assert what a demanding Gymnasium / SB3 user
expects and failed on the code as reviewed (the "was:" comments say how); they pin the
fixes. The others pin behaviour that was verified to hold.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import GovernedEnv, Kernel, Proposal
from govgym.kernel.types import Violation
from govgym.rules.base import RULE_KINDS, Rule

INF = float("inf")
TORQUE_LIMIT = {"name": "torque", "rules": [{"kind": "forbidden_actions", "name": "torque", "ranges": [
    {"index": 0, "low": 1.8, "high": INF}, {"index": 0, "low": -INF, "high": -1.8}]}]}
CRITICAL_CORRIDOR = {"name": "corridor", "rules": [{
    "kind": "state_bounds", "name": "corridor", "severity": "critical",
    "bounds": [{"index": 0, "low": -0.05, "high": 0.05}]}]}


class Grid(gym.Env):
    """A trivial world with a (Multi)Discrete action space and an empty info."""

    observation_space = gym.spaces.Discrete(1)

    def __init__(self, action_space: gym.Space) -> None:
        self.action_space = action_space
        self.executed: list[Any] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        return 0, {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        self.executed.append(np.asarray(action).tolist())
        return 0, 0.0, False, False, {}


def pendulum(policy: Any, **kwargs: Any) -> GovernedEnv:
    return GovernedEnv(gym.make("Pendulum-v1"), policy, **kwargs)


def torque(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float32)


def run_until_end(env: gym.Env, action: Any, limit: int = 2000) -> tuple[int, bool, bool, dict]:
    for n in range(1, limit + 1):
        *_, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return n, terminated, truncated, info
    raise AssertionError(f"no episode end within {limit} steps")


# ======================================================================================
# Bugs found in review, now fixed
# ======================================================================================

# -- forbidden_actions: Box ranges ------------------------------------------------------


def test_replace_repairs_to_the_range_boundary_whatever_its_float32_rounding() -> None:
    """Was a bug (forbidden_actions.repair): the repaired action is the boundary cast to the
    space's float32; for a boundary like 1.1 that rounds *up* (1.1000000238) it lands
    inside the open forbidden range, the repair is rejected and, with no safe action,
    the step is blocked instead of clipped. Replace must run the boundary value."""
    policy = {"name": "p", "rules": [{"kind": "forbidden_actions",
                                      "ranges": [{"index": 0, "low": 1.1, "high": INF}]}]}
    env = pendulum(policy, intervention={"high": "replace"})
    env.reset(seed=0)
    *_, info = env.step(torque(1.5))
    gov = info["governance"]
    assert gov["verdict"] == "replace", gov  # was: 'block'
    assert gov["executed_action"] is not None and gov["executed_action"][0] == pytest.approx(1.1)
    assert gov["executed_action"][0] <= 1.1  # not inside the forbidden (1.1, inf)


@pytest.mark.parametrize("bad", [INF, -INF, math.nan], ids=["+inf", "-inf", "nan"])
def test_non_finite_box_actions_do_not_slip_past_forbidden_ranges(bad: float) -> None:
    """Was a bug (forbidden_actions.check): ranges are open intervals compared with ``<``, so a
    torque of +inf is not 'inside' (1.8, inf), -inf not inside (-inf, -1.8), and NaN is
    inside nothing: all three are allowed and reach the world (Pendulum clips inf to a
    2.0 torque, beyond the 1.8 limit; NaN poisons the state). A ban that reaches to
    infinity must cover infinity, and NaN must fail closed."""
    env = pendulum(TORQUE_LIMIT, intervention={"high": "replace"})
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passive checker's NaN warnings, when the bug is present
        *_, info = env.step(torque(bad))
    gov = info["governance"]
    assert gov["verdict"] != "allow" and info["cost"] > 0, gov  # was: 'allow', cost 0.0
    executed = gov["executed_action"]
    assert executed is None or (math.isfinite(executed[0]) and abs(executed[0]) <= 1.8)


# -- MultiDiscrete: masks and replacement ------------------------------------------------


def test_multidiscrete_mask_respects_the_space_start() -> None:
    """Was a bug (forbidden_actions.mask): for ``MultiDiscrete(..., start=...)`` (Gymnasium 1.x)
    the mask indexes by the raw action value, not ``value - start``: banning value 0 of
    dimension 0 masks value -1 (allowed) and leaves 0 (blocked) selectable. The Discrete
    path handles ``start``; MultiDiscrete must too."""
    space = gym.spaces.MultiDiscrete([3, 3], start=[-1, -1])
    env = GovernedEnv(Grid(space), {"name": "p", "rules": [{"kind": "forbidden_actions", "dims": {0: [0]}}]})
    env.reset(seed=0)
    mask = env.action_masks()
    # the step-time verdict for each value of dimension 0 (dimension 1 held at its start)
    runs = [env.step(np.array([v, -1]))[4]["governance"]["executed_action"] is not None
            for v in (-1, 0, 1)]
    assert runs == [True, False, True]
    assert mask[:3].tolist() == runs  # was: [False, True, True]


def test_multidiscrete_replace_falls_back_to_an_allowed_action() -> None:
    """Was a bug (GovernedEnv._substitute): replace's last resort, 'the first allowed action of
    a discrete space', only exists for Discrete; on MultiDiscrete (the SQL world's space)
    a replace verdict without a safe_action always degrades to block, although allowed
    actions exist and the per-dimension mask names them."""
    world = Grid(gym.spaces.MultiDiscrete([3, 3]))
    env = GovernedEnv(world, {"name": "p", "rules": [{"kind": "forbidden_actions", "dims": {0: [0]}}]},
                      intervention={"high": "replace"})
    env.reset(seed=0)
    *_, info = env.step(np.array([0, 2]))
    gov = info["governance"]
    assert gov["verdict"] == "replace", gov  # was: 'block'
    assert gov["executed_action"] is not None and gov["executed_action"][0] != 0
    assert world.executed and world.executed[-1][0] != 0


def test_rate_rule_masks_multidiscrete_dimensions_when_its_window_is_full() -> None:
    """Was a bug (rate.py has no ``mask``): on MultiDiscrete the kernel only uses rules' own
    per-dimension masks, and ``rate`` gives none, so MaskablePPO keeps choosing a value
    the rate rule blocks at step time (the shield leaks). Discrete is exact only because
    it enumerates ``decide``."""
    env = GovernedEnv(Grid(gym.spaces.MultiDiscrete([3, 3])), {"name": "p", "rules": [
        {"kind": "rate", "dims": {0: [2]}, "limit": 1, "window": 5, "severity": "high"}]})
    env.reset(seed=0)
    env.step(np.array([2, 0]))
    assert env.step(np.array([2, 1]))[4]["governance"]["verdict"] == "block"
    assert env.action_masks()[:3].tolist() == [True, True, False]  # was: all True


# -- time limits -----------------------------------------------------------------------


@pytest.mark.parametrize("build", [
    lambda: gym.make("Governed-MountainCar-v0", max_episode_steps=300),
    lambda: govgym.make("MountainCar-v0", policy="mountaincar-rate", max_episode_steps=300),
], ids=["gym.make(governed id)", "govgym.make(world id)"])
def test_a_longer_max_episode_steps_is_honoured(build: Any) -> None:
    """Was a bug (registration: the world keeps its own TimeLimit): ``gym.make(id,
    max_episode_steps=300)`` / ``govgym.make(..., max_episode_steps=300)`` still truncate
    at the world's 200, because the inner ``TimeLimit(200)`` of ``gym.make("MountainCar-v0")``
    stays in the world stack (and the governed layer also defaults to it). The spec says
    300; in plain Gymnasium ``gym.make("MountainCar-v0", max_episode_steps=300)`` runs 300."""
    env = build()
    env.reset(seed=0)
    steps, terminated, truncated, _ = run_until_end(env, 1)  # "no push": never reaches the goal
    assert (terminated, truncated) == (False, True)
    assert steps == 300  # was: 200


def test_a_policy_end_on_the_registered_time_limit_step_is_reported_as_terminated() -> None:
    """A registered id's step limit is Gymnasium's own TimeLimit around the governed env
    (so ``gym.make(id, max_episode_steps=n)`` works for any ``n``, see above). On the
    limit step it sets ``truncated`` as it does for every Gymnasium env, and the policy's
    end is still reported: ``terminated`` and ``terminated_by_policy``. (Decided in
    review: ``truncated=False`` here would need the limit inside GovernedEnv and break
    longer ``max_episode_steps``; GovernedEnv's own limit reports the same flags, see
    test_compat_gymnasium.)"""
    probe = govgym.make("CartPole-v1", policy=CRITICAL_CORRIDOR)
    probe.reset(seed=0)
    steps, terminated, _, info = run_until_end(probe, 1)
    assert terminated and info["governance"]["terminated_by_policy"]
    env = gym.make("Governed-CartPole-v1", policy=CRITICAL_CORRIDOR, max_episode_steps=steps)
    env.reset(seed=0)
    for _ in range(steps):
        *_, terminated, truncated, info = env.step(1)
    assert info["governance"]["terminated_by_policy"] is True
    assert (terminated, truncated) == (True, True)
    env = gym.make("Governed-CartPole-v1", policy=CRITICAL_CORRIDOR, max_episode_steps=steps + 5)
    env.reset(seed=0)
    assert run_until_end(env, 1)[:3] == (steps, True, False)  # ended by policy before the limit


# -- verdicts, shaping and accounting -------------------------------------------------


def test_allow_verdict_is_not_penalised() -> None:
    """Was a bug (GovernedEnv._tally shapes every violation whatever its verdict): the contract's
    only difference between ``allow`` and ``warn`` is the penalty (warn = allow and
    penalise), yet a violation mapped to ``allow`` is penalised exactly like ``warn``.
    Its cost must still be reported."""
    policy = {"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1], "severity": "low"}]}
    allow = GovernedEnv(gym.make("CartPole-v1"), policy, intervention={"low": "allow"},
                        shaping={"penalties": {"low": 0.3}})
    warn = GovernedEnv(gym.make("CartPole-v1"), policy, intervention={"low": "warn"},
                       shaping={"penalties": {"low": 0.3}})
    for env in (allow, warn):
        env.reset(seed=0)
    _, r_allow, *_, info_allow = allow.step(1)
    _, r_warn, *_, info_warn = warn.step(1)
    assert info_allow["governance"]["verdict"] == "allow" and info_warn["governance"]["verdict"] == "warn"
    assert info_allow["cost"] == info_warn["cost"] == 1.0
    assert r_warn == pytest.approx(0.7)
    assert r_allow == 1.0 and info_allow["governance"]["reward_delta"] == 0.0  # was: 0.7, -0.3


def test_the_executed_substitutes_own_violations_are_reported_and_costed() -> None:
    """Was a bug (GovernedEnv.step/_substitute): a substitute is accepted when its verdict lets
    it run (allow or warn), but its own violations are thrown away: action 0 runs with a
    low violation (cost 3) and the step reports neither the violation, nor
    ``cost_warn0``, nor an executed violation. A violation that reached the world must be
    measured (DESIGN: a missed violation must never look like a clean run)."""
    policy = {"name": "p", "rules": [
        {"kind": "forbidden_actions", "name": "no1", "values": [1], "severity": "high"},
        {"kind": "forbidden_actions", "name": "warn0", "values": [0], "severity": "low", "cost": 3.0}]}
    env = GovernedEnv(gym.make("CartPole-v1"), policy, intervention={"high": "replace"})
    env.reset(seed=0)
    *_, info = env.step(1)
    gov = info["governance"]
    assert gov["verdict"] == "replace" and gov["executed_action"] == [0]
    executed = [(v["rule"], v["executed"]) for v in gov["violations"] if v["executed"]]
    assert executed == [("warn0", True)], gov["violations"]  # was: []
    assert info["cost_warn0"] == 3.0 and info["cost"] == pytest.approx(4.0)
    assert info["episode_executed_violations"] == 1


def test_post_violations_on_a_step_where_nothing_ran_are_not_executed() -> None:
    """Was a bug (GovernedEnv._tally marks every post-stage violation ``executed: True``): on a
    blocked step (``executed_action`` is None) the state_bounds rule re-reads the unchanged
    state and its violation is reported as executed and added to
    ``episode_executed_violations``, inflating the 'executed violations' a benchmark
    reports for a governed agent whose actions were all stopped."""
    policy = {"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [1]},  # high -> block
        {"kind": "state_bounds", "severity": "low", "bounds": [{"index": 0, "low": -1e-4, "high": 1e-4}]}]}
    env = GovernedEnv(gym.make("CartPole-v1"), policy)
    env.reset(seed=0)
    *_, info = env.step(0)  # runs, leaves the (tiny) bound: one executed post violation
    assert info["episode_executed_violations"] == 1
    *_, info = env.step(1)  # blocked: nothing ran
    gov = info["governance"]
    assert gov["verdict"] == "block" and gov["executed_action"] is None
    assert all(v["executed"] is False for v in gov["violations"]), gov["violations"]
    assert info["episode_executed_violations"] == 1  # was: 2


def test_a_blocked_step_returns_the_worlds_state_not_a_callers_edit() -> None:
    """Was a bug (GovernedEnv.step keeps the very observation object it returned as
    ``_last_obs``): a caller that edits an observation in place (in-place normalisation)
    changes what the next blocked step returns and what the next proposal's
    ``observation`` says. The blocked-step path already copies for this reason; the
    stored observation needs the same protection."""
    env = GovernedEnv(gym.make("CartPole-v1"), {"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [1]}]})
    env.reset(seed=0)
    obs, *_ = env.step(0)
    state = obs.copy()
    obs *= 0.0  # the caller's own business
    blocked, *_, info = env.step(1)
    assert info["governance"]["verdict"] == "block"
    np.testing.assert_array_equal(blocked, state)  # was: zeros


# -- kernel -----------------------------------------------------------------------------

class _StringSeverity(Rule):
    kind = "review_semantics_string_severity"
    checks_proposals = True

    def check(self, proposal: Proposal, state: Any) -> list[Violation]:
        return [Violation(self.name, "x", "high", "a severity given by name")]  # type: ignore[arg-type]


def test_kernel_never_raises_on_a_violation_with_an_invalid_severity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Was a bug (Kernel._judge looks ``verdicts[v.severity]`` up outside the fail-closed
    ``try``): a custom rule whose Violation carries ``"high"`` instead of
    ``Severity.HIGH`` makes ``decide`` raise KeyError, so the governed step crashes. The
    kernel promises never to raise and to turn an invalid Violation into a critical
    ``rule_error``."""
    monkeypatch.setitem(RULE_KINDS, _StringSeverity.kind, _StringSeverity)
    kernel = Kernel({"name": "p", "rules": [{"kind": _StringSeverity.kind}]})
    decision = kernel.decide(Proposal(0), kernel.new_context())  # was: KeyError: 'high'
    assert not decision.executes and decision.violations


# ======================================================================================
# Verified behaviour (passes)
# ======================================================================================


def test_box_range_edges_are_allowed_and_just_beyond_is_clipped() -> None:
    env = pendulum(TORQUE_LIMIT, intervention={"high": "replace"})
    env.reset(seed=0)
    for edge in (1.8, -1.8):
        assert env.step(torque(edge))[4]["governance"]["verdict"] == "allow"
    beyond = np.nextafter(np.float32(1.8), np.float32(3))
    *_, info = env.step(np.array([beyond], dtype=np.float32))
    assert info["governance"]["verdict"] == "replace"
    assert info["governance"]["executed_action"] == pytest.approx([1.8])


def test_replace_with_a_forbidden_safe_action_uses_the_first_allowed_one() -> None:
    env = govgym.make("Acrobot-v1", policy={"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [0, 1]}]}, intervention={"high": "replace"}, safe_action=1)
    env.reset(seed=0)
    *_, info = env.step(0)
    assert info["governance"]["verdict"] == "replace"
    assert (info["governance"]["proposed_action"], info["governance"]["executed_action"]) == ([0], [2])


def test_pendulum_budget_soft_then_hard_and_fresh_each_episode() -> None:
    env = gym.make("Governed-Pendulum-v1")
    per_episode = []
    for seed in (0, 1):
        env.reset(seed=seed)
        spent, total, first, step = 0.0, 0.0, {}, 0
        while True:
            step += 1
            *_, terminated, truncated, info = env.step(torque(1.7))
            gov = info["governance"]
            spent += abs(gov["executed_action"][0])
            for v in gov["violations"]:
                first.setdefault(v["code"], (step, gov["verdict"]))
            total += info["cost"]
            assert info["cost"] == pytest.approx(info["cost_energy"] + info["cost_torque_limit"])
            assert info["episode_cost"] == pytest.approx(total)
            if terminated or truncated:
                break
        assert spent <= 250.0 + 1e-6 and (terminated, truncated) == (False, True)
        per_episode.append(first)
    # soft: penalised (warn) from the 89th step; hard: replaced by zero torque; same after reset
    assert per_episode[0] == per_episode[1] == {"soft_limit": (89, "warn"), "hard_limit": (148, "replace")}


def test_rate_window_is_never_exceeded_and_resets_with_the_episode() -> None:
    env = gym.make("Governed-MountainCar-v0")
    masks = env.get_wrapper_attr("action_masks")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    pushes = []
    while True:
        *_, terminated, truncated, info = env.step(int(rng.choice([0, 2, 2, 1])))
        pushes.append(info["governance"]["executed_action"][0] != 1)
        if terminated or truncated:
            break
    assert max(sum(pushes[i:i + 40]) for i in range(len(pushes) - 39)) == 30
    env.reset(seed=0)
    for _ in range(30):
        env.step(2)
    assert masks().tolist() == [False, True, False]
    env.reset(seed=1)
    assert masks().tolist() == [True, True, True]
    assert env.step(2)[4]["governance"]["verdict"] == "allow"


def test_monitor_reports_budget_overruns_without_enforcing_or_shaping() -> None:
    env = gym.make("Governed-Pendulum-v1", intervention="monitor")
    env.reset(seed=0)
    spent = 0.0
    for _ in range(200):
        _, reward, terminated, truncated, info = env.step(torque(2.0))
        gov = info["governance"]
        assert gov["verdict"] == "allow" and gov["executed_action"] == [2.0]
        assert reward == gov["raw_reward"] and gov["reward_delta"] == 0.0
        spent += 2.0
        if terminated or truncated:
            break
    assert spent == 400.0 and not terminated
    codes = {v["code"] for v in gov["violations"]}
    assert codes == {"forbidden_range", "hard_limit"} and info["cost"] == 2.0


def test_record_episode_statistics_outside_counts_blocked_steps_and_shaped_reward() -> None:
    env = gym.wrappers.RecordEpisodeStatistics(GovernedEnv(
        gym.make("CartPole-v1"), {"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1]}]},
        max_episode_steps=6))
    env.reset(seed=0)
    rewards = []
    while True:
        _, reward, terminated, truncated, info = env.step(1)  # always blocked
        rewards.append(reward)
        if terminated or truncated:
            break
    assert rewards == [-0.5] * 6 and truncated and not terminated
    assert info["episode"]["l"] == 6 and info["episode"]["r"] == pytest.approx(-3.0)
    assert info["episode_cost"] == 6.0 and info["episode_executed_violations"] == 0


# ======================================================================================
# Fixed with the review (tests added with the fixes)
# ======================================================================================


def test_a_time_limit_directly_beneath_is_taken_over_and_a_deeper_one_warns() -> None:
    # gym.make's TimeLimit directly beneath: absorbed, so a longer governed limit holds
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        env = GovernedEnv(gym.make("CartPole-v1"), None, max_episode_steps=600)
    assert not isinstance(env.env, gym.wrappers.TimeLimit) and env.max_episode_steps == 600
    assert GovernedEnv(gym.make("CartPole-v1"), None).max_episode_steps == 500
    env.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):  # a linear balancing controller keeps the pole up past 500
        x, x_dot, theta, theta_dot = env.unwrapped.state
        _, _, terminated, truncated, _ = env.step(int(x + 1.5 * x_dot + 18 * theta + 3 * theta_dot > 0))
        steps += 1
    assert (steps, terminated, truncated) == (600, False, True)
    # a TimeLimit under another wrapper stays, and a longer limit than its own warns
    with pytest.warns(UserWarning, match="TimeLimit ends episodes after 500"):
        GovernedEnv(gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1")), None,
                    max_episode_steps=600)
    env = GovernedEnv(gym.make("CartPole-v1", max_episode_steps=-1), None, max_episode_steps=600)
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CartPole's own "step after terminated" warning
        assert run_until_end(env, 0, limit=700)[:3] in {(n, True, False) for n in range(1, 600)}


def test_the_spec_says_the_governed_limit_so_time_aware_wrappers_work() -> None:
    env = govgym.make("CartPole-v1", policy=None)
    assert env.spec.max_episode_steps == 500 == env.get_wrapper_attr("max_episode_steps")
    timed = gym.wrappers.TimeAwareObservation(env)  # raised "max_episode_steps" before
    obs, _ = timed.reset(seed=0)
    assert obs.shape == (5,)
    rebuilt = gym.make(env.spec)
    assert rebuilt.spec.max_episode_steps == 500
    assert rebuilt.get_wrapper_attr("max_episode_steps") == 500
    assert not isinstance(rebuilt.env, gym.wrappers.TimeLimit)


@pytest.mark.parametrize(("count", "second"), [("executed", "allow"), ("proposed", "block")])
def test_a_rate_counting_proposals_sees_a_governed_envs_blocked_steps(count: str, second: str) -> None:
    env = GovernedEnv(Grid(gym.spaces.Discrete(3)), {"name": "p", "rules": [
        {"kind": "forbidden_actions", "name": "no_2", "values": [2], "verdict": "block"},
        {"kind": "rate", "name": "asks", "values": [1, 2], "limit": 1, "window": 10,
         "verdict": "block", "count": count}]})
    env.reset(seed=0)
    first = env.step(2)[4]["governance"]
    assert first["verdict"] == "block" and first["executed_action"] is None
    # the blocked proposal used the one slot only when proposals count: the mask says so too
    assert env.action_masks().tolist() == [True, second == "allow", False]
    *_, info = env.step(1)
    assert info["governance"]["verdict"] == second
    assert [v["code"] for v in info["governance"]["violations"]] == (
        ["rate_exceeded"] if second == "block" else [])


class _CostlyWorld(Grid):
    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        return 0, 0.0, False, False, {"cost": 0.25}


@pytest.mark.parametrize("policy", [None, {"name": "p", "rules": [
    {"kind": "forbidden_actions", "values": [1]}]}], ids=["unruled", "ruled"])
def test_a_cost_the_world_reports_is_kept_as_world_cost(policy: Any) -> None:
    env = GovernedEnv(_CostlyWorld(gym.spaces.Discrete(2)), policy)
    env.reset(seed=0)
    *_, info = env.step(0)
    assert info["cost"] == 0.0 and info["world_cost"] == 0.25


def test_safe_action_is_checked_when_the_env_is_built_and_numpy_ones_serialise() -> None:
    with pytest.raises(ValueError, match=r"safe_action \[5.0\] is not an action of the action space Box"):
        pendulum(TORQUE_LIMIT, safe_action=[5.0])
    with pytest.raises(ValueError, match="safe_action 3 is not an action"):
        GovernedEnv(gym.make("CartPole-v1"), None, safe_action=3)
    env = pendulum(TORQUE_LIMIT, safe_action=np.array([0.5], dtype=np.float32))
    rebuilt = gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json()))
    assert rebuilt.get_wrapper_attr("safe_action") == [0.5]


def test_nan_in_a_ranged_entry_has_no_repair_and_is_blocked_under_replace() -> None:
    env = pendulum(TORQUE_LIMIT, intervention={"high": "replace"})
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        *_, info = env.step(torque(math.nan))
    assert info["governance"]["verdict"] == "block" and info["governance"]["executed_action"] is None
