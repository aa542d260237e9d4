"""Compatibility with Stable-Baselines3 and sb3-contrib: SB3's ``check_env`` on every
registered id, PPO learning inside the constraints, MaskablePPO with the wrapper's
action masks (the pre-emptive shield), and ``SubprocVecEnv`` building governed envs by id."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")
torch = pytest.importorskip("torch")

from sb3_contrib import MaskablePPO  # noqa: E402
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_checker import check_env as sb3_check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv  # noqa: E402

import govgym  # noqa: E402
from govgym import load_policy  # noqa: E402

ENV_IDS = sorted(govgym.ENV_SPECS)
CARTPOLE = "Governed-CartPole-v1"
MOUNTAINCAR = "Governed-MountainCar-v0"

# SB3's advice on action-space scaling is not an API breach; any other warning is.
BENIGN_SB3_WARNINGS = re.compile(r"symmetric and normalized Box action space")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def duty_cycle_rule() -> Any:
    """The rate rule of the MountainCar spec (read, not hard-coded: the policy may change)."""
    policy = load_policy(govgym.ENV_SPECS[MOUNTAINCAR].policy)
    rates = [rule for rule in policy.rules if rule.kind == "rate"]
    assert len(rates) == 1
    return rates[0]


# -- SB3 check_env ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [*(functools.partial(gym.make, i) for i in ENV_IDS),
                                  functools.partial(govgym.make, "CartPole-v1",
                                                    policy="cartpole-envelope")],
                         ids=[*ENV_IDS, "CartPole-v1+cartpole-envelope"])
def test_sb3_check_env(make: Callable[[], gym.Env]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(make(), warn=True)
    serious = [str(w.message) for w in caught if not BENIGN_SB3_WARNINGS.search(str(w.message))]
    assert serious == []


# -- PPO learns inside the constraints --------------------------------------------------------


class CostMeter(BaseCallback):
    """Collect ``info["cost"]`` of every training step, as a CMDP learner would."""

    def __init__(self) -> None:
        super().__init__()
        self.costs: list[float] = []

    def _on_step(self) -> bool:
        self.costs.extend(float(info["cost"]) for info in self.locals["infos"])
        return True


def mean_return(env_id: str, act: Callable[[np.ndarray, np.random.Generator], Any],
                seeds: range) -> float:
    env = gym.make(env_id)
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs, rng))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_ppo_learns_on_governed_cartpole() -> None:
    env = gym.make(CARTPOLE)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, learning_rate=1e-3, seed=0,
                device="cpu")
    meter = CostMeter()
    model.learn(total_timesteps=4096, callback=meter)
    assert model.num_timesteps >= 4096
    assert len(meter.costs) == model.num_timesteps
    assert min(meter.costs) >= 0.0 and max(meter.costs) > 0.0, "the learner never saw a cost"
    seeds = range(1000, 1010)
    trained = mean_return(CARTPOLE, lambda obs, _: int(model.predict(obs, deterministic=True)[0]),
                          seeds)
    random = mean_return(CARTPOLE, lambda _, rng: int(rng.integers(2)), seeds)
    # 4k steps reach 80-370 over seeds 0-7 here; random play about 17
    assert trained >= max(3.0 * random, random + 30.0), (trained, random)


# -- MaskablePPO and the pre-emptive shield -------------------------------------------------


class MaskAudit(BaseCallback):
    """Check every training step: the masks MaskablePPO used and what the env reported."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule
        self.steps = 0
        self.restricted = 0
        self.outside_mask = 0
        self.rule_violations = 0

    def _on_step(self) -> bool:
        masks, actions = self.locals["action_masks"], self.locals["actions"]
        assert masks is not None, "MaskablePPO did not use action masks"
        for mask, action, info in zip(masks, actions, self.locals["infos"], strict=True):
            self.steps += 1
            self.restricted += not mask.all()
            self.outside_mask += not mask[int(action)]
            self.rule_violations += sum(v["rule"] == self.rule
                                        for v in info["governance"]["violations"])
        return True


def test_maskable_ppo_trains_with_the_masks_and_the_shield_holds() -> None:
    rule = duty_cycle_rule()
    vec = DummyVecEnv([lambda: gym.make(MOUNTAINCAR)])
    assert is_masking_supported(vec)
    model = MaskablePPO("MlpPolicy", vec, n_steps=256, batch_size=64, seed=0, device="cpu")
    audit = MaskAudit(rule.name)
    model.learn(total_timesteps=2048, callback=audit)
    assert audit.steps >= 2048
    assert audit.restricted > 0, "the masks never restricted anything: nothing was tested"
    assert audit.outside_mask == 0
    assert audit.rule_violations == 0

    # a rollout of the trained model with masks never proposes a masked action
    env = gym.make(MOUNTAINCAR)
    restricted, episodes = 0, 0
    while episodes < 5 and not (restricted >= 3 and episodes >= 1):
        obs, _ = env.reset(seed=100 + episodes)
        done = False
        while not done:
            masks = get_action_masks(env)
            action, _ = model.predict(obs, action_masks=masks, deterministic=False)
            assert masks[int(action)]
            restricted += not masks.all()
            obs, _, terminated, truncated, info = env.step(action)
            gov = info["governance"]
            assert [v for v in gov["violations"] if v["rule"] == rule.name] == []
            assert gov["executed_action"] == gov["proposed_action"]  # nothing replaced
            done = terminated or truncated
        episodes += 1
    assert restricted >= 3


def test_without_masks_the_rate_rule_does_bite() -> None:
    """Control for the shield test: unmasked random play does trigger the rule."""
    rule = duty_cycle_rule()
    env = gym.make(MOUNTAINCAR)
    env.reset(seed=100)
    env.action_space.seed(0)
    hits = 0
    for _ in range(200):
        *_, terminated, truncated, info = env.step(env.action_space.sample())
        hits += any(v["rule"] == rule.name for v in info["governance"]["violations"])
        if terminated or truncated:
            break
    assert hits > 0


def fill_the_window(vec: VecEnv, rule: Any) -> None:
    """Push right ``limit`` times: the window is then full for both push actions."""
    vec.reset()
    for _ in range(rule.params.limit):
        vec.step(np.full(vec.num_envs, 2))


@pytest.mark.parametrize("env_id", [MOUNTAINCAR, f"govgym:{MOUNTAINCAR}"])
def test_get_action_masks_through_dummy_vec_env(env_id: str) -> None:
    rule = duty_cycle_rule()
    assert set(rule.params.values) == {0, 2}  # pushes left and right count, no-push does not
    vec = DummyVecEnv([lambda: gym.make(env_id)])
    assert "TimeLimit" in str(vec.envs[0])  # masks reach through the wrappers gym.make adds
    masks = get_action_masks(vec)
    assert masks.shape == (1, 3) and masks.dtype == bool and masks.all()
    fill_the_window(vec, rule)
    np.testing.assert_array_equal(get_action_masks(vec), [[False, True, False]])
    vec.close()


# -- SubprocVecEnv builds governed envs by id -----------------------------------------------


def spec_factory(env_id: str) -> Callable[[], gym.Env]:
    return functools.partial(gym.make, gym.spec(env_id))


SUBPROC_FORMS = {
    # a forkserver (or spawn) worker has not imported govgym, so a bare id is unknown
    # there; "govgym:<id>" makes gym.make import govgym first
    "govgym-prefix-forkserver": (f"govgym:{CARTPOLE}", "forkserver"),
    # the env spec names its entry point, so it needs no registry in the worker
    "env-spec-forkserver": (spec_factory(CARTPOLE), "forkserver"),
    # a forked worker inherits the registry, so the bare id works there
    "bare-id-fork": (CARTPOLE, "fork"),
}


@pytest.mark.parametrize("form", list(SUBPROC_FORMS))
def test_subproc_vec_env_builds_governed_envs_by_id(form: str) -> None:
    env_id, start_method = SUBPROC_FORMS[form]
    subproc = make_vec_env(env_id, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                           vec_env_kwargs={"start_method": start_method})
    local = make_vec_env(env_id, n_envs=2, seed=0, vec_env_cls=DummyVecEnv)
    try:
        assert [spec.id for spec in subproc.get_attr("spec")] == [CARTPOLE, CARTPOLE]
        np.testing.assert_array_equal(subproc.reset(), local.reset())
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(120):
            actions = rng.integers(0, 2, size=2)
            obs, rewards, dones, infos = subproc.step(actions)
            obs_l, rewards_l, dones_l, infos_l = local.step(actions)
            np.testing.assert_array_equal(obs, obs_l)
            np.testing.assert_array_equal(rewards, rewards_l)
            np.testing.assert_array_equal(dones, dones_l)
            for info, info_l, done in zip(infos, infos_l, dones, strict=True):
                assert isinstance(info["cost"], float) and info["cost"] >= 0.0
                assert info["cost"] == info_l["cost"]
                assert info["governance"] == info_l["governance"]
                assert info["episode_cost"] == info_l["episode_cost"]  # running totals
                if done:
                    ends += 1
                    assert "terminal_observation" in info and "episode" in info
        assert ends >= 4
    finally:
        subproc.close()
        local.close()


def test_subproc_vec_env_gives_action_masks_for_maskable_ppo() -> None:
    rule = duty_cycle_rule()
    vec = make_vec_env(f"govgym:{MOUNTAINCAR}", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                       vec_env_kwargs={"start_method": "forkserver"})
    try:
        assert is_masking_supported(vec)
        masks = get_action_masks(vec)
        assert masks.shape == (2, 3) and masks.all()
        fill_the_window(vec, rule)
        np.testing.assert_array_equal(get_action_masks(vec), [[False, True, False]] * 2)
        model = MaskablePPO("MlpPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                            device="cpu")
        model.learn(total_timesteps=128)
        assert model.num_timesteps >= 128
    finally:
        vec.close()
