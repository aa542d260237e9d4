"""Per-step overhead of governing CartPole-v1, and the time ``import govgym`` takes.

Variants, all stepping the same pre-generated actions from the same reset seed:

- ``raw``: ``gym.make("CartPole-v1")``
- ``wrapper``: a pass-through ``gym.Wrapper`` around it (the floor for any wrapper)
- ``governed_empty``: ``GovernedEnv(..., policy=None)``
- ``governed_bounds_recorder``: ``GovernedEnv(..., policy="cartpole-envelope")`` with the
  audit recorder writing to a temporary folder
- ``governed_bounds``: the same policy without the recorder
- ``governed_bounds_recorder_clean``: the same rules and recorder, but with bounds so
  wide that no step breaks them: the fixed cost of a governed step, apart from the cost
  of violations (with random actions the shipped envelope is broken on many steps; the
  run's ``workload`` section says how many). No target; for reading the others.
- ``replay``, ``replay_governed_empty``, ``replay_governed_bounds_recorder``: CartPole's
  own trajectory for these actions, recorded once and played back by a world that does
  nothing else (no physics, no Gymnasium checker wrappers), bare and governed as above.
  The difference to ``replay`` is what governance itself costs per step on exactly this
  workload, the world's cost left out; the results set it against what each ratio
  target allows (``budget``). No target; for reading the others.

Floors (``floors``), timed in the same run on the audit log the governed run wrote: a
SHA-256 of each record line alone (``hashlib``, what any per-record hash chain pays) and
one ``write`` + ``flush`` of each episode's lines (the flush at every episode end),
per step. Both are costs of the recorder's format and flush rule that no code in govgym
can avoid.

What is timed: the whole loop of ``steps`` calls to ``step``, including the ``reset()``
that follows every episode end, divided by ``steps`` (every variant steps the same actions;
a governed variant also ends the episodes the policy's critical bound terminates, a few
in a thousand, so its episodes differ slightly from the raw run's after the first). So the
numbers are "per step, resets amortised". The recorder's flushes (every 1,024 records and
at each episode end) fall inside the loop, so their cost is included. Building the env, a
warm-up of ``warmup`` steps and closing it are outside. The garbage collector stays on
(it is on in training too) and runs a full collection before each timed loop. The loop
reads both the wall clock (``perf_counter_ns``, the headline: targets are judged on it)
and the thread's CPU clock (``thread_time_ns``, which leaves out time the process spent
descheduled: a cross-check when other work shares the machine).

Each repeat runs every variant once, in an order rotated by one per repeat, so drift on
the machine affects every variant alike. The headline is the median ns/step over
repeats; the ratio to raw is the ratio of those medians. The median of the per-repeat
ratios (each variant against the raw run of the same repeat) is reported too, as a
check: when the two disagree much, the machine was noisy.

``import govgym`` is timed in fresh interpreters (in-process ``perf_counter`` around the
import), interleaved with ``import gymnasium`` (a floor: govgym imports it), with a warm
bytecode cache in a temporary ``PYTHONPYCACHEPREFIX`` (what an installed package sees) and
in the environment as inherited (which may set ``PYTHONDONTWRITEBYTECODE``).

Run: ``python benchmarks/overhead.py`` (about a minute; ``--quick`` for a smoke test;
``--profile governed_bounds_recorder`` prints a cProfile of one variant instead).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
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

from govgym import GovernedEnv, load_policy

ENV_ID = "CartPole-v1"
POLICY = "cartpole-envelope"
SEED = 0
ACTION_SEED = 12345

VARIANTS: dict[str, str] = {
    "raw": f'gym.make("{ENV_ID}")',
    "wrapper": "gym.Wrapper(raw): pass-through",
    "governed_empty": "GovernedEnv(raw, policy=None)",
    "governed_bounds_recorder": f'GovernedEnv(raw, policy="{POLICY}", audit_path=<tmp>)',
    "governed_bounds": f'GovernedEnv(raw, policy="{POLICY}")',
    "governed_bounds_recorder_clean": "as governed_bounds_recorder, bounds never broken",
    "replay": "Replay(CartPole-v1's trajectory): the world's cost left out",
    "replay_governed_empty": "GovernedEnv(replay, policy=None)",
    "replay_governed_bounds_recorder": f'GovernedEnv(replay, policy="{POLICY}", audit_path=<tmp>)',
}
# governed variant on the replayed trajectory -> the variant whose target it explains
REPLAYED = {"replay_governed_empty": "governed_empty",
            "replay_governed_bounds_recorder": "governed_bounds_recorder"}

# (variant, limit on its median ratio to raw, where the target comes from)
TARGETS = [
    ("governed_empty", 1.1, "empty policy <= 1.1x raw"),
    ("governed_bounds_recorder", 1.3, "state bounds + recorder <= 1.3x raw"),
]
IMPORT_TARGET_S = 0.3

FULL = {"repeats": 15, "steps": 20_000, "warmup": 500, "import_runs": 7}
QUICK = {"repeats": 2, "steps": 300, "warmup": 20, "import_runs": 2}


Tape = list[tuple[Any, list[tuple[Any, float, bool, bool]]]]


class Replay(gym.Env):  # type: ignore[type-arg]
    """CartPole-v1's own episodes, played back: the observations, rewards and episode
    ends the raw env gave for the benchmark's actions, at almost no cost per step. Each
    ``reset`` starts the next recorded episode (``reset(seed=...)`` the first), so an
    episode the policy ends early skips the rest of its recording."""

    def __init__(self, tape: Tape) -> None:
        reference = gym.make(ENV_ID)
        self.observation_space = reference.observation_space
        self.action_space = reference.action_space
        reference.close()
        self._tape = tape
        self._episode = -1
        self._steps: list[tuple[Any, float, bool, bool]] = []
        self._t = 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._episode = 0 if seed is not None else self._episode + 1
        if self._episode >= len(self._tape):
            raise RuntimeError(f"the replay tape holds {len(self._tape)} episodes; record more")
        obs, self._steps = self._tape[self._episode]
        self._t = 0
        return obs, {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated = self._steps[self._t]
        self._t += 1
        return obs, reward, terminated, truncated, {}


def record_tape(actions: list[int]) -> Tape:
    """CartPole-v1's episodes for ``actions`` from ``reset(seed=SEED)``, as the timing loop
    runs them, then as many again (the actions once more): spare episodes for a governed
    run whose policy ends some early."""
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=SEED)
    tape: Tape = [(obs, [])]
    for action in actions + actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        tape[-1][1].append((obs, float(reward), terminated, truncated))
        if terminated or truncated:
            tape.append((env.reset()[0], []))
    env.close()
    return tape


def make_variant(name: str, audit_dir: Path, tape: Tape | None = None) -> gym.Env:
    if name.startswith("replay"):
        if tape is None:
            raise ValueError(f"variant {name!r} needs the recorded tape")
        world: gym.Env = Replay(tape)
        log = audit_dir / f"{name}.jsonl"
        name = name.removeprefix("replay").removeprefix("_") or "raw"
    else:
        world = gym.make(ENV_ID)
        log = audit_dir / f"{name}.jsonl"
    if name == "raw":
        return world
    if name == "wrapper":
        return gym.Wrapper(world)
    if name == "governed_empty":
        return GovernedEnv(world, policy=None)
    if name == "governed_bounds":
        return GovernedEnv(world, policy=POLICY)
    if name == "governed_bounds_recorder":
        return GovernedEnv(world, policy=POLICY, audit_path=log, run_id="bench")
    if name == "governed_bounds_recorder_clean":
        return GovernedEnv(world, policy=never_broken(POLICY), audit_path=log, run_id="bench")
    raise ValueError(f"unknown variant {name!r}")


def never_broken(policy: str) -> dict[str, Any]:
    """``policy`` with every bound widened to +-1e9: same rules, no violations."""
    data = load_policy(policy).to_dict()
    for rule in data["rules"]:
        for bound in rule.get("bounds", ()):
            bound["low"], bound["high"] = -1e9, 1e9
    return data


def timed_steps(env: gym.Env, actions: list[int]) -> tuple[int, int, int]:
    """(wall ns, CPU ns, episodes ended) for stepping ``actions`` from ``reset(seed=SEED)``."""
    env.reset(seed=SEED)
    step, reset = env.step, env.reset
    episodes = 0
    gc.collect()
    cpu_start = time.thread_time_ns()
    start = time.perf_counter_ns()
    for action in actions:
        _, _, terminated, truncated, _ = step(action)
        if terminated or truncated:
            reset()
            episodes += 1
    wall = time.perf_counter_ns() - start
    return wall, time.thread_time_ns() - cpu_start, episodes


def harness_ns(actions: list[int]) -> float:
    """The timing loop around a step that does nothing: included in every variant alike."""
    result = (None, 0.0, False, False, {})

    class Null:
        def step(self, action: Any) -> tuple[Any, ...]:
            return result

        def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
            return None, {}

    wall, _, _ = timed_steps(Null(), actions)  # type: ignore[arg-type]
    return wall / len(actions)


def characterise(actions: list[int], audit_dir: Path, variant: str = "governed_bounds_recorder",
                 tape: Tape | None = None) -> dict[str, Any]:
    """What the governed run does with these actions (untimed): how often rules fire."""
    env = make_variant(variant, audit_dir / "characterise", tape)
    env.reset(seed=SEED)
    steps_with_violation = violations = by_policy = episodes = 0
    for action in actions:
        _, _, terminated, truncated, info = env.step(action)
        found = info["governance"]["violations"]
        violations += len(found)
        steps_with_violation += bool(found)
        if terminated or truncated:
            episodes += 1
            by_policy += info["governance"]["terminated_by_policy"]
            env.reset()
    env.close()
    recorder = env.recorder  # type: ignore[attr-defined]
    size = recorder.path.stat().st_size
    n = len(actions)
    return {
        "steps": n,
        "episodes_ended": episodes,
        "mean_episode_length": n / episodes if episodes else None,
        "episodes_ended_by_policy": by_policy,
        "steps_with_violation_fraction": steps_with_violation / n,
        "violations_per_step": violations / n,
        "audit_bytes_per_record": size / recorder.records_written,  # (one close record: ~0)
        "audit_log": recorder.path,
    }


def floors(log: Path, repeats: int, out_dir: Path) -> dict[str, Any]:
    """Per step, on the lines of a governed run's audit log: a SHA-256 of each line alone,
    and one write + flush of each episode's lines to a new file (text mode, UTF-8, as the
    recorder writes). Medians over ``repeats``, interleaved."""
    lines = [line for line in log.read_text(encoding="utf-8").splitlines(keepends=True)
             if '"event":"close"' not in line]  # the decisions; not the session's close record
    encoded = [line.encode() for line in lines]
    episodes: list[list[str]] = []
    current = None
    for line in lines:
        episode = json.loads(line)["episode"]
        if episode != current:
            episodes.append([])
            current = episode
        episodes[-1].append(line)
    sha256 = hashlib.sha256
    hash_samples: list[float] = []
    flush_samples: list[float] = []
    for repeat in range(repeats):
        gc.collect()
        start = time.perf_counter_ns()
        for body in encoded:
            sha256(body).hexdigest()
        hash_samples.append((time.perf_counter_ns() - start) / len(encoded))
        path = out_dir / f"floor-{repeat}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            write, flush = fh.write, fh.flush
            start = time.perf_counter_ns()
            for group in episodes:
                write("".join(group))
                flush()
            flush_samples.append((time.perf_counter_ns() - start) / len(lines))
        path.unlink()
    return {
        "records": len(lines),
        "episodes": len(episodes),
        "sha256_ns_per_step": stats(hash_samples),
        "write_flush_per_episode_ns_per_step": stats(flush_samples),
    }


def run_steps(params: dict[str, int], audit_root: Path) -> dict[str, Any]:
    actions = np.random.default_rng(ACTION_SEED).integers(0, 2, params["steps"]).tolist()
    warm = actions[: params["warmup"]]
    tape = record_tape(actions)
    names = list(VARIANTS)
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpu_samples: dict[str, list[float]] = {n: [] for n in names}
    episodes: dict[str, set[int]] = {n: set() for n in names}
    for repeat in range(params["repeats"]):
        for name in rotated(names, repeat):
            audit_dir = audit_root / f"r{repeat}"
            env = make_variant(name, audit_dir, tape)
            timed_steps(env, warm)
            wall, cpu, ended = timed_steps(env, actions)
            env.close()
            samples[name].append(wall / len(actions))
            cpu_samples[name].append(cpu / len(actions))
            episodes[name].add(ended)
            for log in audit_dir.glob("*.jsonl"):
                log.unlink()  # keep the temp folder small over repeats
    raw, raw_cpu = stats(samples["raw"]), stats(cpu_samples["raw"])
    variants: dict[str, Any] = {}
    for name in names:
        s, c = stats(samples[name]), stats(cpu_samples[name])
        paired = [v / r for v, r in zip(samples[name], samples["raw"], strict=True)]
        variants[name] = {
            "what": VARIANTS[name],
            "ns_per_step": s,
            "ratio_to_raw": s["median"] / raw["median"],
            "ratio_to_raw_paired_median": statistics.median(paired),
            "overhead_ns_per_step": s["median"] - raw["median"],
            "cpu_ns_per_step": c,
            "cpu_ratio_to_raw": c["median"] / raw_cpu["median"],
            "episodes_ended_per_run": sorted(episodes[name]),
            "samples_ns_per_step": [round(x, 1) for x in samples[name]],
            "samples_cpu_ns_per_step": [round(x, 1) for x in cpu_samples[name]],
        }
    workload = characterise(actions, audit_root)
    replayed = characterise(actions, audit_root / "replay", "replay_governed_bounds_recorder", tape)
    for key in ("steps_with_violation_fraction", "violations_per_step", "episodes_ended_by_policy"):
        workload[f"replay_{key}"] = replayed[key]
    budget = {}
    for name, target_variant in REPLAYED.items():
        limit = next(limit for variant, limit, _ in TARGETS if variant == target_variant)
        budget[target_variant] = {
            "allowed_ns_per_step": (limit - 1.0) * raw["median"],
            "governance_ns_per_step_replayed": (variants[name]["ns_per_step"]["median"]
                                                - variants["replay"]["ns_per_step"]["median"]),
        }
    return {
        "variants": variants,
        "harness_ns_per_step": harness_ns(actions),
        "workload": {k: v for k, v in workload.items() if k != "audit_log"},
        "floors": floors(workload["audit_log"], params["repeats"], audit_root),
        "budget": budget,
    }


_IMPORT_SNIPPET = ("import time; t0 = time.perf_counter(); import {module}; "
                   "print(time.perf_counter() - t0)")


def _import_once(module: str, env: dict[str, str], cwd: str) -> float:
    done = subprocess.run([sys.executable, "-c", _IMPORT_SNIPPET.format(module=module)],
                          env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def run_imports(runs: int) -> dict[str, Any]:
    inherited = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cwd:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = cache
        _import_once("govgym", cached, cwd)  # fill the bytecode cache
        cases: dict[str, tuple[str, dict[str, str]]] = {
            "govgym": ("govgym", cached),
            "gymnasium": ("gymnasium", cached),
            "govgym_inherited_env": ("govgym", inherited),
        }
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for run in range(runs):
            for key in rotated(list(cases), run):
                module, env = cases[key]
                samples[key].append(_import_once(module, env, cwd))
    result = {k: stats(v) for k, v in samples.items()}
    bytecode_note = ("PYTHONDONTWRITEBYTECODE is set in the inherited environment: govgym "
                     "(an editable install) is compiled from source on every import there"
                     if inherited.get("PYTHONDONTWRITEBYTECODE") else
                     "inherited environment writes bytecode normally")
    return {
        "seconds": result,
        "govgym_minus_gymnasium_s": result["govgym"]["median"] - result["gymnasium"]["median"],
        "note": bytecode_note,
    }


def verdicts(steps: dict[str, Any], imports: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for variant, limit, label in TARGETS:
        value = steps["variants"][variant]["ratio_to_raw"]
        out.append({"target": label, "variant": variant, "measured": value, "limit": limit,
                    "unit": "x raw", "met": value <= limit})
    for key, label in (("govgym", "import govgym < 0.3 s (warm bytecode cache)"),
                       ("govgym_inherited_env", "import govgym < 0.3 s (inherited environment)")):
        value = imports["seconds"][key]["median"]
        out.append({"target": label, "variant": key, "measured": value, "limit": IMPORT_TARGET_S,
                    "unit": "s", "strict": True, "met": value < IMPORT_TARGET_S})
    return out


def to_markdown(data: dict[str, Any]) -> str:
    steps, imports, p = data["steps"], data["imports"], data["parameters"]
    rows = []
    for name, v in steps["variants"].items():
        s = v["ns_per_step"]
        rows.append([f"`{name}`", v["what"].replace("|", "\\|"), fmt_ns(s["median"]),
                     f"{fmt_ns(s['q1'])} - {fmt_ns(s['q3'])}", f"{v['ratio_to_raw']:.2f}x",
                     f"{v['ratio_to_raw_paired_median']:.2f}x",
                     fmt_ns(v["overhead_ns_per_step"]) if name != "raw" else "-",
                     fmt_ns(v["cpu_ns_per_step"]["median"]), f"{v['cpu_ratio_to_raw']:.2f}x"])
    target_rows = []
    for t in data["targets"]:
        measured = (f"{t['measured']:.2f}x" if t["unit"] == "x raw" else f"{t['measured']:.3f} s")
        target_rows.append([t["target"], measured, "met" if t["met"] else "**MISSED**"])
    imp_rows = [[f"`import {'govgym' if k.startswith('govgym') else k}`"
                 + (" (inherited env)" if k.endswith("inherited_env") else ""),
                 f"{s['median']:.3f} s", f"{s['min']:.3f} - {s['max']:.3f} s"]
                for k, s in imports["seconds"].items()]
    w = steps["workload"]
    parts = [
        "# govgym step overhead on CartPole-v1",
        quick_banner(data["quick"]),
        environment_markdown(data["environment"]),
        f"Parameters: {p['repeats']} repeats x {p['steps']:,} steps per variant (after "
        f"{p['warmup']} warm-up steps), variants interleaved in rotated order; resets after "
        f"each episode end are inside the timed loop for every variant. Median over repeats; "
        f"ratio = median / median of raw (targets are judged on it). `paired` = median of "
        f"per-repeat ratios; `CPU` = the same loop timed by the thread's CPU clock, which "
        f"leaves out time the process spent descheduled (a check on a busy machine).",
        "## Per step",
        markdown_table(["variant", "what", "median / step", "IQR", "ratio", "paired",
                        "overhead / step", "CPU / step", "CPU ratio"], rows),
        f"Timing-loop cost included in every row: {fmt_ns(steps['harness_ns_per_step'])}/step. "
        f"Workload (random actions, seed {ACTION_SEED}): mean episode "
        f"{w['mean_episode_length']:.1f} steps, {w['steps_with_violation_fraction']:.0%} of "
        f"governed steps carry a violation ({w['violations_per_step']:.2f} violations/step), "
        f"{w['episodes_ended_by_policy']} of {w['episodes_ended']} episodes ended by policy, "
        f"{w['audit_bytes_per_record']:.0f} audit bytes/record.",
        "## Where the time goes (absolute, per step)",
        budget_text(steps),
        "## import time (fresh interpreter)",
        markdown_table(["import", "median", "range"], imp_rows),
        f"{imports['note']}. govgym adds {imports['govgym_minus_gymnasium_s'] * 1e3:.0f} ms "
        f"over `import gymnasium` (medians).",
        "## Targets",
        markdown_table(["target", "measured", "result"], target_rows),
    ]
    return "\n\n".join(part for part in parts if part)


def budget_text(steps: dict[str, Any]) -> str:
    """Each ratio target as time per step: what it allows, what governance costs with the
    world's cost left out (the replayed trajectory), and the floors inside that."""
    f, w = steps["floors"], steps["workload"]
    sha, flush = f["sha256_ns_per_step"]["median"], f["write_flush_per_episode_ns_per_step"]["median"]
    rows = []
    for variant, b in steps["budget"].items():
        limit = next(label for v, _, label in TARGETS if v == variant)
        rows.append([limit, fmt_ns(b["allowed_ns_per_step"]),
                     fmt_ns(b["governance_ns_per_step_replayed"]),
                     f"{b['governance_ns_per_step_replayed'] / b['allowed_ns_per_step']:.1f}x"])
    return "\n\n".join([
        markdown_table(["target", "allows (limit - 1) x raw", "governance on the replayed "
                        "trajectory (minus `replay`)", "needed / allowed"], rows),
        f"The replayed trajectory is CartPole's own for these actions, played back by a world "
        f"that does nothing else; governed, {w['replay_steps_with_violation_fraction']:.0%} of "
        f"its steps carry a violation (the live run: {w['steps_with_violation_fraction']:.0%}). "
        f"Floors inside the recorder's share, timed on this run's audit log "
        f"({f['records']:,} records, {f['episodes']:,} episodes): a SHA-256 of each record "
        f"line alone (`hashlib`) {fmt_ns(sha)}/step; one write + flush of each episode's "
        f"lines {fmt_ns(flush)}/step; together {fmt_ns(sha + flush)}/step, before any JSON is "
        f"built or any rule runs.",
    ])


def profile(variant: str, steps: int) -> None:
    import cProfile
    import pstats

    actions = np.random.default_rng(ACTION_SEED).integers(0, 2, steps).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        env = make_variant(variant, Path(tmp), record_tape(actions))
        timed_steps(env, actions[:500])
        profiler = cProfile.Profile()
        profiler.runcall(timed_steps, env, actions)
        env.close()
    pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(30)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=list(VARIANTS), default=None,
                        help="print a cProfile of one variant instead of benchmarking")
    args = parser.parse_args(argv)
    params = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        params["repeats"] = args.repeats
    if args.profile:
        profile(args.profile, params["steps"])
        return 0
    env_info = environment()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        steps = run_steps(params, Path(tmp))
    imports = run_imports(params["import_runs"])
    data: dict[str, Any] = {
        "benchmark": "overhead",
        "quick": args.quick,
        "environment": env_info,
        "parameters": {**params, "env_id": ENV_ID, "policy": POLICY, "reset_seed": SEED,
                       "action_seed": ACTION_SEED, "resets_timed": True, "gc_enabled": True,
                       # the policy file may change; record what was measured
                       "policy_rules": load_policy(POLICY).to_dict()["rules"]},
        "steps": steps,
        "imports": imports,
        "wall_time_s": time.perf_counter() - started,
    }
    data["targets"] = verdicts(steps, imports)
    publish(args.out, "overhead", data, to_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
