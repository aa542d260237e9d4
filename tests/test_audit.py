"""The flight recorder: hash chain, tampering, torn lines, summaries."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

from govgym.audit import GENESIS, Recorder, read, summarize


def write_log(path: Path, n: int = 5, run_id: str = "t") -> None:
    with Recorder(path, run_id=run_id, flush_every=2) as rec:
        for i in range(n):
            violations = [{"rule": "r", "code": "c", "severity": "high", "message": "m", "cost": 1.0}]
            rec.append(episode=0, step=i, proposal={"action": i, "sql": "SELECT 'ü'"},
                       verdict="block" if i % 2 else "allow",
                       violations=violations if i % 2 else [], cost=float(i % 2))


def test_records_chain_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path)
    log = read(path)
    assert log.ok and log.first_broken is None and not log.torn
    assert [r["seq"] for r in log.records] == [0, 1, 2, 3, 4]
    assert log.records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(log.records, log.records[1:], strict=False))
    assert log.records[1]["proposal"] == {"action": 1, "sql": "SELECT 'ü'"}


@pytest.mark.parametrize("tamper, line, reason", [
    (lambda lines: lines.__setitem__(2, lines[2].replace('"verdict":"allow"', '"verdict":"block"')), 3,
     "does not match its hash"),
    (lambda lines: lines.pop(1), 2, "does not chain"),
    (lambda lines: lines.insert(1, lines.pop(3)), 2, "does not chain"),
])
def test_tampering_names_the_first_broken_record(tmp_path: Path, tamper, line: int, reason: str) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path)
    lines = path.read_text().splitlines()
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")
    log = read(path)
    assert not log.ok and log.first_broken == line and reason in log.problem
    assert len(log.records) == line - 1


def test_recomputed_hash_after_edit_still_breaks_the_chain(tmp_path: Path) -> None:
    """Rewriting a record *and* its own hash cannot hide: the next record's prev differs."""
    import hashlib

    path = tmp_path / "a.jsonl"
    write_log(path)
    lines = path.read_text().splitlines()
    body = lines[1][: lines[1].index(',"hash":')].replace('"cost":1.0', '"cost":0.0')
    lines[1] = f'{body},"hash":"{hashlib.sha256(body.encode()).hexdigest()}"}}'
    path.write_text("\n".join(lines) + "\n")
    log = read(path)
    assert not log.ok and log.first_broken == 3


def test_torn_last_line_is_reported_not_fatal_and_the_file_can_be_continued(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, n=3)
    with path.open("a") as fh:
        fh.write('{"seq":3,"time":1.0,"run":"t","epi')  # a crash mid-write
    log = read(path)
    assert log.ok and log.torn == [4] and log.torn_tail and len(log.records) == 3
    write_log(path, n=2, run_id="second")  # a new run continues the chain after the torn line
    log = read(path)
    assert log.ok and log.torn == [4] and not log.torn_tail
    assert [r["seq"] for r in log.records] == [0, 1, 2, 3, 4]
    assert log.records[3]["run"] == "second" and log.records[3]["prev"] == log.records[2]["hash"]


def test_buffered_records_are_flushed_on_close_and_garbage_collection(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    rec = Recorder(path, flush_every=1000)
    rec.append(0, 0, 1, "allow")
    assert path.read_text() == ""  # buffered, not yet written
    del rec
    import gc

    gc.collect()
    assert len(read(path).records) == 1
    with pytest.raises(ValueError, match="flush_every"):
        Recorder(tmp_path / "b.jsonl", flush_every=0)


def test_numpy_values_serialise_as_json(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "a.jsonl"
    with Recorder(path) as rec:
        rec.append(0, 0, np.array([1.5, 2.0]).tolist(), "allow", cost=np.float64(0.5),
                   reward_delta=np.float32(-0.25))
    record = read(path).records[0]
    assert record["cost"] == 0.5 and record["reward_delta"] == -0.25
    json.dumps(record)


def test_summary_by_rule_and_severity(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, n=10)
    summary = summarize(read(path).records)
    assert summary["decisions"] == 10 and summary["verdicts"] == {"allow": 5, "block": 5}
    assert summary["violations_by_rule"] == {"r": {"count": 5, "per_1000": 500.0}}
    assert summary["violations_by_severity"]["high"]["count"] == 5
    assert summary["total_cost"] == 5.0


def test_governed_env_records_every_decision(tmp_path: Path) -> None:
    path = tmp_path / "{run}.jsonl"
    env = gym.make("Governed-CartPole-v1", audit_path=str(path), run_id="r1")
    env.reset(seed=0)
    steps = 0
    while True:
        steps += 1
        *_, terminated, truncated, info = env.step(steps % 2)
        if terminated or truncated:
            break
    env.reset(seed=1)
    env.step(0)
    env.close()
    log = read(tmp_path / "r1.jsonl")
    assert log.ok and len(log.records) == steps + 1
    assert {r["episode"] for r in log.records} == {0, 1}
    assert [r["step"] for r in log.records[:3]] == [0, 1, 2]
    costs = sum(r["cost"] for r in log.records[:steps])
    assert costs == pytest.approx(info["episode_cost"])
