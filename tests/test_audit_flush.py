"""When a governed env's audit records reach the disk: at every episode end the wrapper
sees, on reset, on close, every ``flush_every`` records and at interpreter exit.

Each test reads the file while the env is still open, so a record that is only in the
recorder's buffer is not found.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import govgym
from govgym import GovernedEnv
from govgym.audit import Recorder
from govgym.audit import read as read_audit
from govgym.cli import main

CORRIDOR = {"name": "corridor", "rules": [
    {"kind": "state_bounds", "name": "corridor", "severity": "critical",
     "bounds": [{"index": 0, "low": -0.05, "high": 0.05}]}]}
NO_LEFT = {"name": "no-left", "rules": [{"kind": "forbidden_actions", "values": [0]}]}


def on_disk(path: Path) -> int:
    log = read_audit(path)
    assert log.ok, log.problem
    return len(log.records)


def run_episode(env: gym.Env, action: int) -> int:
    env.reset(seed=0)
    steps = 0
    while True:
        steps += 1
        *_, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return steps


def test_an_episode_ended_by_the_policy_is_on_disk_at_its_last_step(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = govgym.make("CartPole-v1", policy=CORRIDOR, audit_path=path, flush_every=10_000)
    steps = run_episode(env, 1)
    assert 1 < steps < 50
    assert on_disk(path) == steps
    env.close()


def test_an_episode_the_world_ends_is_on_disk_at_its_last_step(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = govgym.make("CartPole-v1", policy=NO_LEFT, intervention={"high": "warn"},
                      audit_path=path, flush_every=10_000)
    steps = run_episode(env, 0)  # always left: the pole falls, the world terminates
    assert on_disk(path) == steps
    env.close()


def test_the_wrappers_own_step_limit_flushes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for policy in (NO_LEFT, {"name": "empty", "rules": []}):  # the ruled and unruled step
        env = GovernedEnv(gym.make("CartPole-v1", max_episode_steps=-1), policy,
                          max_episode_steps=5, audit_path=path, flush_every=10_000)
        assert run_episode(env, 1) == 5
        assert on_disk(path) == 5
        env.close()
        path.unlink()


def test_a_registered_ids_time_limit_is_flushed_by_the_next_reset(tmp_path: Path) -> None:
    """The TimeLimit around a registered id's GovernedEnv truncates after the wrapper
    returned: the records reach the disk at the next reset (documented)."""
    path = tmp_path / "audit.jsonl"
    env = gym.make("Governed-CartPole-v1", max_episode_steps=3, audit_path=str(path),
                   flush_every=10_000)
    assert run_episode(env, 1) == 3
    env.reset(seed=1)
    assert on_disk(path) == 3
    env.close()


def test_flush_every_records_mid_episode(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = govgym.make("CartPole-v1", policy=NO_LEFT, audit_path=path, flush_every=4,
                      max_episode_steps=100)
    env.reset(seed=0)
    for _ in range(6):
        env.step(1)
    assert on_disk(path) == 4
    env.close()
    assert on_disk(path) == 6


def test_records_are_flushed_at_exit_without_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(f"""
        import govgym
        env = govgym.make("CartPole-v1", policy="cartpole-envelope", audit_path={str(path)!r},
                          flush_every=10_000, max_episode_steps=100)
        env.reset(seed=0)
        for _ in range(7):
            env.step(1 if _ % 2 else 0)
        KEEP = env  # still referenced at exit: no close, no garbage collection
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert on_disk(path) == 7
    (session,) = read_audit(path).sessions  # a normal exit ends the session too
    assert session.closed and session.closed_by == "exit" and session.decisions == 7


def test_close_ends_the_session_with_a_record_that_counts_its_decisions(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = govgym.make("CartPole-v1", policy=NO_LEFT, audit_path=path, run_id="one",
                      max_episode_steps=100)
    run_episode(env, 1)
    env.close()
    steps = on_disk(path)
    *_, last = path.read_text().splitlines()
    close = json.loads(last)
    assert (close["event"], close["run"], close["decisions"], close["by"]) == (
        "close", "one", steps, "close")
    assert close["govgym"] == govgym.__version__ and close["seq"] == steps
    log = read_audit(path)
    (session,) = log.sessions
    assert session.closed and session.decisions == steps and not log.unclosed
    assert log.state == "intact"
    assert (session.first_line, session.last_line) == (1, steps + 1)
    assert log.last_hash == close["hash"] == env.get_wrapper_attr("recorder").last_hash
    assert all("event" not in record for record in log.records)  # records: decisions only
    assert main(["audit", "verify", str(path)]) == 0


@pytest.mark.parametrize("ending", ["os._exit", "SIGKILL"])
def test_a_process_that_dies_leaves_its_session_unclosed_and_verify_fails(
        tmp_path: Path, ending: str) -> None:
    """Was a gap: a worker killed after its last flush left a log that verified as
    complete, though the decisions since that flush were lost."""
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, govgym
        env = govgym.make("CartPole-v1", policy=None, audit_path={str(path)!r}, run_id="w",
                          flush_every=5, max_episode_steps=1000)
        env.reset(seed=0)
        for step in range(12):
            env.step(step % 2)  # 10 reach the file; 2 are buffered when the process dies
        {"os._exit(0)" if ending == "os._exit" else "os.kill(os.getpid(), signal.SIGKILL)"}
    """)
    subprocess.run([sys.executable, "-c", script], timeout=120)
    log = read_audit(path)
    assert log.ok and len(log.records) == 10
    (session,) = log.unclosed
    assert (session.run, session.decisions, session.closed) == ("w", 10, False)
    assert log.state == "intact, 1 session(s) NOT CLOSED"
    assert main(["audit", "verify", str(path)]) == 1
    assert main(["audit", "verify", "--allow-open", str(path)]) == 0
    # a recorder opened on it afterwards goes on; the dead session stays reported
    env = govgym.make("CartPole-v1", policy=None, audit_path=path, run_id="w")
    env.reset(seed=1)
    env.step(1)
    env.close()
    log = read_audit(path)
    assert log.ok and [(s.decisions, s.closed) for s in log.sessions] == [(10, False), (1, True)]
    assert main(["audit", "verify", str(path)]) == 1


def _rehashed(lines: list[str], index: int, edit: Any) -> list[str]:
    """``lines`` with record ``index`` edited and the chain recomputed from there (what
    someone rewriting the log could do): a structural check, not the hashes, must catch it."""
    out = list(lines[:index])
    prev = json.loads(out[-1])["hash"] if out else "0" * 64
    for n, line in enumerate(lines[index:]):
        record = json.loads(line)
        if n == 0:
            edit(record)
        record["prev"] = prev
        del record["hash"]
        body = json.dumps(record, separators=(",", ":"), ensure_ascii=False)[:-1]
        prev = hashlib.sha256(body.encode()).hexdigest()
        out.append(f'{body},"hash":"{prev}"}}')
    return out


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r.update(decisions=9), "counting 9 decision(s), after 3 not yet closed"),
    (lambda r: r.update(decisions=0), "counting 0 decision(s)"),
    (lambda r: r.update(run="other"), "close record of run 'other' after decisions of another run"),
    (lambda r: r.update(event="reopen"), "unknown event 'reopen'"),
])
def test_a_close_record_no_recorder_would_write_breaks_the_chain(
        tmp_path: Path, edit: Any, problem: str) -> None:
    path = tmp_path / "audit.jsonl"
    with Recorder(path, run_id="r") as rec:
        for step in range(3):
            rec.append(0, step, [0], "allow")
    lines = path.read_text().splitlines()
    assert read_audit(path).ok
    path.write_text("\n".join(_rehashed(lines, 3, edit)) + "\n")
    log = read_audit(path)
    assert not log.ok and log.first_broken == 4 and problem in (log.problem or "")
    assert log.state == "BROKEN at line 4"
    assert len(log.records) == 3 and not log.sessions[-1].closed


def test_a_close_record_moved_up_leaves_the_rest_unclosed(tmp_path: Path) -> None:
    """A close record counting fewer decisions than precede it: the earlier ones are a
    session of their own, not closed (as a crashed recorder leaves them)."""
    path = tmp_path / "audit.jsonl"
    with Recorder(path, run_id="r") as rec:
        for step in range(4):
            rec.append(0, step, [0], "allow")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(_rehashed(lines, 4, lambda r: r.update(decisions=1))) + "\n")
    log = read_audit(path)
    assert log.ok and [(s.decisions, s.closed) for s in log.sessions] == [(3, False), (1, True)]
    assert main(["audit", "verify", str(path)]) == 1


def test_a_recorder_that_recorded_nothing_leaves_no_file_it_created(tmp_path: Path) -> None:
    """Was a nuisance: every env built with an audit_path left a file, so the throwaway
    env AsyncVectorEnv builds to read the spaces left an empty log under a fresh run id,
    and a glob of runs/*.jsonl found a run that never ran."""
    Recorder(tmp_path / "nothing.jsonl").close()
    assert not (tmp_path / "nothing.jsonl").exists()
    existing = tmp_path / "existing.jsonl"
    existing.touch()
    Recorder(existing).close()  # not its file to remove
    assert existing.exists()
    envs = gym.make_vec("Governed-CartPole-v1", num_envs=2, vectorization_mode="async",
                        audit_path=str(tmp_path / "runs" / "audit-{run}.jsonl"))
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    envs.close()
    logs = sorted((tmp_path / "runs").glob("*.jsonl"))
    assert len(logs) == 2
    assert all(read_audit(log).ok and len(read_audit(log).records) == 1 for log in logs)


def test_a_log_removed_between_open_and_lock_is_opened_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the removal of empty logs opens: a recorder that opened the path just
    before another removed it would lock, and write to, a file no longer in the folder."""
    from govgym.audit import Recorder, recorder

    path = tmp_path / "audit.jsonl"
    lock = recorder._lock
    calls = []

    def removed_first(fh: object, where: Path) -> None:
        calls.append(where)
        if len(calls) == 1:
            where.unlink()  # another recorder's close, in between
        lock(fh, where)  # type: ignore[arg-type]

    monkeypatch.setattr(recorder, "_lock", removed_first)
    with Recorder(path, run_id="r") as rec:
        rec.append(0, 0, [1], "allow")
    assert len(calls) == 2 and len(read_audit(path).records) == 1


def test_a_forked_child_leaves_the_parents_records_alone(tmp_path: Path) -> None:
    """Was a bug: a child forked while records were buffered wrote them again when it
    exited normally (the exit flush), so the parent's log read as tampered. The child now
    drops its copy of the buffer, and its copy of the recorder refuses to record."""
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(f"""
        import os, sys, warnings
        warnings.simplefilter("ignore")
        import gymnasium as gym, govgym
        env = gym.make("Governed-CartPole-v1", audit_path={str(path)!r})
        env.reset(seed=0)
        for _ in range(5):
            env.step(1)  # buffered: flush_every is 1024
        pid = os.fork()
        if pid == 0:
            try:
                env.step(1)
            except ValueError as exc:
                message = str(exc)
            else:
                message = "appended"
            sys.stdout.write(message + "\\n")
            sys.stdout.flush()
            sys.exit(0)  # a normal exit runs the exit flush
        os.waitpid(pid, 0)
        env.step(1)
        env.close()
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert "forked" in out, out
    log = read_audit(path)
    assert log.ok, log.problem
    assert [r["seq"] for r in log.records] == list(range(6))


def test_a_fixed_run_id_with_a_run_template_names_the_run_id(tmp_path: Path) -> None:
    """Was a misleading error: two envs given run_id="fixed" and audit_path "a-{run}"
    were told to use audit_path='runs/audit-{run}.jsonl', which they did."""
    path = str(tmp_path / "a-{run}.jsonl")
    first = gym.make("Governed-CartPole-v1", audit_path=path, run_id="fixed")
    try:
        with pytest.raises(RuntimeError, match=r"run_id='fixed'"):
            gym.make("Governed-CartPole-v1", audit_path=path, run_id="fixed")
    finally:
        first.close()


def test_an_unclosed_recorder_that_recorded_nothing_leaves_no_file(tmp_path: Path) -> None:
    """Was left behind: the empty file of an env that was never closed (a vector env
    whose second env was refused the same path), as close() already removes."""
    path = tmp_path / "audit.jsonl"
    script = textwrap.dedent(f"""
        import gymnasium as gym, govgym
        env = gym.make("Governed-CartPole-v1", audit_path={str(path)!r})
        env.reset(seed=0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert not path.exists()
