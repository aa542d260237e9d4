"""The govgym command: output and exit codes, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import govgym
from govgym._paths import data_dir
from govgym.audit import Recorder
from govgym.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "govgym", *args], capture_output=True, text=True)


def test_envs_lists_ids_with_world_and_policy() -> None:
    result = run("envs")
    assert result.returncode == 0
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert rows["Governed-CartPole-v1"] == ["world=CartPole-v1", "policy=cartpole-envelope"]


def test_policy_show_list_and_check(tmp_path: Path, capsys) -> None:
    assert main(["policy", "show", "cartpole-envelope"]) == 0
    shown = capsys.readouterr().out
    assert "name: cartpole-envelope" in shown and "kind: state_bounds" in shown
    assert main(["policy", "list"]) == 0
    assert "pendulum-energy" in capsys.readouterr().out
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nrules:\n  - kind: rate\n    limit: 2\n    window: 5\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - kind: rate\n    limit: 0\n    window: 5\n")
    assert main(["policy", "check", str(good)]) == 0
    assert "ok (policy 'good', 1 rule(s))" in capsys.readouterr().out
    assert main(["policy", "check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 4, rule 'rate', field rules.0.limit" in err
    assert main(["policy", "check", str(tmp_path / "none.yaml")]) == 2


def test_policy_check_of_a_folder_checks_every_policy_file_in_it(tmp_path: Path, capsys) -> None:
    """Was: ``govgym policy check policies`` said "policies: no such file"."""
    (tmp_path / "good.yaml").write_text("name: good\nrules: []\n")
    (tmp_path / "bad.yml").write_text("name: bad\nrules:\n  - kind: nope\n")
    (tmp_path / "notes.txt").write_text("not a policy")
    assert main(["policy", "check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "good.yaml: ok (policy 'good', 0 rule(s))" in out
    assert "bad.yml" in err and "nope" in err and "notes.txt" not in out + err
    folder = data_dir("policies")
    assert main(["policy", "check", str(folder)]) == 0
    assert capsys.readouterr().out.count(": ok (policy") == len(list(folder.glob("*.yaml")))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["policy", "check", str(empty)]) == 2
    assert "a folder with no policy files" in capsys.readouterr().err
    assert main(["audit", "verify", str(empty)]) == 2
    assert "a folder, not an audit log" in capsys.readouterr().err


def test_unknown_policy_name_exits_2_and_lists_available() -> None:
    result = run("policy", "show", "nope")
    assert result.returncode == 2
    assert "no policy named 'nope'" in result.stderr and "cartpole-envelope" in result.stderr


def test_audit_verify_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = gym.make("Governed-CartPole-v1", audit_path=str(path))
    env.reset(seed=0)
    for step in range(20):
        env.step(step % 2)
    env.close()
    verified = run("audit", "verify", str(path))
    assert verified.returncode == 0 and "chain intact" in verified.stdout
    summary = run("audit", "summary", str(path))
    assert summary.returncode == 0 and "envelope" in summary.stdout and "per 1,000" in summary.stdout
    clean = tmp_path / "clean.jsonl"
    env = gym.make("CartPole-v1")
    env = govgym.GovernedEnv(env, "cartpole-envelope", audit_path=str(clean))
    env.reset(seed=0)
    env.step(0)
    env.close()
    quiet = run("audit", "summary", str(clean))
    assert quiet.returncode == 0 and "violations by rule: none" in quiet.stdout
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"step":4', '"step":40')
    path.write_text("\n".join(lines) + "\n")
    broken = run("audit", "verify", str(path))
    assert broken.returncode == 1 and f"{path}:5: chain broken" in broken.stderr
    summary = run("audit", "summary", str(path))
    assert summary.returncode == 1 and "chain BROKEN" in summary.stdout
    assert (f"{path}:5: chain broken: record content does not match its hash; the summary "
            "counts only the 4 record(s) before it") in summary.stderr
    as_json = json.loads(run("audit", "summary", "--json", str(path)).stdout)
    assert as_json["chain_ok"] is False and as_json["chain_broken_at_line"] == 5
    assert as_json["decisions"] == 4 and "does not match" in as_json["chain_problem"]
    if Path("/dev/null").exists():  # a device, not a missing file
        device = run("audit", "verify", "/dev/null")
        assert device.returncode == 2 and "not a regular file" in device.stderr
    missing = run("audit", "verify", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr



def test_audit_verify_against_a_last_hash_kept_apart_finds_cut_off_records(tmp_path: Path) -> None:
    """A hash chain cannot show that its last records were removed (a file cut at a line
    end verifies); the last hash, kept apart from the log, can."""
    path = tmp_path / "audit.jsonl"
    env = govgym.GovernedEnv(gym.make("CartPole-v1"), "cartpole-envelope", audit_path=path)
    env.reset(seed=0)
    for step in range(6):
        env.step(step % 2)
    env.close()
    kept = env.recorder.last_hash  # type: ignore[union-attr]  # after close: its close record
    log = govgym.audit.read(path)
    assert log.last_hash == kept and log.records_after(kept) == 0
    whole = run("audit", "verify", str(path), "--last-hash", kept)
    assert whole.returncode == 0 and f"last hash {kept}" in whole.stdout
    assert "is the last one" in whole.stdout
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))  # the last two records removed: the chain holds,
    # and without its close record the session is reported as not closed
    unclosed = run("audit", "verify", str(path))
    assert unclosed.returncode == 1 and "NOT CLOSED" in unclosed.stderr
    assert run("audit", "verify", "--allow-open", str(path)).returncode == 0
    cut = run("audit", "verify", str(path), "--last-hash", kept)
    assert cut.returncode == 1 and f"no record has the hash {kept}" in cut.stderr
    assert govgym.audit.read(path).records_after(kept) is None
    path.write_text("".join(lines))
    again = govgym.GovernedEnv(gym.make("CartPole-v1"), "cartpole-envelope", audit_path=path)
    again.reset(seed=1)
    again.step(0)
    again.close()  # the log went on from the kept record: fine, and said
    later = run("audit", "verify", str(path), "--last-hash", kept)
    assert later.returncode == 0 and "followed by 1 decision(s)" in later.stdout
    assert run("audit", "verify", str(path), "--last-hash", "abc").returncode == 2


def test_bad_arguments_exit_2() -> None:
    assert run("policy").returncode == 2
    assert run("frobnicate").returncode == 2


def test_sql_check_verdicts_and_exit_codes() -> None:
    pii = run("sql", "check", "SELECT ssn FROM customers")
    assert pii.returncode == 1 and "pii_read" in pii.stdout and "engine would deny" in pii.stdout
    fine = run("sql", "check", "SELECT name FROM customers WHERE city = 'Oslo'")
    assert fine.returncode == 0 and "verdict: allow" in fine.stdout
    # the check runs nothing: it must not promise what only running decides (was "engine
    # would allow it" for a write the engine's row cap refuses)
    assert "checked when the statement runs" in fine.stdout
    wipe = run("sql", "check", "--policy", "sql-guarded-writes", "DELETE FROM orders")
    assert wipe.returncode == 1 and "verdict: block" in wipe.stdout
    no_sql_rule = run("sql", "check", "--policy", "empty", "SELECT 1")
    assert no_sql_rule.returncode == 2 and "has no sql rule" in no_sql_rule.stderr
def test_audit_summary_json_of_a_nan_cost_is_strict_json(tmp_path: Path) -> None:
    """A log whose records hold a NaN cost sums to NaN, and ``json.dumps`` writes that
    as the bare word NaN, which strict JSON readers (jq, JavaScript) reject: ``--json``
    writes it as the recorder does, the string "NaN"."""
    path = tmp_path / "audit.jsonl"
    with Recorder(path) as rec:
        rec.append(0, 0, [0], "warn", cost=float("nan"))
    result = run("audit", "summary", "--json", str(path))
    assert result.returncode == 0
    summary = json.loads(result.stdout, parse_constant=lambda word: pytest.fail(word))
    assert summary["total_cost"] == "NaN" and summary["episodes"] == 1
    text = run("audit", "summary", str(path))
    assert text.returncode == 0 and "total cost nan" in text.stdout


def test_a_reader_that_goes_away_is_no_read_error(tmp_path: Path) -> None:
    """Was a bug: `govgym policy show NAME | head -1` printed "cannot read None: Broken
    pipe" and exited 2, as if a file could not be read."""
    big = tmp_path / "big.yaml"  # shown, it is far larger than a pipe's buffer
    big.write_text("name: big\nrules:\n" + "".join(
        f"  - {{kind: forbidden_actions, name: r{i}, values: [{i}]}}\n" for i in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "govgym", "policy", "show", str(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()  # as `head -c 1` does
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert stderr == ""
