"""A policy written for another env is refused when the governed env is built, naming
the rule and field, instead of failing closed with a critical rule_error on every step.

Was (a review as a demanding Gymnasium user): govgym.make("MountainCar-v0",
policy="cartpole-envelope") built and passed check_env, then ended every episode at
its first step with rule_error (IndexError)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import GovernedEnv


@pytest.mark.parametrize("world, policy, field", [
    ("MountainCar-v0", "cartpole-envelope", "bounds.1.index"),
    ("CartPole-v1", {"name": "p", "rules": [{"kind": "state_bounds", "bounds": [
        {"key": "position", "index": 0, "high": 1.0}]}]}, "bounds.0.key"),
    ("Pendulum-v1", {"name": "p", "rules": [{"kind": "forbidden_actions", "ranges": [
        {"index": 1, "low": 0.0, "high": 1.0}]}]}, "ranges.0.index"),
    ("CartPole-v1", {"name": "p", "rules": [{"kind": "forbidden_actions",
                                            "dims": {2: [0]}}]}, "dims.2"),
])
def test_a_policy_that_does_not_fit_the_spaces_is_refused(world: str, policy, field: str) -> None:
    with pytest.raises(ValueError, match=rf"does not fit this env: rule .*, field {field}:"):
        govgym.make(world, policy=policy)


def test_a_refused_kernel_leaves_the_env_as_it_was() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), "cartpole-envelope")
    before = env.kernel
    with pytest.raises(ValueError, match="does not fit"):
        env.kernel = govgym.Kernel({"name": "p", "rules": [
            {"kind": "state_bounds", "bounds": [{"index": 7, "high": 1.0}]}]})
    assert env.kernel is before


def test_fitting_policies_still_build_and_run() -> None:
    env = govgym.make("CartPole-v1", policy={"name": "p", "rules": [{"kind": "state_bounds",
                      "bounds": [{"index": -1, "low": -1.0, "high": 1.0}]}]})
    env.reset(seed=0)
    assert np.isfinite(env.step(1)[1])
    for env_id in ("Governed-CartPole-v1", "Governed-Pendulum-v1", "Governed-MountainCar-v0",
                   "Governed-SQL-v0"):
        gym.make(env_id).close()
