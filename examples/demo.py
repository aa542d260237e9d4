"""Governed vs ungoverned PPO on a real database (what ``make demo`` runs).

Two Stable-Baselines3 PPO agents learn the SQL world's questions and maintenance jobs
(``Governed-SQL-v0``, discrete mode) with the same network, budget and seed:

- governed: every statement passes the ``sql-guarded-writes`` policy before it runs and
  the same policy is enforced inside SQLite;
- ungoverned: the same world with the policy only counting (``intervention="monitor"``)
  and no guard in the engine.

Each maintenance job has a destructive shortcut that also passes the job's own check
(``DELETE FROM orders`` leaves no pending order). The table shows what each agent does
on the tasks it trained on, measured by the task check, the policy's meter (violations
attempted and executed) and the world's own damage record (rows deleted, changed outside
the job, written wrong or left referring to a deleted row; personal data returned;
tables dropped), and what the governed agent proposes with its shield off. A
plot of training, the governed agent's audit log and the numbers go to ``--out``
(default ``runs/demo``).

    python examples/demo.py                 # the full run, a few minutes on 2 cores
    python examples/demo.py --timesteps 4096 --no-progress   # a smoke test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import train_sql  # examples/train_sql.py: training and honest evaluation helpers

from govgym.audit import read, summarize
from govgym.worlds.sql import TASK_LEVELS

DEFAULT_TIMESTEPS = train_sql.RECOMMENDED_TIMESTEPS  # other seeds: benchmarks/sql_seeds.py


def _plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for agent, result in results.items():
        rows = result["training"]
        if not rows:
            continue
        steps = np.array([r["timestep"] for r in rows])
        for ax, key in zip(axes, ("success", "damage_rows"), strict=True):
            values = np.array([float(r[key]) for r in rows])
            window = max(1, min(200, len(values) // 10))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, label=agent)
    axes[0].set(title="task success per training episode", xlabel="timestep", ylim=(0, 1.05))
    axes[1].set(title="damage rows per training episode (world-measured)", xlabel="timestep")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=DEFAULT_TIMESTEPS)
    parser.add_argument("--seed", type=int, default=train_sql.DEFAULT_SEED)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = train_sql.run(args.timesteps, TASK_LEVELS, seed=args.seed, progress=not args.no_progress)

    audit_path = out / "audit.jsonl"
    audit_path.unlink(missing_ok=True)
    train_sql.evaluate_sql(results["governed"]["model"], governed=True, levels=TASK_LEVELS,
                           audit_path=str(audit_path), run_id="demo-eval")
    plot_path = out / "sql.png"
    _plot(results, plot_path)
    plain = {agent: {k: v for k, v in r.items() if k != "model"} for agent, r in results.items()}
    (out / "results.json").write_text(json.dumps(plain, indent=1, default=str))

    print()
    print(f"PPO on Governed-SQL-v0 (discrete), {args.timesteps} training steps each, seed "
          f"{args.seed}; evaluated deterministically once on each of the world's tasks (the "
          "tasks they trained on)")
    print(train_sql.format_table(results))
    for agent, result in results.items():
        if result["failed_tasks"]:
            print(f"{agent} failed: {', '.join(result['failed_tasks'])}")
    log = read(audit_path)
    audit = summarize(log.records)
    print()
    print(f"audit log: {audit_path} ({audit['decisions']} governed decisions in evaluation, "
          f"chain {log.state}; `govgym audit summary {audit_path}`)")
    print(f"plot:      {plot_path}")
    print(f"numbers:   {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
