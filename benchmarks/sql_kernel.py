"""What the ``sql`` rule costs: decision time against execution time, and the per-step
overhead of ``Governed-SQL-v0``.

Decisions (policy ``sql-guarded-writes``), per statement of a fixed set (short reads, a
join, a grouped and a top-k query, a ``USING`` join, the gold maintenance ``UPDATE``,
and three statements the policy refuses):

- ``uncached``: ``rule.check(proposal)`` right after ``rule.cache_clear()``: the
  Unicode checks, SQLite compiling ``EXPLAIN QUERY PLAN`` in the shadow under the
  recording authorizer, the plan-cost estimate, and (for writes only) the sqlglot
  predicate check. Each sample is one call, timed alone.
- ``cached``: the same call when the decision is in the LRU cache (the steady state of
  a discrete action space), timed over a loop and divided.
- ``kernel_cached``: ``Kernel.decide`` around it (what the wrapper pays per step).

Execution, per statement, on the SQL world's database (a connection deserialized from
the world's snapshot, no guard): ``cold`` prepares every time (``cached_statements=0``,
as the first run of a text in an episode), ``warm`` reuses Python's prepared statement;
writes run inside a savepoint rolled back after the timing. ``world_step`` is
``SQLWorld.step`` (text mode) for the statement: execution plus the world's damage
metering, the realistic denominator.

Steps: ``SQLWorld()`` (discrete, ungoverned) against ``GovernedEnv(SQLWorld(),
"sql-guarded-writes")`` built as the registered ``Governed-SQL-v0`` builds it (kernel,
shaping and the engine guard installed by the rule), stepping the same pre-generated
actions from the same resets:

- ``allowed`` workload (the target): every action is one that runs in full under
  governance (the kernel allows it and the engine does not refuse it), so every variant
  runs the world on every step and does the same work: the pure overhead of governing.
- ``random`` workload: uniformly random actions; the governed env blocks many of them
  and skips the world's work on those steps, so it is usually *faster* than raw.

Steps are timed block by block (10 episodes), every variant on the same block in an
order rotated per block; the headline ratio is the median over blocks of variant / raw.

Run: ``python benchmarks/sql_kernel.py`` (about a minute; ``--quick`` for a smoke test).
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
from _common import (
    base_parser,
    environment,
    environment_markdown,
    fmt_ns,
    markdown_table,
    quick_banner,
    rotated,
    stats,
    write_results,
)

from govgym import GovernedEnv, Kernel, Proposal, load_policy
from govgym.rules.sql import SQL
from govgym.worlds.sql import TASKS, SQLWorld

POLICY = "sql-guarded-writes"
SHAPING = {"penalties": {"low": 0.05, "medium": 0.1, "high": 0.3, "critical": 1.0}, "max_penalty": 1.0}
ACTION_SEED = 12345
READ_TASK = "count_rows:orders"
WRITE_TASK = "cancel_stale_pending:2024-01-01"

#: name -> (statement, task it runs under in the world)
STATEMENTS: dict[str, tuple[str, str]] = {
    "count_filter": ("SELECT COUNT(id) FROM customers WHERE city = 'Oslo'", READ_TASK),
    "group_by": ("SELECT status, COUNT(*) AS n FROM orders GROUP BY 1", READ_TASK),
    "top_k": ("SELECT t.id, t.price FROM products AS t ORDER BY t.price DESC LIMIT 3", READ_TASK),
    "join": ("SELECT COUNT(o.id) FROM orders AS o JOIN customers AS c ON c.id = o.customer_id "
             "WHERE c.city = 'Oslo'", READ_TASK),
    "using_join": ("SELECT COUNT(*) FROM customers JOIN orders USING (id)", READ_TASK),
    "update_gold": ("UPDATE orders SET status = 'cancelled' WHERE status = 'pending' "
                    "AND created_at < '2024-01-01'", WRITE_TASK),
    "pii_refused": ("SELECT email FROM customers WHERE city = 'Oslo'", READ_TASK),
    "drop_refused": ("DROP TABLE orders", READ_TASK),
    "tautology_refused": ("UPDATE orders SET status = 'cancelled' WHERE 1 = 1", READ_TASK),
}
#: The statement the "short statement" decision targets are judged on.
SHORT = "count_filter"


def sql_rule(kernel: Kernel) -> SQL:
    (rule,) = [r for r in kernel.rules if isinstance(r, SQL)]
    return rule


# -- decisions --------------------------------------------------------------------------------


def time_decisions(repeats: int, inner: int) -> dict[str, Any]:
    kernel = Kernel(POLICY)
    ctx = kernel.new_context()
    rule = sql_rule(kernel)
    results: dict[str, Any] = {}
    for name, (sql, _) in STATEMENTS.items():
        proposal = Proposal(sql, {"sql": sql})
        rule.check(proposal, None)  # warm imports (sqlglot for writes)
        uncached: list[float] = []
        for _ in range(repeats):
            for _ in range(inner):
                rule.cache_clear()
                start = time.perf_counter_ns()
                rule.check(proposal, None)
                uncached.append(time.perf_counter_ns() - start)
        rule.check(proposal, None)
        cached, via_kernel = [], []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            for _ in range(inner):
                rule.check(proposal, None)
            cached.append((time.perf_counter_ns() - start) / inner)
            start = time.perf_counter_ns()
            for _ in range(inner):
                kernel.decide(proposal, ctx)
            via_kernel.append((time.perf_counter_ns() - start) / inner)
        codes = [v.code for v in rule.check(proposal, None)]
        results[name] = {"sql": sql, "violations": codes, "uncached_ns": stats(uncached),
                         "cached_ns": stats(cached), "kernel_cached_ns": stats(via_kernel)}
    return results


# -- execution -------------------------------------------------------------------------------


def _execute(conn: sqlite3.Connection, sql: str) -> float:
    conn.execute("SAVEPOINT bench")
    try:
        start = time.perf_counter_ns()
        with contextlib.suppress(sqlite3.Error):  # a refused statement may fail; time it anyway
            conn.execute(sql).fetchall()
        return time.perf_counter_ns() - start
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO bench")
            conn.execute("RELEASE bench")


def time_execution(repeats: int, inner: int) -> dict[str, Any]:
    snapshot = SQLWorld().snapshot
    cold = sqlite3.connect(":memory:", isolation_level=None, cached_statements=0)
    warm = sqlite3.connect(":memory:", isolation_level=None)
    for conn in (cold, warm):
        conn.deserialize(snapshot)
    world = SQLWorld(action_mode="text")
    results: dict[str, Any] = {}
    for name, (sql, task) in STATEMENTS.items():
        samples: dict[str, list[float]] = {"cold_ns": [], "warm_ns": [], "world_step_ns": []}
        for _ in range(repeats):
            for _ in range(inner):
                samples["cold_ns"].append(_execute(cold, sql))
                samples["warm_ns"].append(_execute(warm, sql))
                world.reset(seed=0, options={"task": task})
                start = time.perf_counter_ns()
                world.step(sql)
                samples["world_step_ns"].append(time.perf_counter_ns() - start)
        results[name] = {key: stats(values) for key, values in samples.items()}
    world.close()
    return results


# -- steps -----------------------------------------------------------------------------------


def _episodes(n_episodes: int, allowed_only: bool) -> list[tuple[str, list[np.ndarray]]]:
    """(task, up to 10 actions) per episode, the same for every variant.

    ``allowed_only``: actions that run in full under governance: the kernel allows them
    for the task, and the engine guard does not refuse them in the state the episode's
    earlier actions left (probed on a guarded world replaying the episode). So every
    variant does the same work on every step.
    """
    probe = SQLWorld()
    kernel = Kernel(POLICY)
    sql_rule(kernel).attach(probe)
    ctx = kernel.new_context()
    rng = np.random.default_rng(ACTION_SEED)
    names = [t.name for t in TASKS]
    episodes = []
    for i in range(n_episodes):
        task = names[i % len(names)]
        probe.reset(seed=0, options={"task": task})
        actions: list[np.ndarray] = []
        for _ in range(1000):
            if len(actions) == probe.max_steps:
                break
            action = np.array([rng.integers(n) for n in probe.action_space.nvec], dtype=np.int64)
            if allowed_only:
                if not kernel.decide(Proposal(action, probe.describe(action)), ctx).executes:
                    continue
                *_, terminated, _, info = probe.step(action)
                if info["engine"]["error"] is not None:
                    continue  # refused by the engine (row cap) or failed: not the same work
                actions.append(action)
                if terminated:
                    break
            else:
                actions.append(action)
        episodes.append((task, actions))
    probe.close()
    return episodes


def _run(env: Any, episodes: list[tuple[str, list[np.ndarray]]]) -> tuple[float, float]:
    """Wall-clock and thread-CPU ns per step over ``episodes`` (resets included)."""
    gc.collect()
    steps = 0
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    for task, actions in episodes:
        env.reset(seed=0, options={"task": task})
        for action in actions:
            *_, terminated, truncated, _ = env.step(action)
            steps += 1
            if terminated or truncated:
                break
    return (time.perf_counter_ns() - wall) / steps, (time.thread_time_ns() - cpu) / steps


def _guard_only() -> SQLWorld:
    world = SQLWorld()
    sql_rule(Kernel(POLICY)).attach(world)
    return world


def _without_guard() -> GovernedEnv:
    policy = load_policy(POLICY).to_dict()
    policy["rules"][0]["engine_guard"] = False
    return GovernedEnv(SQLWorld(), policy, shaping=SHAPING)


#: name -> (description, builder); the first is the baseline.
STEP_VARIANTS: dict[str, tuple[str, Callable[[], Any]]] = {
    "raw": ("SQLWorld() (discrete), ungoverned", SQLWorld),
    "guard_only": ("SQLWorld() with the policy's engine guard, no kernel", _guard_only),
    "governed_empty": ("GovernedEnv(SQLWorld(), policy=None): the wrapper and the world's describe(), "
                       "no rules",
                       lambda: GovernedEnv(SQLWorld(), None, shaping=SHAPING)),
    "governed_no_guard": (f"GovernedEnv(SQLWorld(), {POLICY!r}) with engine_guard: false: adds the "
                          "kernel and the sql rule", _without_guard),
    "governed": (f"GovernedEnv(SQLWorld(), {POLICY!r}): kernel and engine guard (Governed-SQL-v0)",
                 lambda: GovernedEnv(SQLWorld(), load_policy(POLICY), shaping=SHAPING)),
}


def time_steps(blocks: int, n_episodes: int, block_size: int) -> dict[str, Any]:
    """Variants interleaved block by block: block ``b`` runs ``block_size`` episodes (a
    window sliding over the episode list) once per variant, in an order rotated per
    block, so that every variant meets the same machine conditions. Ratios are per block
    (variant / raw on the same block); the headline is their median."""
    out: dict[str, Any] = {}
    for workload, allowed_only in (("allowed", True), ("random", False)):
        episodes = _episodes(n_episodes, allowed_only)
        names = list(STEP_VARIANTS) if allowed_only else ["raw", "governed"]
        envs = {name: STEP_VARIANTS[name][1]() for name in names}
        for env in envs.values():
            _run(env, episodes[:5])  # warm-up: caches, imports
        wall: dict[str, list[float]] = {name: [] for name in envs}
        cpu: dict[str, list[float]] = {name: [] for name in envs}
        for block in range(blocks):
            first = (block * block_size) % len(episodes)
            chunk = (episodes + episodes)[first:first + block_size]
            for name in rotated(names, block):
                per_step, per_step_cpu = _run(envs[name], chunk)
                wall[name].append(per_step)
                cpu[name].append(per_step_cpu)
        blocked = _blocked_fraction(envs["governed"], episodes)
        for env in envs.values():
            env.close()
        variants = {}
        for name in names:
            ratios = [v / r for v, r in zip(wall[name], wall["raw"], strict=True)]
            cpu_ratios = [v / r for v, r in zip(cpu[name], cpu["raw"], strict=True)]
            variants[name] = {
                "description": STEP_VARIANTS[name][0],
                "ns_per_step": stats(wall[name]),
                "cpu_ns_per_step": stats(cpu[name]),
                "ratio_to_raw": stats(ratios),
                "cpu_ratio_to_raw": stats(cpu_ratios),
                "ratio_of_totals": sum(wall[name]) / sum(wall["raw"]),
            }
        out[workload] = {"episodes": len(episodes), "governed_steps_blocked": blocked, "variants": variants,
                         "ratio_governed_to_raw": variants["governed"]["ratio_to_raw"]["median"]}
    return out


def time_describe(repeats: int, inner: int) -> dict[str, float | int]:
    """``SQLWorld.describe(action)`` alone: what the wrapper asks the world every step."""
    world = SQLWorld()
    world.reset(seed=0)
    world.action_space.seed(ACTION_SEED)
    actions = [world.action_space.sample() for _ in range(inner)]
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for action in actions:
            world.describe(action)
        samples.append((time.perf_counter_ns() - start) / inner)
    world.close()
    return stats(samples)


def _blocked_fraction(env: GovernedEnv, episodes: list[tuple[str, list[np.ndarray]]]) -> float:
    blocked = total = 0
    for task, actions in episodes:
        env.reset(seed=0, options={"task": task})
        for action in actions:
            *_, terminated, truncated, info = env.step(action)
            total += 1
            blocked += info["governance"]["executed_action"] is None
            if terminated or truncated:
                break
    return blocked / max(total, 1)


# -- report ----------------------------------------------------------------------------------


def targets(decisions: dict[str, Any], steps: dict[str, Any]) -> list[dict[str, Any]]:
    short = decisions[SHORT]
    rows = [
        ("uncached decision, short statement <= 50 us", short["uncached_ns"]["median"] / 1e3, 50.0),
        ("cached decision <= 5 us", short["cached_ns"]["median"] / 1e3, 5.0),
        ("Governed-SQL-v0 step (allowed actions) <= 1.2x ungoverned",
         steps["allowed"]["ratio_governed_to_raw"], 1.2),
    ]
    return [{"target": name, "measured": value, "limit": limit, "met": bool(value <= limit)}
            for name, value, limit in rows]


def to_markdown(data: dict[str, Any]) -> str:
    lines = ["# sql rule: decision time, execution time, step overhead", ""]
    banner = quick_banner(data["quick"])
    if banner:
        lines += [banner, ""]
    lines += [environment_markdown(data["environment"]), ""]
    target_rows = [(t["target"], f"{t['measured']:.3g}", t["limit"], "yes" if t["met"] else "**no**")
                   for t in data["targets"]]
    lines += ["## Targets", "", markdown_table(["target", "measured", "limit", "met"], target_rows), ""]
    lines += ["## Decisions against execution (medians)", "",
              f"Policy `{POLICY}`. Decision: `rule.check`, uncached (cache cleared before each call) and "
              "cached; `kernel` = `Kernel.decide`, cached. Execution: the statement on the world's "
              "database without a guard, `cold` (prepared each time) and `warm` (prepared statement "
              "reused); `world step` = `SQLWorld.step` (execution + damage metering). Ratio = uncached "
              "decision / world step.", ""]
    rows = []
    for name, d in data["decisions"].items():
        e = data["execution"][name]
        unc, world = d["uncached_ns"]["median"], e["world_step_ns"]["median"]
        rows.append((f"`{name}`", ", ".join(d["violations"]) or "-", fmt_ns(unc),
                     fmt_ns(d["cached_ns"]["median"]), fmt_ns(d["kernel_cached_ns"]["median"]),
                     fmt_ns(e["cold_ns"]["median"]), fmt_ns(e["warm_ns"]["median"]), fmt_ns(world),
                     f"{unc / world:.2f}"))
    lines += [markdown_table(["statement", "violations", "uncached", "cached", "kernel", "exec cold",
                              "exec warm", "world step", "ratio"], rows), ""]
    lines += ["Statements:", ""] + [f"- `{n}`: `{d['sql']}`" for n, d in data["decisions"].items()] + [""]
    lines += ["## Steps of Governed-SQL-v0 (discrete)", ""]
    rows = []
    for workload in ("allowed", "random"):
        s = data["steps"][workload]
        for name, v in s["variants"].items():
            ratio = v["ratio_to_raw"]
            rows.append((workload, f"`{name}`", fmt_ns(v["ns_per_step"]["median"]),
                         f"{ratio['median']:.3f} [{ratio['q1']:.3f}, {ratio['q3']:.3f}]",
                         f"{v['ratio_of_totals']:.3f}", f"{v['cpu_ratio_to_raw']['median']:.3f}"))
    lines += [markdown_table(["workload", "variant", "wall / step", "ratio [q1, q3]", "ratio of totals",
                              "CPU ratio"], rows), ""]
    lines += [f"- `{name}`: {desc}" for name, (desc, _) in STEP_VARIANTS.items()]
    blocked = data["steps"]["random"]["governed_steps_blocked"]
    params = data["parameters"]
    lines += ["", f"{params['step_blocks']} blocks of {params['block_episodes']} episodes (up to 10 actions "
              f"each, a window sliding over {params['episodes']} pre-generated episodes); every block runs "
              "each variant once, in an order rotated per block; resets included. `ratio` = median over "
              "blocks of variant / raw on the same block (the target is judged on it; interleaving by "
              "block keeps machine noise out of the pairs), `ratio of totals` = summed time / summed raw "
              "time, `CPU ratio` = the same median on the thread's CPU clock. `allowed`: every action "
              "runs in full under governance (kernel and engine), so every variant does the same work on "
              f"every step (the target). `random`: uniform actions; the governed env blocks {blocked:.0%} "
              "of them and skips the world's work on those steps.",
              "", f"For scale: the world's `describe(action)`, which the wrapper calls on every step, "
              f"takes {fmt_ns(data['steps']['describe_ns']['median'])} per call.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "sql kernel benchmark")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    repeats = args.repeats or (2 if quick else 7)
    params = {"decision_repeats": repeats, "decision_inner": 20 if quick else 300,
              "execution_inner": 5 if quick else 60, "step_blocks": 4 if quick else 80,
              "block_episodes": 5 if quick else 10, "episodes": 10 if quick else 150, "policy": POLICY}
    env = environment()
    env["packages"]["sqlglot"] = _version("sqlglot")
    env["packages"]["pydantic"] = _version("pydantic")
    env["sqlite"] = sqlite3.sqlite_version
    decisions = time_decisions(repeats, params["decision_inner"])
    execution = time_execution(repeats, params["execution_inner"])
    steps = time_steps(params["step_blocks"], params["episodes"], params["block_episodes"])
    steps["describe_ns"] = time_describe(repeats, params["decision_inner"])
    data: dict[str, Any] = {"benchmark": "sql_kernel", "quick": quick, "environment": env,
                            "parameters": params, "decisions": decisions, "execution": execution,
                            "steps": steps}
    data["targets"] = targets(decisions, steps)
    json_path, md_path = write_results(args.out, "sql_kernel", data, to_markdown(data))
    for t in data["targets"]:
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['measured']} (limit {t['limit']})")
    print(f"wrote {json_path.name} and {md_path.name} in {args.out.name}/")
    return 0


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
