"""Governed vs ungoverned PPO on CartPole.

Both agents are trained with Stable-Baselines3 PPO for the same budget and measured with
the same meter, the ``cartpole-envelope`` policy:

- governed: ``gym.make("Governed-CartPole-v1")``: the policy penalises leaving the
  envelope (|x| <= 0.25, |angle| <= 0.05) and ends the episode past |x| > 1.0;
- ungoverned: plain ``CartPole-v1`` under ``intervention="monitor"``: the policy only
  counts violations (nothing is blocked, the reward is the world's own).

It prints one table (world return, episode cost, executed violations, critical
violations, episodes ended by policy), and writes a plot, the evaluation audit log and
the numbers as JSON to ``--out`` (default ``runs/cartpole``).

    python examples/cartpole_demo.py --timesteps 60000
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

import govgym
from govgym.audit import read, summarize


def _train(make_env: Callable[[], gym.Env], timesteps: int, seed: int, progress: bool):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from govgym.integrations.sb3 import GovernanceLogger

    torch.set_num_threads(1)
    vec_env = make_vec_env(make_env, n_envs=4, seed=seed)
    model = PPO("MlpPolicy", vec_env, n_steps=256, batch_size=256, n_epochs=10, gamma=0.98,
                gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0, seed=seed, device="cpu",
                verbose=0)
    logger = GovernanceLogger()
    started = time.perf_counter()
    model.learn(timesteps, callback=logger, progress_bar=progress)
    seconds = time.perf_counter() - started
    vec_env.close()
    return model, logger.episodes, seconds


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, episodes in curves.items():
        if not episodes:
            continue
        steps = np.array([e.timestep for e in episodes])
        for ax, key in zip(axes, ("raw_return", "cost"), strict=True):
            values = np.array([getattr(e, key) for e in episodes], dtype=float)
            window = max(1, min(20, len(values) // 5))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, label=name)
    axes[0].set(title="world return per episode", xlabel="timestep")
    axes[1].set(title="constraint cost per episode", xlabel="timestep")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(rows: dict[str, dict]) -> str:
    cols = [("world return", "mean_raw_return", "{:.1f}"), ("episode cost", "mean_cost", "{:.2f}"),
            ("executed viol./ep", "mean_executed_violations", "{:.2f}"),
            ("critical viol./ep", "mean_critical_violations", "{:.2f}"),
            ("ended by policy", "ended_by_policy", "{:d}"), ("train s", "train_seconds", "{:.0f}")]
    header = f"{'agent':<12}" + "".join(f"{c[0]:>19}" for c in cols)
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{c[2].format(row[c[1]]):>19}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=60_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/cartpole")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    from govgym.integrations.sb3 import evaluate, summarize_episodes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    audit_path = out / "audit.jsonl"
    audit_path.unlink(missing_ok=True)
    agents = {
        "ungoverned": (
            lambda: govgym.make("CartPole-v1", policy="cartpole-envelope", intervention="monitor"),
            lambda: govgym.make("CartPole-v1", policy="cartpole-envelope", intervention="monitor"),
        ),
        "governed": (
            lambda: gym.make("Governed-CartPole-v1"),
            lambda: gym.make("Governed-CartPole-v1", audit_path=str(audit_path), run_id="demo-eval"),
        ),
    }
    rows, curves = {}, {}
    for name, (make_train, make_eval) in agents.items():
        print(f"training {name} PPO for {args.timesteps} steps ...", flush=True)
        model, episodes, seconds = _train(make_train, args.timesteps, args.seed, not args.no_progress)
        results = evaluate(model, make_eval, episodes=args.eval_episodes, seed=10_000 + args.seed)
        rows[name] = {**summarize_episodes(results), "train_seconds": seconds,
                      "train_episodes": len(episodes)}
        curves[name] = episodes

    plot_path = out / "cartpole.png"
    _plot(curves, plot_path)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    log = read(audit_path)
    print()
    print(f"PPO on CartPole, {args.timesteps} training steps each, evaluated on "
          f"{args.eval_episodes} episodes (policy: cartpole-envelope)")
    print(_table(rows))
    print()
    audit = summarize(log.records)
    print(f"audit log: {audit_path} ({audit['decisions']} decisions, chain "
          f"{log.state})")
    print(f"plot:      {plot_path}")
    print(f"numbers:   {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    main()
