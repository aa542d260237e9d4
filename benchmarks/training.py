"""What governance costs a training run: SB3 PPO on CartPole-v1, raw against governed.

The step benchmark (``overhead.py``) times the env alone, on a world as cheap as
CartPole (a few microseconds a step), where any wrapper is a large ratio. A learner
pays for its own forward passes and updates too; this script measures the ratio a user
sees in training, side by side in one run:

- ``raw``: PPO on ``gym.make("CartPole-v1")``
- ``governed_empty``: PPO on ``GovernedEnv(..., policy=None)``
- ``governed_bounds_recorder``: PPO on ``GovernedEnv(..., policy="cartpole-envelope")``
  with the audit recorder writing to a temporary folder (the step benchmark's variant)

Each run builds a fresh ``PPO("MlpPolicy", env, seed=0, device="cpu")`` (SB3's defaults
but ``n_steps=512``, ``batch_size=64``, ``n_epochs=4``: four updates per run) and times
``learn(total_timesteps)``, rollouts and updates together; building the model is outside
the timing. torch runs on one thread, so repeats are comparable. Each repeat runs every
variant once, in an order rotated by one per repeat; the headline is the median over
repeats and the ratio of medians (the median of per-repeat ratios is reported as a
check). The governed runs learn under a different reward (shaping) and episode end
(the critical bound), so their trajectories differ from the raw run's after the first
update: the ratio is the throughput of training under governance, not of identical work.

Run: ``python benchmarks/training.py`` (about half a minute; ``--quick`` for a smoke test).
Needs the ``sb3`` extra.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
from _common import (
    base_parser,
    environment,
    environment_markdown,
    fmt_ns,
    markdown_table,
    publish,
    quick_banner,
    rotated,
    stats,
)

from govgym import GovernedEnv

ENV_ID = "CartPole-v1"
POLICY = "cartpole-envelope"
PPO_KWARGS: dict[str, Any] = {"n_steps": 512, "batch_size": 64, "n_epochs": 4, "seed": 0,
                              "device": "cpu", "verbose": 0}
VARIANTS: dict[str, str] = {
    "raw": f'PPO on gym.make("{ENV_ID}")',
    "governed_empty": "PPO on GovernedEnv(raw, policy=None)",
    "governed_bounds_recorder": f'PPO on GovernedEnv(raw, policy="{POLICY}", audit_path=<tmp>)',
}
FULL = {"repeats": 7, "timesteps": 2048}
QUICK = {"repeats": 1, "timesteps": 512}


def make_env(name: str, audit_dir: Path) -> gym.Env:
    world = gym.make(ENV_ID)
    if name == "raw":
        return world
    if name == "governed_empty":
        return GovernedEnv(world, policy=None)
    if name == "governed_bounds_recorder":
        return GovernedEnv(world, policy=POLICY, audit_path=audit_dir / "audit-{run}.jsonl")
    raise ValueError(f"unknown variant {name!r}")


def timed_learn(name: str, timesteps: int, audit_dir: Path) -> tuple[float, int]:
    """(seconds of ``learn``, episodes finished) for one fresh PPO on variant ``name``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(make_env(name, audit_dir))
    model = PPO("MlpPolicy", env, **PPO_KWARGS)
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    seconds = time.perf_counter() - start
    episodes = len(env.get_episode_lengths())
    env.close()
    return seconds, episodes


def run(params: dict[str, int], audit_root: Path) -> dict[str, Any]:
    names = list(VARIANTS)
    samples: dict[str, list[float]] = {n: [] for n in names}
    episodes: dict[str, list[int]] = {n: [] for n in names}
    timed_learn("raw", PPO_KWARGS["n_steps"], audit_root)  # warm-up: torch's first calls
    for repeat in range(params["repeats"]):
        for name in rotated(names, repeat):
            seconds, ended = timed_learn(name, params["timesteps"], audit_root / f"r{repeat}")
            samples[name].append(seconds)
            episodes[name].append(ended)
    raw = statistics.median(samples["raw"])
    variants = {}
    for name in names:
        s = stats(samples[name])
        paired = [v / r for v, r in zip(samples[name], samples["raw"], strict=True)]
        variants[name] = {
            "what": VARIANTS[name],
            "seconds": s,
            "ns_per_timestep": s["median"] / params["timesteps"] * 1e9,
            "timesteps_per_s": params["timesteps"] / s["median"],
            "ratio_to_raw": s["median"] / raw,
            "ratio_to_raw_paired_median": statistics.median(paired),
            "overhead_ns_per_timestep": (s["median"] - raw) / params["timesteps"] * 1e9,
            "episodes_per_run": episodes[name],
            "samples_s": [round(x, 4) for x in samples[name]],
        }
    return {"variants": variants}


def to_markdown(data: dict[str, Any]) -> str:
    p = data["parameters"]
    rows = []
    for name, v in data["result"]["variants"].items():
        s = v["seconds"]
        rows.append([f"`{name}`", v["what"].replace("|", "\\|"), f"{s['median']:.3f} s",
                     f"{s['q1']:.3f} - {s['q3']:.3f} s", f"{v['timesteps_per_s']:,.0f}",
                     fmt_ns(v["ns_per_timestep"]), f"{v['ratio_to_raw']:.3f}x",
                     f"{v['ratio_to_raw_paired_median']:.3f}x",
                     fmt_ns(v["overhead_ns_per_timestep"]) if name != "raw" else "-"])
    parts = [
        "# govgym in training: SB3 PPO on CartPole-v1, raw against governed",
        quick_banner(data["quick"]),
        environment_markdown(data["environment"]),
        f"Parameters: {p['repeats']} repeats; each run is a fresh PPO (seed 0, n_steps "
        f"{PPO_KWARGS['n_steps']}, batch {PPO_KWARGS['batch_size']}, {PPO_KWARGS['n_epochs']} "
        f"epochs, torch on 1 thread, CPU) timed over `learn({p['timesteps']:,})`, rollouts and "
        f"updates together; variants interleaved in rotated order. Median over repeats; "
        f"ratio = median / median of raw; `paired` = median of per-repeat ratios.",
        markdown_table(["variant", "what", "learn() median", "IQR", "timesteps / s",
                        "per timestep", "ratio", "paired", "overhead / timestep"], rows),
        "No target: this is the ratio a training run pays, for reading the step "
        "benchmark's ratios (`overhead.md`), which time the env alone.",
    ]
    return "\n\n".join(part for part in parts if part)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    params = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        params["repeats"] = args.repeats
    import torch

    torch.set_num_threads(1)
    env_info = environment(extra_packages=("stable-baselines3", "torch"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(params, Path(tmp))
    data: dict[str, Any] = {
        "benchmark": "training",
        "quick": args.quick,
        "environment": env_info,
        "parameters": {**params, "env_id": ENV_ID, "policy": POLICY, "ppo": PPO_KWARGS,
                       "torch_threads": 1},
        "result": result,
        "targets": [],
        "wall_time_s": time.perf_counter() - started,
    }
    publish(args.out, "training", data, to_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
