"""GovernedEnv: how each verdict is enacted, shaping, the info contract, masks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import GovernedEnv, Shaping

NO_RIGHT = {"name": "no-right", "rules": [{"kind": "forbidden_actions", "values": [1]}]}


def cartpole(policy: object = NO_RIGHT, **kwargs: object) -> GovernedEnv:
    return GovernedEnv(gym.make("CartPole-v1"), policy, **kwargs)


def test_allow_passes_everything_through_unchanged() -> None:
    raw, governed = gym.make("CartPole-v1"), cartpole(None)
    obs_a, _ = raw.reset(seed=3)
    obs_b, info = governed.reset(seed=3)
    assert np.array_equal(obs_a, obs_b) and info["cost"] == 0.0
    for action in [0, 1, 1, 0, 1]:
        a, b = raw.step(action), governed.step(action)
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4]
        assert b[4]["governance"]["verdict"] == "allow" and b[4]["cost"] == 0.0


def test_block_does_not_run_the_action_and_returns_the_last_observation() -> None:
    env = cartpole()
    obs, _ = env.reset(seed=0)
    after, reward, terminated, truncated, info = env.step(1)
    assert np.array_equal(after, obs)
    assert (reward, terminated, truncated) == (-0.5, False, False)  # world reward 0, high penalty
    gov = info["governance"]
    assert gov["verdict"] == "block" and gov["executed_action"] is None and gov["proposed_action"] == [1]
    assert gov["violations"][0]["executed"] is False and gov["violations"][0]["stage"] == "pre"
    assert info["cost"] == 1.0 and info["cost_forbidden_actions"] == 1.0
    moved, *_ = env.step(0)
    assert not np.array_equal(moved, obs)


def test_replace_runs_the_first_allowed_action_and_reports_both() -> None:
    env = cartpole(intervention={"high": "replace"})
    twin = gym.make("CartPole-v1")
    env.reset(seed=1)
    twin.reset(seed=1)
    obs, reward, *_ , info = env.step(1)
    expected, *_ = twin.step(0)
    assert np.array_equal(obs, expected)
    assert info["governance"]["verdict"] == "replace"
    assert (info["governance"]["proposed_action"], info["governance"]["executed_action"]) == ([1], [0])
    assert info["governance"]["raw_reward"] == 1.0 and reward == 0.5


def test_replace_prefers_repair_then_safe_action_else_blocks() -> None:
    env = gym.make("Governed-Pendulum-v1")
    env.reset(seed=0)
    *_, info = env.step(np.array([2.0], dtype=np.float32))
    assert info["governance"]["executed_action"] == pytest.approx([1.8])
    for beyond in (2.5, 40.0, -2.5):  # past the space bound: Pendulum would clip to 2.0
        *_, info = env.step(np.array([beyond], dtype=np.float32))
        assert info["governance"]["executed_action"] == pytest.approx([np.sign(beyond) * 1.8])
    nothing_allowed = cartpole({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [0, 1]}]},
                               intervention={"high": "replace"})
    nothing_allowed.reset(seed=0)
    *_, info = nothing_allowed.step(0)
    assert info["governance"]["verdict"] == "block" and info["governance"]["executed_action"] is None


def test_safe_action_substitute() -> None:
    env = cartpole(intervention={"high": "replace"}, safe_action=0)
    env.reset(seed=0)
    *_, info = env.step(1)
    assert info["governance"]["executed_action"] == [0]


def test_terminate_before_the_step_ends_the_episode_without_running_it() -> None:
    env = cartpole({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1],
                                           "severity": "critical"}]})
    obs, _ = env.reset(seed=0)
    after, reward, terminated, truncated, info = env.step(1)
    assert terminated and not truncated and np.array_equal(after, obs)
    assert info["governance"]["terminated_by_policy"] and info["governance"]["executed_action"] is None
    assert info["episode_cost"] == 1.0 and info["episode_violations"] == 1
    assert info["episode_executed_violations"] == 0


def test_terminate_after_the_step_on_a_critical_outcome() -> None:
    env = gym.make("Governed-CartPole-v1")
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(1)
        if terminated or truncated:
            break
    # Pushing right tips the pole before the cart reaches |x| = 1.0: the world ends it.
    assert terminated and not info["governance"]["terminated_by_policy"]
    env = GovernedEnv(gym.make("CartPole-v1"), {"name": "p", "rules": [{"kind": "state_bounds",
                      "severity": "critical", "bounds": [{"index": 1, "low": -0.1, "high": 0.1}]}]})
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(1)
    assert terminated and info["governance"]["terminated_by_policy"]
    assert info["governance"]["executed_action"] == [1]  # it ran, then the outcome ended it
    assert info["governance"]["violations"][0]["stage"] == "post"


def test_monitor_counts_but_never_intervenes_or_shapes() -> None:
    env = cartpole({"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1],
                                           "severity": "critical"}]}, intervention="monitor")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(1)
    assert reward == 1.0 and not terminated and info["cost"] == 1.0
    assert info["governance"]["verdict"] == "allow"
    assert info["governance"]["violations"][0]["executed"] is True
    with pytest.raises(ValueError, match="monitor"):
        cartpole(intervention="observe")


def test_shaping_is_bounded_and_clean_bonus_paid_only_when_clean() -> None:
    policy = {"name": "p", "rules": [
        {"kind": "forbidden_actions", "name": f"r{i}", "values": [1], "severity": "low"} for i in range(5)]}
    env = cartpole(policy, shaping={"penalties": {"low": 1.0}, "max_penalty": 2.0, "clean_bonus": 0.1})
    env.reset(seed=0)
    _, reward, *_, info = env.step(1)  # warn: runs; 5 x 1.0 penalty capped at 2.0
    assert reward == pytest.approx(1.0 - 2.0) and info["governance"]["reward_delta"] == -2.0
    assert info["cost"] == 5.0
    _, reward, *_ = env.step(0)
    assert reward == pytest.approx(1.1)
    with pytest.raises(ValueError, match="finite"):
        cartpole(shaping={"max_penalty": float("nan")})
    with pytest.raises(ValueError, match="unknown shaping keys"):
        cartpole(shaping={"penalty": 1})


def test_a_given_penalty_table_is_the_whole_table() -> None:
    """Was a bug (Shaping.from_config merged the defaults in): an env spec's
    ``penalties: {high: 0.5}`` still penalised a low violation 0.05 and a medium one 0.2.
    A mapping now means what ``Shaping(penalties=...)`` means; no argument at all gives
    the documented defaults."""
    policy = {"name": "p", "rules": [
        {"kind": "forbidden_actions", "name": "left", "values": [0], "severity": "low"},
        {"kind": "forbidden_actions", "name": "right", "values": [1], "severity": "medium"}]}
    listed = cartpole(policy, intervention={"low": "warn", "medium": "warn"},
                      shaping={"penalties": {"high": 0.5}})
    assert listed.shaping == Shaping(penalties={"high": 0.5})
    default = cartpole(policy, intervention={"low": "warn", "medium": "warn"})
    assert default.shaping == Shaping.from_config({"max_penalty": 1.0})
    for env, deltas in ((listed, [0.0, 0.0]), (default, [-0.05, -0.2])):
        env.reset(seed=0)
        got = []
        for action in (0, 1):
            *_, info = env.step(action)
            assert info["cost"] == 1.0 and info["governance"]["verdict"] == "warn"
            got.append(info["governance"]["reward_delta"])
        assert got == pytest.approx(deltas)


def test_info_contract_every_step_and_reset() -> None:
    env = gym.make("Governed-CartPole-v1")
    rule_keys = {"cost_envelope", "cost_hard_envelope"}
    obs, info = env.reset(seed=5)
    assert info["cost"] == 0.0 and rule_keys <= set(info) and info["cost_limit"] == 25
    rng = np.random.default_rng(0)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(2)))
        assert isinstance(info["cost"], float) and info["cost"] >= 0.0
        assert info["cost"] == pytest.approx(sum(info[k] for k in rule_keys))
        assert set(info["governance"]) == {"verdict", "violations", "proposed_action", "executed_action",
                                           "terminated_by_policy", "raw_reward", "reward_delta"}
        total += info["cost"]
        if terminated or truncated:
            break
    assert info["episode_cost"] == pytest.approx(total)


def test_action_masks_follow_state_dependent_rules() -> None:
    env = gym.make("Governed-MountainCar-v0")
    env.reset(seed=0)
    masks = env.get_wrapper_attr("action_masks")
    assert masks().tolist() == [True, True, True]
    for _ in range(30):
        env.step(2)
    assert masks().tolist() == [False, True, False]  # the duty-cycle window is full
    with pytest.raises(TypeError, match="Discrete or MultiDiscrete"):
        gym.make("Governed-Pendulum-v1").get_wrapper_attr("action_masks")()


def test_describe_gives_the_kernel_the_meaning() -> None:
    class Shouty(gym.Env):
        observation_space = gym.spaces.Discrete(1)
        action_space = gym.spaces.Discrete(2)

        def describe(self, action: int) -> dict:
            return {"kind": ["whisper", "shout"][int(action)]}

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return 0, {}

        def step(self, action):
            return 0, 0.0, False, False, {}

    env = GovernedEnv(Shouty(), {"name": "p", "rules": [{"kind": "rate", "kinds": ["shout"], "limit": 1,
                                                          "window": 5}]})
    env.reset()
    assert env.propose(1).meaning == {"kind": "shout"}
    assert env.step(1)[4]["governance"]["verdict"] == "allow"
    assert env.step(1)[4]["governance"]["verdict"] == "warn"  # medium -> warn
    assert env.step(0)[4]["governance"]["verdict"] == "allow"


def test_make_governs_any_id_and_overrides_a_spec_policy() -> None:
    env = govgym.make("Acrobot-v1", policy={"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [0]}]}, cost_limit=3)
    env.reset(seed=0)
    *_, info = env.step(0)
    assert info["governance"]["verdict"] == "block" and info["cost_limit"] == 3
    strict = govgym.make("Governed-CartPole-v1", policy=NO_RIGHT)
    strict.reset(seed=0)
    assert strict.step(1)[4]["governance"]["verdict"] == "block"
    with pytest.raises(TypeError, match="unexpected argument"):
        gym.make("Governed-CartPole-v1", polcy="x")


def test_blocked_steps_count_toward_the_episode_limit() -> None:
    """A world's own TimeLimit never sees blocked steps; the governed layer still ends it."""
    env = govgym.make("CartPole-v1", policy={"name": "p", "rules": [
        {"kind": "forbidden_actions", "values": [0, 1]}]})
    assert env.max_episode_steps == 500
    env.reset(seed=0)
    for step in range(1, 501):
        *_, terminated, truncated, info = env.step(step % 2)
        assert info["governance"]["verdict"] == "block"
        if truncated:
            break
    assert step == 500 and truncated and not terminated
    assert info["episode_violations"] == 500 and info["episode_executed_violations"] == 0
    short = cartpole(None, max_episode_steps=3)
    short.reset(seed=0)
    assert [short.step(0)[3] for _ in range(3)] == [False, False, True]


def test_monitor_ignores_rule_level_verdicts_and_attaches_nothing() -> None:
    policy = {"name": "p", "rules": [{"kind": "forbidden_actions", "values": [1], "verdict": "terminate"}]}
    env = cartpole(policy, intervention="monitor")
    env.reset(seed=0)
    *_, terminated, _, info = env.step(1)
    assert not terminated and info["governance"]["verdict"] == "allow" and info["cost"] == 1.0
    sql = gym.make("Governed-SQL-v0", intervention="monitor")
    assert sql.unwrapped._guard is None  # the ungoverned baseline runs on a bare engine
    assert gym.make("Governed-SQL-v0").unwrapped._guard is not None


def test_a_blocked_sql_step_reports_the_worlds_idle_info() -> None:
    env = gym.make("Governed-SQL-v0", world_kwargs={"action_mode": "text"})
    env.reset(seed=0)
    *_, info = env.step("DROP TABLE orders")
    assert info["governance"]["verdict"] == "block"
    assert info["damage"]["tables_dropped"] == 0 and info["sql"] is None and info["success"] is False


def test_a_repair_that_raises_falls_back_instead_of_crashing_the_step() -> None:
    """Found by review: rule.repair ran outside the kernel's guard and its exception
    escaped env.step under the replace verdict."""
    import gymnasium as gym

    from govgym import GovernedEnv

    env = GovernedEnv(gym.make("CartPole-v1"), {"name": "no-left", "rules": [
        {"kind": "forbidden_actions", "values": [0], "severity": "high"}]},
        intervention={"high": "replace"}, safe_action=1)
    env.reset(seed=0)

    def broken(action, space):  # type: ignore[no-untyped-def]
        raise RuntimeError("repair failed")

    env.kernel.rules[0].repair = broken  # type: ignore[method-assign]
    *_, info = env.step(0)
    assert info["governance"]["verdict"] == "replace" and info["governance"]["executed_action"] == [1]
    env.close()


def test_a_repair_that_raises_is_reported_in_info_and_the_audit_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Found by review: a repair that raised was swallowed without a trace, so the audit
    record of the step said nothing of the rule that broke."""
    log = tmp_path / "audit.jsonl"
    env = GovernedEnv(gym.make("CartPole-v1"), {"name": "no-left", "rules": [
        {"kind": "forbidden_actions", "values": [0], "severity": "high"}]},
        intervention={"high": "replace"}, safe_action=1, audit_path=log)
    env.reset(seed=0)

    def broken(action, space):  # type: ignore[no-untyped-def]
        raise RuntimeError("repair failed")

    env.kernel.rules[0].repair = broken  # type: ignore[method-assign]
    *_, info = env.step(0)
    expected = [{"rule": env.kernel.rule_names[0], "error": "RuntimeError: repair failed"}]
    assert info["governance"]["repair_errors"] == expected
    assert info["cost"] == 1.0  # the proposal's own violation, nothing more
    *_, clean = env.step(1)  # a step that needs no repair says nothing of one
    assert "repair_errors" not in clean["governance"]
    env.close()
    records = govgym.audit.read(log).records
    assert records[0]["extra"] == {"executed_action": [1], "repair_errors": expected}
    assert "extra" not in records[1]


@pytest.mark.parametrize("verdict", ["block", "terminate", "replace", "allow"])
def test_a_step_before_reset_raises_whatever_the_verdict(verdict: str) -> None:
    """Was a bug: a blocked or ended step before reset() returned obs=None (not in the
    observation space) instead of raising, as the world's own step does."""
    world = gym.make("CartPole-v1")
    env = GovernedEnv(world, {"name": "no-left", "rules": [
        {"kind": "forbidden_actions", "values": [0]}]}, intervention={"high": verdict})
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    assert env.observation_space.contains(env.step(0)[0])
