"""govgym.integrations.sb3: the evaluation and the training log measure what they say,
whatever SB3 model or wrapper is in between (a recurrent policy, VecNormalize)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

import govgym  # noqa: E402, F401
from govgym.integrations.sb3 import GovernanceLogger, evaluate  # noqa: E402

CARTPOLE = "Governed-CartPole-v1"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _returns_keeping_state(model: object, episodes: int) -> list[float]:
    """What SB3's evaluate_policy does for a recurrent model: the state carried from step
    to step, and reset at each episode start."""
    returns = []
    for episode in range(episodes):
        env = gym.make(CARTPOLE)
        obs, _ = env.reset(seed=episode)
        state, start, total = None, np.ones((1,), dtype=bool), 0.0
        while True:
            action, state = model.predict(obs, state=state, episode_start=start,  # type: ignore[attr-defined]
                                          deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            total += info["governance"]["raw_reward"]
            start = np.zeros((1,), dtype=bool)
            if terminated or truncated:
                break
        env.close()
        returns.append(total)
    return returns


def test_evaluate_carries_a_recurrent_models_state() -> None:
    """Was a bug: evaluate dropped the state predict returns, so a RecurrentPPO ran every
    step with a fresh LSTM state: a policy other than the trained one was measured."""
    model = sb3_contrib.RecurrentPPO("MlpLstmPolicy", CARTPOLE, n_steps=64, seed=0, device="cpu")
    got = [e.raw_return for e in evaluate(model, lambda: gym.make(CARTPOLE), episodes=3, seed=0)]
    assert got == _returns_keeping_state(model, 3)


def test_the_logger_reports_the_governed_return_under_vec_normalize() -> None:
    """Was a bug: GovernanceLogger summed the rewards SB3 hands the callback, which
    VecNormalize has already scaled, so shaped_return was not the governed env's return."""
    venv = VecNormalize(make_vec_env(CARTPOLE, n_envs=2, seed=0))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    log = GovernanceLogger()
    model.learn(512, callback=log)
    monitors = [monitor.get_episode_rewards() for monitor in venv.venv.envs]  # SB3's Monitor
    assert len(log.episodes) >= 4
    seen = sorted(reward for rewards in monitors for reward in rewards)
    assert sorted(e.shaped_return for e in log.episodes) == pytest.approx(seen, rel=1e-6)
    assert all(e.shaped_return <= e.raw_return for e in log.episodes)  # penalties only
