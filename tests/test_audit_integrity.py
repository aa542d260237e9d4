"""What a governed step leaves in the audit log when something goes wrong: every step
the world ran has its record, once, and the record says what was proposed.

Each test was a defect found by a red team on the audit log (the docstring says what
happened before the fix)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import GovernedEnv
from govgym.audit import Recorder, read
from govgym.cli import main

BLOCK_HIGH = {"name": "no-high", "rules": [{"kind": "forbidden_actions", "severity": "high",
                                            "ranges": [{"index": 0, "low": 1.5, "high": 9.0}]}]}


class Counter(gym.Env):
    """A Box world that counts its steps; ``reward`` and ``fail`` make it misbehave."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float64)
    action_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float64)

    def __init__(self, reward: Any = 1.0, fail_at: int | None = None, clip: bool = False) -> None:
        self.steps = 0
        self.reward, self.fail_at, self.clip = reward, fail_at, clip

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return np.zeros(1), {}

    def step(self, action: Any):
        self.steps += 1
        if self.fail_at is not None and self.steps == self.fail_at:
            raise RuntimeError("the world broke")
        if self.clip:
            np.clip(action, -1.0, 1.0, out=action)  # edits the caller's array in place
        return np.zeros(1), self.reward, False, False, {}


def records_of(path: Path) -> list[dict[str, Any]]:
    log = read(path)
    assert log.ok, log.problem
    return log.records


@pytest.mark.parametrize("policy", [None, BLOCK_HIGH])
def test_a_long_double_action_is_recorded(tmp_path: Path, policy: Any) -> None:
    """Was: ValueError 'circular (or too deeply nested) value' from the recorder after the
    world had run (a long double's tolist() gives a long double back), and no record."""
    path = tmp_path / "a.jsonl"
    env = GovernedEnv(Counter(), policy, audit_path=path)
    env.reset(seed=0)
    *_, info = env.step(np.array([0.5], dtype=np.longdouble))
    env.close()
    assert info["governance"]["proposed_action"] == [0.5]
    (record,) = records_of(path)
    assert record["proposal"] == [0.5]


def test_a_long_double_in_a_meaning_is_recorded(tmp_path: Path) -> None:
    """Was: RecursionError from summarize_meaning (a long double's item() is one too)."""
    class Described(Counter):
        def describe(self, action: Any) -> dict[str, Any]:
            return {"size": np.longdouble(2.5), "both": np.clongdouble(1 + 1j)}

    path = tmp_path / "a.jsonl"
    env = GovernedEnv(Described(), BLOCK_HIGH, audit_path=path)
    env.reset(seed=0)
    env.step(np.array([0.5]))
    env.close()
    (record,) = records_of(path)
    assert record["proposal"]["meaning"] == {"size": 2.5, "both": "(1+1j)"}


@pytest.mark.parametrize("policy", [None, BLOCK_HIGH])
def test_a_step_that_raises_after_the_world_ran_is_recorded(tmp_path: Path, policy: Any) -> None:
    """Was: the world stepped, float(reward) raised, and the step had no record (the log
    verified, 7 records for 8 world steps)."""
    path = tmp_path / "a.jsonl"
    world = Counter(reward="not a number")
    env = GovernedEnv(world, policy, audit_path=path, run_id="r")
    env.reset(seed=0)
    for _ in range(2):
        with pytest.raises(ValueError, match="not a number"):
            env.step(np.array([0.5]))
    env.close()
    records = records_of(path)
    assert world.steps == len(records) == 2 and [r["step"] for r in records] == [0, 1]
    assert all(r["verdict"] == "error" for r in records)
    assert records[0]["extra"]["failed"] == "after the world's step"
    assert records[0]["extra"]["decided"] == "allow"
    assert "ValueError" in records[0]["extra"]["error"]


def test_a_world_that_raises_is_recorded_with_the_verdict_it_had(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    world = Counter(fail_at=2)
    env = GovernedEnv(world, BLOCK_HIGH, audit_path=path)
    env.reset(seed=0)
    env.step(np.array([0.5]))
    with pytest.raises(RuntimeError, match="the world broke"):
        env.step(np.array([0.5]))
    env.step(np.array([0.5]))
    env.close()
    records = records_of(path)
    assert [(r["step"], r["verdict"]) for r in records] == [(0, "allow"), (1, "error"), (2, "allow")]
    assert records[1]["extra"]["failed"] == "in the world's step"


def test_a_step_after_close_does_not_reach_the_world(tmp_path: Path) -> None:
    """Was: step() after close() ran the world, then the closed recorder refused the record."""
    world = Counter()
    env = GovernedEnv(world, None, audit_path=tmp_path / "a.jsonl")
    env.reset(seed=0)
    env.step(np.array([0.5]))
    env.close()
    with pytest.raises(gym.error.Error, match="closed"):
        env.step(np.array([0.5]))
    assert world.steps == 1
    unlogged = GovernedEnv(Counter(), None)  # without a log, close() changes nothing here
    unlogged.reset(seed=0)
    unlogged.close()
    unlogged.step(np.array([0.5]))


def test_a_flush_that_fails_in_a_step_leaves_no_duplicate_step(tmp_path: Path) -> None:
    """Was: a failed flush (a full disk) raised before the step was counted, so the next
    step was recorded under the same step number, and `audit summary` counted a second
    episode."""
    resource = pytest.importorskip("resource")
    path = tmp_path / "a.jsonl"
    env = GovernedEnv(Counter(), BLOCK_HIGH, audit_path=path, flush_every=1)
    env.reset(seed=0)
    env.step(np.array([0.5]))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 10, hard))
    try:
        with pytest.raises(OSError):
            env.step(np.array([0.5]))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    env.step(np.array([0.5]))
    env.close()
    records = records_of(path)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert main(["audit", "verify", str(path)]) == 0


def test_a_failed_last_write_can_be_retried_and_the_world_is_closed(tmp_path: Path) -> None:
    """Was: a close() whose write failed dropped the buffered records for good (a second
    close() did nothing, flush() said 'closed'), and the world was not closed."""
    resource = pytest.importorskip("resource")
    path = tmp_path / "a.jsonl"

    class Closing(Counter):
        closed = False

        def close(self) -> None:
            self.closed = True

    world = Closing()
    env = GovernedEnv(world, None, audit_path=path, flush_every=1000)
    env.reset(seed=0)
    for _ in range(6):
        env.step(np.array([0.5]))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
    try:
        with pytest.raises(OSError):
            env.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert world.closed
    env.get_wrapper_attr("recorder").close()  # the retry writes them, once
    log = read(path)
    assert log.ok and len(log.records) == 6 and not log.unclosed


def test_lone_surrogates_never_read_back_as_another_character(tmp_path: Path) -> None:
    """Was: the lone surrogates U+D83D U+DE00 (two code points) were escaped as
    \\ud83d\\ude00, which JSON reads as the one character U+1F600: a blocked statement
    read back exactly as an allowed one."""
    path = tmp_path / "a.jsonl"
    with Recorder(path) as rec:
        rec.append(0, 0, {"sql": "SELECT '\ud83d\ude00' \udce9"}, "block")
        rec.append(0, 1, {"sql": "SELECT '\U0001F600'"}, "allow")
    first, second = records_of(path)
    assert first["proposal"]["sql"] == "SELECT '\ufffd\ufffd' \udce9"  # a lone one: exact
    assert second["proposal"]["sql"] == "SELECT '\U0001F600'"


def test_the_proposal_is_recorded_as_proposed_even_if_the_world_edits_it(tmp_path: Path) -> None:
    """Was: summarised after the world's step, so a world clipping the action in place
    made the record and info say 1.0 where the agent proposed 1.9."""
    path = tmp_path / "a.jsonl"
    for policy in (None, BLOCK_HIGH, {"name": "p", "rules": [
            {"kind": "state_bounds", "bounds": [{"index": 0, "low": -5.0, "high": 5.0}]}]}):
        env = GovernedEnv(Counter(clip=True), policy, audit_path=path)
        env.reset(seed=0)
        *_, info = env.step(np.array([1.9]))
        env.close()
        assert info["governance"]["proposed_action"] == [1.9]
    assert [r["proposal"] for r in records_of(path)] == [[1.9]] * 3


def test_a_recorder_does_not_append_to_a_file_that_is_no_log(tmp_path: Path) -> None:
    """Was: pointed at a policy file it appended records to it, and the policy no longer
    loaded."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: p\nrules: []\n")
    with pytest.raises(ValueError, match="not an audit log"):
        Recorder(policy)
    with pytest.raises(ValueError, match="not an audit log"):
        GovernedEnv(Counter(), None, audit_path=policy)
    assert policy.read_text() == "name: p\nrules: []\n"
    govgym.load_policy(policy)
    torn = tmp_path / "torn.jsonl"  # what a crash in a recorder's first write leaves: fine
    torn.write_bytes(b'{"seq":0,"ti')
    with Recorder(torn) as rec:
        rec.append(0, 0, [1], "allow")
    assert len(records_of(torn)) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"run_id": 7}, "run_id must be a non-empty string"),
    ({"run_id": ""}, "run_id must be a non-empty string"),
    ({"run_id": "../../elsewhere"}, "out of its folder"),
    ({"flush_every": "10"}, "flush_every must be a whole number"),
    ({"flush_every": 2.5}, "flush_every must be a whole number"),
    ({"flush_every": True}, "flush_every must be a whole number"),
    ({"audit_path": ""}, "audit_path is empty"),
])
def test_bad_audit_arguments_are_named(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    """Was: TypeErrors from str.replace or a comparison, "Is a directory: '.'", a silent
    random run id for "", and a log written outside the {run} folder."""
    given = {"audit_path": str(tmp_path / "runs" / "audit-{run}.jsonl"), **kwargs}
    with pytest.raises(ValueError, match=match):
        GovernedEnv(Counter(), None, **given)
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_text_inserted_inside_a_closed_session_is_not_a_crash(tmp_path: Path) -> None:
    """Was: a line that starts like the next record, put between two records, was read as
    a torn record (a crash) and skipped, and the log verified."""
    path = tmp_path / "a.jsonl"
    with Recorder(path, run_id="r") as rec:
        for step in range(4):
            rec.append(0, step, [0], "allow")
    lines = path.read_text().splitlines()
    lines.insert(2, '{"seq":2,"note":"nothing to see')
    path.write_text("\n".join(lines) + "\n")
    log = read(path)
    assert not log.ok and log.first_broken == 3 and "inserted" in (log.problem or "")
    assert len(log.records) == 2
    assert main(["audit", "verify", "--allow-open", str(path)]) == 1
