"""Adversarial review of the wrapper, registration and SB3 helpers (second round).

Each test names the bug it pins down; each failed before its fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import GovernedEnv
from govgym._paths import data_dir
from govgym.audit import summarize_action
from govgym.registration import load_env_specs

ENV_IDS = sorted(govgym.ENV_SPECS)


def governed(env: gym.Env) -> GovernedEnv:
    while not isinstance(env, GovernedEnv):
        env = env.env
    return env


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_a_registered_id_rebuilds_from_its_spec_with_a_changed_argument(env_id: str) -> None:
    """Was a bug: the id's GovernedEnv was listed in env.spec.additional_wrappers as well,
    so gym.make(env.spec, cost_limit=7) and govgym.make(env.spec, policy=...) raised
    Gymnasium's "wrapper spec is different" ValueError."""
    env = gym.make(env_id)
    assert [w.name for w in env.spec.additional_wrappers] == []
    changed = gym.make(env.spec, cost_limit=7.0)
    assert changed.reset(seed=0)[1]["cost_limit"] == 7.0
    assert changed.spec.kwargs["cost_limit"] == 7.0 and changed.spec.id == env_id
    empty = govgym.make(env.spec, policy="empty")
    assert governed(empty).kernel.rule_names == []
    again = gym.make(gym.envs.registration.EnvSpec.from_json(changed.spec.to_json()))
    assert governed(again).cost_limit == 7.0
    assert again.spec.max_episode_steps == env.spec.max_episode_steps


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_make_vec_env_builds_every_id(env_id: str) -> None:
    """Was a bug: SB3 asks for render_mode="rgb_array" and falls back on a TypeError only;
    the SQL world raised ValueError, so make_vec_env("Governed-SQL-v0") failed."""
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(env_id, n_envs=2, seed=0)
    try:
        venv.reset()
        infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))[3]
        assert all(isinstance(info["cost"], float) for info in infos)
    finally:
        venv.close()


def test_a_render_mode_the_world_lacks_is_a_type_error_that_names_the_modes() -> None:
    with pytest.raises(TypeError, match=r"render_mode 'rgb_array' is not one of .*\['ansi'\]"):
        gym.make("Governed-SQL-v0", render_mode="rgb_array")
    env = gym.make("Governed-SQL-v0", render_mode="ansi")
    env.reset(seed=0)
    assert isinstance(env.render(), str)
    # the modes gym.make derives for a plain id: named, with the wrapper that gives them
    with pytest.raises(TypeError, match=r"render_mode='rgb_array' and wrap it in gymnasium"
                                        r"\.wrappers\.RenderCollection"):
        gym.make("Governed-CartPole-v1", render_mode="rgb_array_list")


def test_max_episode_steps_minus_one_means_no_limit_and_zero_is_refused() -> None:
    """Was a bug: -1 (Gymnasium's "no limit") and 0 truncated every step."""
    env = govgym.make("MountainCar-v0", policy="empty", max_episode_steps=-1)
    env.reset(seed=0)
    for _ in range(250):  # past MountainCar's registered 200
        *_, terminated, truncated, _ = env.step(1)
        assert not (terminated or truncated)
    registered = gym.make("Governed-MountainCar-v0", max_episode_steps=-1)
    registered.reset(seed=0)
    assert not any(registered.step(1)[3] for _ in range(250))
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="max_episode_steps must be a whole number >= 1, or -1"):
            GovernedEnv(gym.make("CartPole-v1", max_episode_steps=-1), None, max_episode_steps=bad)


def test_whole_number_shaping_values_give_float_reward_changes() -> None:
    """Was a bug: clean_bonus: 1 made reward_delta the int 1; a vector env's info array
    took env 0's int dtype, and env 1's -0.5 was stored as 0."""
    policy = {"name": "no-left", "rules": [{"kind": "forbidden_actions", "values": [0],
                                            "severity": "low"}]}
    shaping = {"penalties": {"low": 0.5}, "max_penalty": 1, "clean_bonus": 1}
    venv = gym.vector.SyncVectorEnv([lambda: GovernedEnv(gym.make("CartPole-v1"), policy,
                                                         shaping=shaping)] * 2)
    venv.reset(seed=0)
    _, rewards, *_, infos = venv.step(np.array([1, 0]))
    deltas = infos["governance"]["reward_delta"]
    assert deltas.dtype.kind == "f" and deltas.tolist() == [1.0, -0.5]
    assert rewards.tolist() == [2.0, 0.5]
    venv.close()


def test_a_policy_given_as_a_path_keeps_the_spec_json_ready() -> None:
    """Was a bug: a pathlib.Path policy was recorded as is; env.spec.to_json() raised."""
    path = data_dir("policies") / "cartpole-envelope.yaml"
    env = govgym.make("CartPole-v1", policy=path)
    spec = gym.envs.registration.EnvSpec.from_json(env.spec.to_json())
    assert governed(gym.make(spec)).kernel.rule_names == governed(env).kernel.rule_names



@pytest.mark.parametrize("kwargs", [
    {"cost_limit": np.float32(3)}, {"max_episode_steps": np.int64(40)},
    {"flush_every": np.int64(8)},
    {"shaping": govgym.Shaping(penalties={govgym.Severity.HIGH: 1.0})},
    {"shaping": {"penalties": {govgym.Severity.HIGH: 1.0}, "max_penalty": 2.0}},
    {"intervention": {govgym.Severity.HIGH: govgym.Verdict.BLOCK}},
], ids=["np-cost-limit", "np-steps", "np-flush", "shaping-enum", "shaping-dict-enum",
        "intervention-enum"])
def test_arguments_the_wrapper_takes_keep_the_spec_json_ready(kwargs: dict[str, Any]) -> None:
    """Was a bug: NumPy scalars were recorded as they are (to_json raised), and Severity
    keys were written by JSON as numbers ("3"), which do not read back as severities."""
    env = govgym.make("Pendulum-v1", policy="pendulum-energy", **kwargs)
    rebuilt = gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json()))
    twin, original = governed(rebuilt), governed(env)
    assert twin.shaping == original.shaping
    assert twin.kernel.policy.verdicts == original.kernel.policy.verdicts
    assert (twin.cost_limit, twin.max_episode_steps) == (original.cost_limit, original.max_episode_steps)


@pytest.mark.parametrize(("action", "summary"), [
    ([0.5], [0.5]), ((1, 2), [1, 2]), ([[1, 2], [3, 4]], [[1, 2], [3, 4]]),
    ((1, np.zeros(2)), "(1, array([0., 0.]))"), (["a", 1], "['a', 1]"),
])
def test_a_list_or_tuple_of_numbers_is_summarized_as_a_list(action: Any, summary: Any) -> None:
    """Was a bug: summarize_action([0.5]) gave the string '[0.5]', against "a list for
    numeric actions" (and np.array([0.5]) gave [0.5])."""
    assert summarize_action(action) == summary
    json.dumps(summarize_action(action))


def test_env_specs_may_use_the_yml_extension(tmp_path: Path) -> None:
    """Was a bug: load_env_specs read only *.yaml files; policies take .yml too."""
    (tmp_path / "a.yml").write_text("id: Governed-Yml-v0\nworld: CartPole-v1\npolicy: empty\n")
    assert list(load_env_specs(tmp_path)) == ["Governed-Yml-v0"]


def test_the_governance_logger_keeps_episodes_that_span_learn_calls() -> None:
    """Was a bug: every learn() call restarted the per-env totals, so with
    reset_num_timesteps=False the episode running across two calls lost its first part."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from govgym.integrations.sb3 import GovernanceLogger

    venv = make_vec_env("Governed-CartPole-v1", n_envs=1, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    log = GovernanceLogger()
    for _ in range(6):
        model.learn(32, callback=log, reset_num_timesteps=False)
    monitor = venv.envs[0]  # SB3's Monitor: its own count of each episode's steps
    assert [e.length for e in log.episodes] == monitor.get_episode_lengths()
    assert len(log.episodes) >= 3
    model.learn(200, callback=log)  # a fresh learn() resets the env, dropping its episode
    assert [e.length for e in log.episodes] == monitor.get_episode_lengths()


def _episode_length(env: gym.Env) -> int:
    env.reset(seed=0)
    for n in range(1, 10_000):
        *_, terminated, truncated, _ = env.step(1)
        if terminated or truncated:
            return n
    raise AssertionError("no episode end")


@pytest.mark.parametrize("limit", [30, 1000])
def test_gym_make_of_the_spec_takes_a_new_step_limit(limit: int) -> None:
    """Was a bug: govgym.make recorded the registered limit as GovernedEnv's own explicit
    argument, so gym.make(env.spec, max_episode_steps=n) built TimeLimit(n) and the
    wrapper overrode it with 200: episodes, the spec and TimeAwareObservation said 200."""
    env = govgym.make("MountainCar-v0", policy="mountaincar-rate")
    assert _episode_length(env) == env.spec.max_episode_steps == 200
    other = gym.make(env.spec, max_episode_steps=limit)
    assert _episode_length(other) == other.spec.max_episode_steps == limit
    assert gym.wrappers.TimeAwareObservation(other).max_timesteps == limit
    assert governed(other).kernel.rule_names == governed(env).kernel.rule_names
    own = govgym.make("MountainCar-v0", policy="mountaincar-rate", max_episode_steps=limit)
    assert _episode_length(gym.make(own.spec)) == limit


EMPTY = {"name": "p", "rules": []}


def test_a_step_limit_given_to_the_wrapper_is_the_specs_and_gym_make_overrides_it() -> None:
    """Was a bug: a limit given to govgym.make(spec, ...) or to GovernedEnv itself was
    recorded as the wrapper's explicit argument, so gym.make(env.spec, max_episode_steps=6)
    built TimeLimit(6) and the wrapper replaced it with its own 12, silently."""
    base = govgym.make("MountainCar-v0", policy=EMPTY)
    via_make = govgym.make(base.spec, max_episode_steps=12)
    own = GovernedEnv(gym.make("MountainCar-v0"), EMPTY, max_episode_steps=12)
    for env in (via_make, own):
        assert _episode_length(env) == env.spec.max_episode_steps == 12
        assert _episode_length(gym.make(env.spec)) == 12
        shorter = gym.make(env.spec, max_episode_steps=6)
        assert _episode_length(shorter) == shorter.spec.max_episode_steps == 6
        rebuilt = gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json()))
        assert _episode_length(rebuilt) == 12
    unlimited = GovernedEnv(gym.make("MountainCar-v0"), EMPTY, max_episode_steps=-1)
    assert unlimited.max_episode_steps is None and unlimited.spec.max_episode_steps is None
    assert governed(gym.make(unlimited.spec)).max_episode_steps is None
    assert _episode_length(gym.make(unlimited.spec, max_episode_steps=6)) == 6


def test_a_registered_ids_spec_writes_json_whatever_form_the_arguments_took(tmp_path: Path) -> None:
    """Was a bug: for a registered id env.spec held gym.make's arguments as given, so a
    Policy object or a Path made to_json() fail, and IntEnum keys of an intervention
    table came back as numbers that are no severity."""
    from govgym import Severity, Verdict, load_policy

    policy_file = tmp_path / "p.yaml"
    policy_file.write_text((data_dir("policies") / "cartpole-envelope.yaml").read_text())
    for kwargs in ({"policy": load_policy("cartpole-envelope")}, {"policy": policy_file},
                   {"intervention": {Severity.HIGH: Verdict.BLOCK}},
                   {"shaping": govgym.Shaping.from_config({"max_penalty": 0.5})},
                   {"safe_action": np.int64(1), "cost_limit": np.float32(3.0)}):
        env = gym.make("Governed-CartPole-v1", **kwargs)
        rebuilt = gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json()))
        assert rebuilt.spec.to_json() == env.spec.to_json()
        first, second = governed(env), governed(rebuilt)
        assert first.kernel.policy.to_dict() == second.kernel.policy.to_dict()
        assert first.shaping == second.shaping and first.safe_action == second.safe_action
