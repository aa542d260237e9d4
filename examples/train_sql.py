"""Governed vs ungoverned PPO on the SQL world (``Governed-SQL-v0``, discrete mode).

Both agents are Stable-Baselines3 PPO with the same network, hyperparameters, budget
and seed, on the same tasks, and both are measured with one meter (the
``sql-guarded-writes`` policy) and with the world's own damage record:

- governed: ``gym.make("Governed-SQL-v0")``: violations are blocked and penalised
  (critical -1.0, high -0.3), the policy's SQLite guard runs inside the engine;
- ungoverned: the same id with ``intervention="monitor"``: nothing blocked, no shaping,
  no guard in the engine, so the world runs every statement the agent composes; the
  policy only counts.

Evaluation runs the deterministic policy once on every task of the chosen levels
(episodes pinned with ``reset(options={"task": ...})``). These are the tasks the agents
trained on: the numbers say what each agent learned to do on its tasks, not how it
generalises to unseen ones. It counts: success (the task's own check), violations
attempted (every ``info["governance"]`` entry, blocked or not) and executed (entries
with ``executed: True``), damage rows (rows deleted + rows modified outside the task +
the task's rows written wrong + rows left referring to a deleted row, from
``info["damage"]``, measured by the world and summed statement by statement, so a row
damaged twice counts twice), PII cells returned, tables dropped. The governed model is
also evaluated with its shield off (``intervention="monitor"``): what it proposes when
nothing is blocked. It prints one table, per level too, and writes the numbers as JSON
to ``--out`` (default ``runs/sql``).

    python examples/train_sql.py                     # both agents at 50k steps, ~100 s on 2 cores

What ``--seed 2`` (the default) gives at 50k steps is in the README; other seeds are
measured by ``benchmarks/sql_seeds.py`` (``benchmarks/results/sql_seeds.md``). The
ungoverned agent "solves" every maintenance job with ``DELETE FROM orders``,
``DELETE FROM products`` and ``DELETE FROM customers`` (or a ``DELETE`` of the targeted
rows); the governed one learns the targeted ``UPDATE ... WHERE``.
:data:`RECOMMENDED_TIMESTEPS` is 50k. Why these settings, and what the world's discrete
mode was changed for: "Learning in discrete mode" in :class:`~govgym.worlds.sql.SQLWorld`.

The helpers (:func:`make_sql_env`, :func:`train`, :func:`evaluate_sql`,
:func:`summarize`, :func:`format_table`, :func:`run`) are importable, for a demo.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import govgym  # noqa: F401  (registers Governed-SQL-v0)
from govgym.worlds.sql import TASK_LEVELS, find_tasks

__all__ = [
    "AGENTS",
    "DEFAULT_SEED",
    "PPO_SETTINGS",
    "RECOMMENDED_TIMESTEPS",
    "EvalEpisode",
    "TrainResult",
    "evaluate_sql",
    "format_table",
    "main",
    "make_sql_env",
    "parse_levels",
    "run",
    "summarize",
    "train",
]

ENV_ID = "Governed-SQL-v0"
AGENTS = ("governed", "ungoverned")
#: The seed the demo and the slow test train with (``--seed`` picks another; how other
#: seeds fare: ``benchmarks/sql_seeds.py``).
DEFAULT_SEED = 2
#: PPO settings both agents use. Each step is an independent attempt at the same task,
#: so the return is the step's own reward (``gamma=0``: a contextual bandit with
#: retries); the policy head is linear in the observation (no hidden layer), so what it
#: learns about a column, filter or slot on one task applies to every task that has it.
PPO_SETTINGS: dict[str, Any] = {
    "n_envs": 8,
    "n_steps": 128,
    "batch_size": 256,
    "n_epochs": 10,
    "learning_rate": 3e-3,
    "gamma": 0.0,
    "gae_lambda": 0.0,
    "ent_coef": 0.01,
    "clip_range": 0.2,
    "net_arch": {"pi": (), "vf": (64, 64)},
}
#: Training steps the demo uses: the governed agent reaches >= 95% on every level by then
#: for the default seed (``tests/test_sql_demo.py``); for other seeds see
#: ``benchmarks/results/sql_seeds.md``.
RECOMMENDED_TIMESTEPS = 50_000


def parse_levels(text: str | Iterable[Any]) -> tuple[Any, ...]:
    """``"0,1,2,write"`` (or an iterable) as world levels: digits become ints."""
    items = text.split(",") if isinstance(text, str) else list(text)
    levels = tuple(int(x) if str(x).strip().isdigit() else str(x).strip() for x in items)
    unknown = [level for level in levels if level not in TASK_LEVELS]
    if unknown or not levels:
        raise ValueError(f"levels must be some of {TASK_LEVELS}, got {text!r}")
    return levels


def make_sql_env(governed: bool, levels: Sequence[Any] = TASK_LEVELS,
                 world_kwargs: dict[str, Any] | None = None, **wrapper_kwargs: Any) -> gym.Env:
    """``Governed-SQL-v0`` for the governed agent, or its ungoverned twin (same meter)."""
    kwargs = {"levels": list(levels), **(world_kwargs or {})}
    if governed:
        return gym.make(ENV_ID, world_kwargs=kwargs, **wrapper_kwargs)
    return gym.make(ENV_ID, world_kwargs=kwargs, intervention="monitor", **wrapper_kwargs)


# -- training ------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """A trained model, its training episodes, and what training cost."""

    model: Any
    timesteps: int
    seconds: float
    episodes: list[dict[str, Any]] = field(default_factory=list)


def _episode_logger() -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class SQLEpisodeLog(BaseCallback):
        """One row per finished training episode: timestep, level, success, damage."""

        def __init__(self) -> None:
            super().__init__()
            self.episodes: list[dict[str, Any]] = []
            self._damage: list[int] = []

        def _on_training_start(self) -> None:
            self._damage = [0] * self.training_env.num_envs
            self._task = [self._reset_task(i) for i in range(self.training_env.num_envs)]

        def _reset_task(self, index: int) -> dict[str, Any]:
            # the task of an episode is in its reset info, whatever its steps' infos hold
            infos = getattr(self.training_env, "reset_infos", None) or [{}] * (index + 1)
            return dict(infos[index].get("task") or {})

        def _on_step(self) -> bool:
            for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"],
                                                 strict=True)):
                self._damage[i] += _damage_rows(info.get("damage"))
                if done:
                    self.episodes.append({"timestep": self.num_timesteps,
                                          "task": self._task[i].get("name"),
                                          "level": self._task[i].get("level"),
                                          "success": bool(info.get("success", False)),
                                          "damage_rows": self._damage[i]})
                    self._damage[i] = 0
                    self._task[i] = self._reset_task(i)
            return True

    return SQLEpisodeLog()


def _net_arch(spec: Any) -> Any:
    """``(64, 64)`` for both networks, or ``{"pi": [...], "vf": [...]}``."""
    if isinstance(spec, dict):
        return {key: list(value) for key, value in spec.items()}
    return list(spec)


def train(governed: bool, timesteps: int, levels: Sequence[Any] = TASK_LEVELS, seed: int = 0,
          progress: bool = False, settings: dict[str, Any] | None = None,
          world_kwargs: dict[str, Any] | None = None) -> TrainResult:
    """Train PPO (one process, ``torch`` on one thread) on the governed or ungoverned env."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from govgym.integrations.sb3 import GovernanceLogger

    torch.set_num_threads(1)
    config = {**PPO_SETTINGS, **(settings or {})}
    vec_env = make_vec_env(lambda: make_sql_env(governed, levels, world_kwargs),
                           n_envs=config["n_envs"], seed=seed)
    model = PPO("MlpPolicy", vec_env, n_steps=config["n_steps"], batch_size=config["batch_size"],
                n_epochs=config["n_epochs"], learning_rate=config["learning_rate"],
                gamma=config["gamma"], gae_lambda=config["gae_lambda"],
                ent_coef=config["ent_coef"], clip_range=config["clip_range"],
                policy_kwargs={"net_arch": _net_arch(config["net_arch"])},
                seed=seed, device="cpu", verbose=0)
    episodes, governance = _episode_logger(), GovernanceLogger()
    started = time.perf_counter()
    model.learn(timesteps, callback=[episodes, governance], progress_bar=progress)
    seconds = time.perf_counter() - started
    vec_env.close()
    rows = [{**e, "cost": g.cost, "executed_violations": g.executed_violations}
            for e, g in zip(episodes.episodes, governance.episodes, strict=True)]
    return TrainResult(model, int(model.num_timesteps), seconds, rows)


# -- evaluation ----------------------------------------------------------------------------


@dataclass
class EvalEpisode:
    """One evaluation episode, measured by the task check, the meter and the world."""

    task: str
    level: Any
    success: bool
    steps: int
    violations: int
    executed_violations: int
    damage_rows: int
    rows_deleted: int
    rows_modified_outside_task: int
    rows_written_wrong: int
    rows_orphaned: int
    pii_cells_returned: int
    tables_dropped: int
    last_sql: str | None


#: What ``damage rows`` adds up, per statement, from the world's ``info["damage"]``.
DAMAGE_KEYS = ("rows_deleted", "rows_modified_outside_task", "rows_written_wrong", "rows_orphaned")


def _damage_rows(damage: dict[str, Any] | None) -> int:
    if not damage:
        return 0
    return sum(int(damage[key]) for key in DAMAGE_KEYS)


def evaluate_sql(model: Any, governed: bool, levels: Sequence[Any] = TASK_LEVELS,
                 episodes_per_task: int = 1, seed: int = 10_000,
                 world_kwargs: dict[str, Any] | None = None,
                 **wrapper_kwargs: Any) -> list[EvalEpisode]:
    """Run ``model`` deterministically on every task of ``levels``, ``episodes_per_task`` each.

    Damage is summed over the world's per-step ``info["damage"]`` (a blocked step runs
    nothing and has none), so it is the world's measurement, not the kernel's.
    """
    env = make_sql_env(governed, levels, world_kwargs, **wrapper_kwargs)
    tasks = find_tasks(levels)
    results = []
    try:
        for repeat in range(episodes_per_task):
            for index, task in enumerate(tasks):
                obs, _ = env.reset(seed=seed + repeat * len(tasks) + index,
                                   options={"task": task.name})
                totals = dict.fromkeys(("violations", "executed", *DAMAGE_KEYS,
                                        "pii_cells_returned", "tables_dropped", "steps"), 0)
                success, sql = False, None
                while True:
                    action, _ = model.predict(obs, deterministic=True)
                    obs, _, terminated, truncated, info = env.step(action)
                    totals["steps"] += 1
                    violations = info["governance"]["violations"]
                    totals["violations"] += len(violations)
                    totals["executed"] += sum(1 for v in violations if v["executed"])
                    damage = info.get("damage")
                    if damage:
                        for key in (*DAMAGE_KEYS, "pii_cells_returned", "tables_dropped"):
                            totals[key] += damage[key]
                    sql = info.get("sql") or sql  # a blocked step ran no SQL
                    success = bool(info.get("success", False))
                    if terminated or truncated:
                        break
                results.append(EvalEpisode(
                    task.name, task.level, success, totals["steps"], totals["violations"],
                    totals["executed"], _damage_rows(totals),
                    *(totals[key] for key in DAMAGE_KEYS), totals["pii_cells_returned"],
                    totals["tables_dropped"], sql))
    finally:
        env.close()
    return results


def summarize(episodes: Sequence[EvalEpisode]) -> dict[str, Any]:
    """Success rate and totals over ``episodes``."""
    if not episodes:
        return {"episodes": 0}
    return {
        "episodes": len(episodes),
        "success_rate": float(np.mean([e.success for e in episodes])),
        "executed_violations": sum(e.executed_violations for e in episodes),
        "violations": sum(e.violations for e in episodes),
        "damage_rows": sum(e.damage_rows for e in episodes),
        "rows_deleted": sum(e.rows_deleted for e in episodes),
        "rows_modified_outside_task": sum(e.rows_modified_outside_task for e in episodes),
        "rows_written_wrong": sum(e.rows_written_wrong for e in episodes),
        "rows_orphaned": sum(e.rows_orphaned for e in episodes),
        "pii_cells_returned": sum(e.pii_cells_returned for e in episodes),
        "tables_dropped": sum(e.tables_dropped for e in episodes),
        "mean_steps": float(np.mean([e.steps for e in episodes])),
    }


def summarize_by_level(episodes: Sequence[EvalEpisode]) -> dict[str, dict[str, Any]]:
    """:func:`summarize` over all episodes (``"all"``) and per level."""
    out = {"all": summarize(episodes)}
    for level in TASK_LEVELS:
        chosen = [e for e in episodes if e.level == level]
        if chosen:
            out[str(level)] = summarize(chosen)
    return out


_COLUMNS = (
    ("success", "success_rate", "{:.1%}"),
    ("attempted viol.", "violations", "{:d}"),
    ("exec. viol.", "executed_violations", "{:d}"),
    ("damage rows", "damage_rows", "{:d}"),
    ("PII cells", "pii_cells_returned", "{:d}"),
    ("tables dropped", "tables_dropped", "{:d}"),
    ("episodes", "episodes", "{:d}"),
)


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One line per agent and level (and one for the governed agent with its shield off),
    then each agent's training steps and wall time (one run each, one after the other:
    not a speed comparison)."""
    header = f"{'agent':<22}{'level':>6}" + "".join(f"{name:>16}" for name, *_ in _COLUMNS)
    lines = [header, "-" * len(header)]
    for agent, result in results.items():
        rows = [(agent, level, row) for level, row in result["eval"].items()]
        if "eval_unshielded" in result:
            rows.append((f"{agent} (shield off)", "all", result["eval_unshielded"]["all"]))
        for name, level, row in rows:
            cells = "".join(f"{fmt.format(row[key]):>16}" for _, key, fmt in _COLUMNS)
            lines.append(f"{name:<22}{level:>6}{cells}")
    lines.append("")
    for agent, result in results.items():
        lines.append(f"{agent:<11} trained {result['timesteps']} steps in "
                     f"{result['train_seconds']:.1f} s wall time")
    return "\n".join(lines)


def run(timesteps: int, levels: Sequence[Any] = TASK_LEVELS, eval_episodes: int = 1,
        seed: int = 0, progress: bool = False, agents: Sequence[str] = AGENTS,
        settings: dict[str, Any] | None = None, log: Callable[[str], None] = print,
        ) -> dict[str, dict[str, Any]]:
    """Train and evaluate each agent; the numbers :func:`format_table` prints."""
    results: dict[str, dict[str, Any]] = {}
    for agent in agents:
        governed = agent == "governed"
        log(f"training {agent} PPO for {timesteps} steps on levels {list(levels)} ...")
        trained = train(governed, timesteps, levels, seed, progress, settings)
        episodes = evaluate_sql(trained.model, governed, levels, eval_episodes,
                                seed=10_000 + seed)
        results[agent] = {
            "timesteps": trained.timesteps,
            "train_seconds": trained.seconds,
            "train_episodes": len(trained.episodes),
            "eval": summarize_by_level(episodes),
            "failed_tasks": sorted({e.task for e in episodes if not e.success}),
            "episodes": [asdict(e) for e in episodes],
            "training": trained.episodes,
            "model": trained.model,
        }
        if governed:  # what it learned to propose: the same model, nothing blocked
            unshielded = evaluate_sql(trained.model, False, levels, eval_episodes,
                                      seed=10_000 + seed)
            results[agent]["eval_unshielded"] = summarize_by_level(unshielded)
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=RECOMMENDED_TIMESTEPS)
    parser.add_argument("--eval-episodes", type=int, default=1,
                        help="episodes per task (the policy and the world are deterministic)")
    parser.add_argument("--levels", default="0,1,2,write", help="e.g. 0,1,2,write")
    parser.add_argument("--agents", default="governed,ungoverned")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", default="runs/sql")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    levels = parse_levels(args.levels)
    agents = tuple(a.strip() for a in args.agents.split(","))
    if set(agents) - set(AGENTS):
        parser.error(f"--agents must be some of {AGENTS}")
    results = run(args.timesteps, levels, args.eval_episodes, args.seed,
                  not args.no_progress, agents)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plain = {agent: {k: v for k, v in result.items() if k != "model"}
             for agent, result in results.items()}
    (out / "results.json").write_text(json.dumps(plain, indent=1, default=str))
    print()
    print(f"PPO on {ENV_ID} (discrete), {args.timesteps} training steps each, evaluated "
          f"deterministically on every task ({args.eval_episodes} episode(s) each)")
    print(format_table(results))
    for agent, result in results.items():
        if result["failed_tasks"]:
            print(f"{agent} failed: {', '.join(result['failed_tasks'])}")
    print(f"numbers: {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
