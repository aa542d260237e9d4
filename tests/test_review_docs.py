"""Where a review of the documentation found the code doing something other than the
docs say ("Was a bug"), or the advice in them not working; each is run for real."""

from __future__ import annotations

import gymnasium as gym
import pytest

import govgym  # noqa: F401  (registers the env specs)
from govgym.worlds.sql import SQLWorld


def test_the_read_only_envs_text_mode_advice_keeps_it_read_only() -> None:
    """Was a trap: the spec's own advice, ``world_kwargs={"action_mode": "text"}``,
    replaced its ``levels`` and drew write tasks (41 in 200 resets), which sql-safety
    can never let succeed. The advice now keeps the levels."""
    env = gym.make("Governed-SQL-ReadOnly-v0",
                   world_kwargs={"action_mode": "text", "levels": [0, 1, 2]})
    levels = {env.reset(seed=seed)[1]["task"]["level"] for seed in range(200)}
    assert levels == {"0", "1", "2"}  # (info gives a level as text)
    env.close()


def test_a_world_is_reset_only_into_its_own_tasks() -> None:
    """Was a bug: ``reset(options={"task": ...})`` searched every level, so a world built
    for the read levels (the read-only env's) could be reset into a write task."""
    world = SQLWorld(levels=[0])
    with pytest.raises(ValueError, match=r"not one of this world's tasks \(levels 0\)"):
        world.reset(seed=0, options={"task": "retire_tier:gold"})
    with pytest.raises(ValueError, match="no task or template named 'nonsense'"):
        world.reset(seed=0, options={"task": "nonsense"})
    _, info = world.reset(seed=0, options={"task": "count_rows"})  # a template of level 0
    assert info["task"]["name"].startswith("count_rows:")
    world.close()


def test_a_blocked_statement_is_shown_to_the_agent_with_its_reason() -> None:
    """Was a bug: a blocked step returned the last observation unchanged, so a text-mode
    agent (an LLM) read "Step: 0 of 10" and "Last statement: none yet" after nine refused
    statements, never told that or why they were refused, until the step limit ended the
    episode. The world now counts the step and says what was blocked, and why."""
    env = gym.make("Governed-SQL-v0", world_kwargs={"action_mode": "text"})
    env.reset(seed=0, options={"task": "count_rows:orders"})
    obs, reward, terminated, truncated, info = env.step('SELECT name, ssn FROM customers')
    assert info["governance"]["verdict"] == "block" and not (terminated or truncated)
    assert "Step: 1 of 10" in obs
    assert "Last statement: SELECT name, ssn FROM customers" in obs
    assert "Feedback: blocked by the policy" in obs and "pii_read" in obs
    assert info["sql"] is None and info["damage"]["rows_deleted"] == 0  # nothing ran
    for _ in range(9):
        *_, truncated, info = env.step("DROP TABLE orders")
    assert truncated  # the world's step count and the step limit agree


def test_a_blocked_discrete_action_leaves_the_observation_as_it_was() -> None:
    """Discrete mode keeps a blocked step's observation (index 66 counts the steps the
    world ran): counting blocked steps there cost 2 of 8 seeds the write jobs."""
    from govgym.worlds.sql import make_action

    env = gym.make("Governed-SQL-v0")
    first, _ = env.reset(seed=0, options={"task": "count_rows:orders"})
    obs, *_, info = env.step(make_action("drop", "orders"))
    assert info["governance"]["verdict"] == "block" and (obs == first).all()
    obs, *_ = env.step(make_action("count", "orders"))
    assert obs[66] == 0.1


class _Relabel(gym.ObservationWrapper):
    """An observation wrapper between the governed env and the SQL world."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Text(space.max_length + 11, charset=space.character_set)

    def observation(self, observation: str) -> str:
        return "relabelled\n" + observation


def test_a_wrapper_between_keeps_a_blocked_steps_observation_its_own() -> None:
    """The world's blocked_step answers only when nothing between could change the
    observation; with an observation wrapper there, the last observation is returned."""
    from govgym import GovernedEnv

    env = GovernedEnv(_Relabel(SQLWorld(action_mode="text")), "sql-guarded-writes")
    first, _ = env.reset(seed=0, options={"task": "count_rows:orders"})
    obs, *_, info = env.step("DROP TABLE orders")
    assert info["governance"]["verdict"] == "block" and obs == first
    assert obs.startswith("relabelled\n") and env.observation_space.contains(obs)


def test_describe_gives_each_caller_its_own_meaning() -> None:
    """describe() builds a discrete action's meaning once and copies it per call: a
    caller that edits what it got changes nothing another call sees."""
    from govgym.worlds.sql import make_action

    world = SQLWorld()
    world.reset(seed=0, options={"task": "count_rows:orders"})
    action = make_action("count", "customers")
    first = world.describe(action)
    first["sql"], first["parts"]["verb"] = "DROP TABLE orders", "drop"
    again = world.describe(action)
    assert again["sql"] == "SELECT COUNT(*) FROM customers" and again["parts"]["verb"] == "count"
    assert again["kind"] == "select" and again is not first
    world.reset(seed=0, options={"task": "count_rows:customers"})
    assert world.describe(action)["task"] == "count_rows:customers"  # per task
    world.close()


def test_blocked_text_steps_end_the_episode_at_the_worlds_own_limit() -> None:
    """Was a bug: blocked steps counted toward the world's max_steps, but only an executed
    step could end the episode, so a GovernedEnv without its own limit read 'Step: 5 of 3'."""
    from govgym import GovernedEnv

    env = GovernedEnv(SQLWorld(action_mode="text", max_steps=3), "sql-guarded-writes")
    env.reset(seed=0)
    ends = [env.step("DROP TABLE orders")[3] for _ in range(3)]
    assert ends == [False, False, True]
