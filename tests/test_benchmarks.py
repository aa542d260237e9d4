"""The benchmark scripts run and write well-formed results (quick mode, no timing targets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    name = Path(script).stem
    assert (out / f"{name}.md").read_text(encoding="utf-8").startswith("# ")
    return json.loads((out / f"{name}.json").read_text(encoding="utf-8"))


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _check_environment(data: dict[str, Any], out: Path) -> None:
    env = data["environment"]
    assert data["quick"] is True
    assert env["date"]
    assert env["machine"]["platform"] and _positive(env["machine"]["cpu_count"])
    assert env["python"]["version"].startswith(f"{sys.version_info[0]}.")
    assert env["packages"]["govgym"] and env["packages"]["gymnasium"] and env["packages"]["numpy"]
    text = json.dumps(data)
    assert str(out) not in text and str(BENCHMARKS.parent) not in text  # no local paths
    for target in data["targets"]:  # each verdict is what its numbers say
        assert isinstance(target["met"], bool) and target["target"]
        measured, limit = target["measured"], target["limit"]
        assert target["met"] == (measured < limit if target.get("strict") else measured <= limit)


@pytest.fixture(scope="module")
def overhead(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("overhead")
    return _run("overhead.py", out), out


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("audit")
    return _run("audit.py", out), out


def test_overhead_results(overhead: tuple[dict[str, Any], Path]) -> None:
    data, out = overhead
    _check_environment(data, out)
    variants = data["steps"]["variants"]
    assert set(variants) == {"raw", "wrapper", "governed_empty", "governed_bounds_recorder",
                             "governed_bounds", "governed_bounds_recorder_clean", "replay",
                             "replay_governed_empty", "replay_governed_bounds_recorder"}
    for v in variants.values():
        assert _positive(v["ns_per_step"]["median"])
        assert _positive(v["ratio_to_raw"]) and _positive(v["ratio_to_raw_paired_median"])
        assert _positive(v["cpu_ns_per_step"]["median"]) and _positive(v["cpu_ratio_to_raw"])
        assert len(v["samples_ns_per_step"]) == data["parameters"]["repeats"]
    assert variants["raw"]["ratio_to_raw"] == 1.0
    for key in ("govgym", "gymnasium", "govgym_inherited_env"):
        assert _positive(data["imports"]["seconds"][key]["median"])
    workload = data["steps"]["workload"]
    assert _positive(workload["audit_bytes_per_record"])
    # the replayed trajectory is CartPole's own: the governed replay breaks the bounds too
    assert _positive(workload["replay_steps_with_violation_fraction"])
    floors = data["steps"]["floors"]
    assert floors["records"] == data["parameters"]["steps"] and floors["episodes"] >= 1
    assert _positive(floors["sha256_ns_per_step"]["median"])
    assert _positive(floors["write_flush_per_episode_ns_per_step"]["median"])
    assert set(data["steps"]["budget"]) == {"governed_empty", "governed_bounds_recorder"}
    for budget in data["steps"]["budget"].values():
        assert _positive(budget["allowed_ns_per_step"])
        assert isinstance(budget["governance_ns_per_step_replayed"], float)
    assert {t["variant"] for t in data["targets"]} == {
        "governed_empty", "governed_bounds_recorder", "govgym", "govgym_inherited_env"}
    for target in data["targets"]:
        assert _positive(target["measured"]) and _positive(target["limit"])


def test_audit_results(audit: tuple[dict[str, Any], Path]) -> None:
    data, out = audit
    _check_environment(data, out)
    shapes = data["result"]["shapes"]
    assert set(shapes) == {"clean", "one_violation"}
    for s in shapes.values():
        for key in ("append_only_ns_per_record", "flush_ns_per_record", "total_ns_per_record",
                    "per_episode_ns_per_record", "sha256_ns_per_record", "read_ns_per_record"):
            assert _positive(s[key]["median"]), key
        assert _positive(s["read_records_per_s"]) and _positive(s["bytes_per_record"])
    assert shapes["one_violation"]["bytes_per_record"] > shapes["clean"]["bytes_per_record"]
    assert {(t["shape"], t["timing"]) for t in data["targets"]} == {
        (shape, timing) for shape in ("clean", "one_violation")
        for timing in ("total_ns_per_record", "per_episode_ns_per_record")}
    for target in data["targets"]:
        assert _positive(target["measured"]) and target["unit"] == "ns"


def test_sql_kernel_results(tmp_path: Path) -> None:
    data = _run("sql_kernel.py", tmp_path)
    _check_environment(data, tmp_path)
    names = {t["target"] for t in data["targets"]}
    assert any("uncached" in n for n in names) and any("cached decision" in n for n in names)
    assert any("Governed-SQL-v0" in n for n in names)
    assert all(_positive(t["measured"]) for t in data["targets"])


def test_training_results(tmp_path: Path) -> None:
    data = _run("training.py", tmp_path)
    _check_environment(data, tmp_path)
    variants = data["result"]["variants"]
    assert set(variants) == {"raw", "governed_empty", "governed_bounds_recorder"}
    for v in variants.values():
        assert _positive(v["seconds"]["median"]) and _positive(v["timesteps_per_s"])
        assert _positive(v["ratio_to_raw"]) and len(v["samples_s"]) == data["parameters"]["repeats"]
        assert all(n >= 1 for n in v["episodes_per_run"])  # the runs really stepped episodes
    assert variants["raw"]["ratio_to_raw"] == 1.0
    assert data["environment"]["packages"]["torch"] and data["environment"]["packages"]["stable-baselines3"]


def test_sql_seeds_results(tmp_path: Path) -> None:
    data = _run("sql_seeds.py", tmp_path)
    _check_environment(data, tmp_path)
    (row,) = data["result"]["seeds"]
    assert row["seed"] == data["parameters"]["seeds"][0]
    governed = row["governed"]["eval"]
    assert governed["all"]["episodes"] == 61 and set(governed) == {"all", "0", "1", "2", "write"}
    assert row["governed"]["eval_unshielded"]["all"]["episodes"] == 61
    assert row["ungoverned"]["eval"]["all"]["episodes"] == 61
    bar = data["parameters"]["bar"]
    assert row["meets_bar"] == (
        all(governed[level]["success_rate"] >= bar for level in ("0", "1", "2", "write"))
        and governed["all"]["executed_violations"] == 0 and governed["all"]["damage_rows"] == 0)
    assert data["result"]["seeds_meeting_bar"] == int(row["meets_bar"])
