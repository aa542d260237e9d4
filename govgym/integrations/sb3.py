"""Stable-Baselines3 helpers: train on a governed env, log governance, evaluate honestly.

Needs the ``sb3`` extra (stable-baselines3, sb3-contrib, torch); imported only here.

- :class:`GovernanceLogger` is a callback that keeps one row per finished training
  episode (raw world return, shaped return, cost, violations, ended by policy) and logs
  ``governance/ep_cost_mean`` and friends to SB3's logger.
- :func:`evaluate` runs a trained model and reports the same measures, so a governed
  and an ungoverned agent are compared with one meter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["EpisodeStats", "GovernanceLogger", "evaluate", "summarize_episodes"]


@dataclass
class EpisodeStats:
    """One finished episode, measured on the world's own reward and the policy's cost."""

    timestep: int
    raw_return: float
    shaped_return: float
    length: int
    cost: float
    violations: int
    executed_violations: int
    critical_violations: int
    ended_by_policy: bool


class _Accumulator:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.raw = self.shaped = self.cost = 0.0
        self.length = self.violations = self.executed = self.critical = 0

    def add(self, reward: float, info: dict[str, Any]) -> None:
        """``reward`` is the env's (unnormalised); a governed env's own figures win, so
        a reward wrapper outside it changes neither return."""
        governance = info.get("governance", {})
        raw = governance.get("raw_reward")
        if raw is None:
            self.raw += float(reward)
            self.shaped += float(reward)
        else:
            self.raw += float(raw)
            self.shaped += float(raw) + float(governance.get("reward_delta", 0.0))
        self.cost += float(info.get("cost", 0.0))
        self.length += 1
        for v in governance.get("violations", ()):
            self.violations += 1
            self.executed += bool(v.get("executed"))
            self.critical += v.get("severity") == "critical"

    def finish(self, timestep: int, info: dict[str, Any]) -> EpisodeStats:
        ended = bool(info.get("governance", {}).get("terminated_by_policy", False))
        stats = EpisodeStats(timestep, self.raw, self.shaped, self.length, self.cost,
                             self.violations, self.executed, self.critical, ended)
        self.reset()
        return stats


class GovernanceLogger(BaseCallback):
    """Record every finished training episode of a governed (or monitored) env."""

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.episodes: list[EpisodeStats] = []
        self._acc: list[_Accumulator] = []

    def _on_training_start(self) -> None:
        # learn(..., reset_num_timesteps=False) goes on with the episodes in progress (SB3
        # does not reset the env): keep their running totals; a fresh learn() resets it
        fresh = self.locals.get("reset_num_timesteps", True)
        if fresh or len(self._acc) != self.training_env.num_envs:
            self._acc = [_Accumulator() for _ in range(self.training_env.num_envs)]

    def _on_step(self) -> bool:
        normalizer = self.model.get_vec_normalize_env()
        # VecNormalize has scaled the rewards SB3 hands the callback: its originals
        rewards = self.locals["rewards"] if normalizer is None else normalizer.get_original_reward()
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"], strict=True)):
            self._acc[i].add(float(rewards[i]), info)
            if done:
                self.episodes.append(self._acc[i].finish(self.num_timesteps, info))
        return True

    def _on_rollout_end(self) -> None:
        recent = self.episodes[-20:]
        if recent:
            self.logger.record("governance/ep_raw_return_mean", np.mean([e.raw_return for e in recent]))
            self.logger.record("governance/ep_cost_mean", np.mean([e.cost for e in recent]))
            self.logger.record("governance/ep_executed_violations_mean",
                               np.mean([e.executed_violations for e in recent]))


def evaluate(model: Any, make_env: Callable[[], gym.Env], episodes: int = 20, seed: int = 0,
             deterministic: bool = True, use_masks: bool = False) -> list[EpisodeStats]:
    """Run ``model`` for ``episodes`` episodes on fresh seeds ``seed, seed+1, ...``.

    ``model`` is any SB3 model (``predict(obs, state, episode_start, deterministic)``):
    a recurrent one keeps its state through each episode. ``use_masks`` passes the env's
    ``action_masks()`` (MaskablePPO)."""
    env = make_env()
    results = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            acc = _Accumulator()
            # a recurrent model's state (RecurrentPPO's LSTM), carried from step to step
            # and reset at the episode's start, as SB3's evaluate_policy does
            state, start = None, np.ones((1,), dtype=bool)
            while True:
                kwargs = {}
                if use_masks:
                    kwargs["action_masks"] = env.get_wrapper_attr("action_masks")()
                action, state = model.predict(obs, state=state, episode_start=start,
                                              deterministic=deterministic, **kwargs)
                start = np.zeros((1,), dtype=bool)
                obs, reward, terminated, truncated, info = env.step(action)
                acc.add(float(reward), info)
                if terminated or truncated:
                    results.append(acc.finish(episode, info))
                    break
    finally:
        env.close()
    return results


def summarize_episodes(episodes: list[EpisodeStats]) -> dict[str, float]:
    """Means over episodes, plus totals of executed violations and policy endings."""
    if not episodes:
        return {"episodes": 0}
    rows = [asdict(e) for e in episodes]
    mean = {k: float(np.mean([r[k] for r in rows]))
            for k in ("raw_return", "shaped_return", "length", "cost", "violations",
                      "executed_violations", "critical_violations")}
    return {
        "episodes": len(rows),
        **{f"mean_{k}": v for k, v in mean.items()},
        "total_executed_violations": int(sum(r["executed_violations"] for r in rows)),
        "ended_by_policy": int(sum(r["ended_by_policy"] for r in rows)),
    }
