"""The flight recorder: hash chain, tampering, torn lines, summaries."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from govgym.audit import GENESIS, Recorder, read, strict_json, summarize, summarize_action, summarize_meaning
from govgym.cli import main


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
    without_close(path)
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


def test_summary_counts_the_episodes_of_two_runs_that_share_a_run_id(tmp_path: Path) -> None:
    """Was a bug: episodes were counted as distinct (run, episode) pairs, so a script
    run twice with the same ``run_id`` on one log (its episodes numbered from 0 again)
    reported half its episodes. The same run twice, with two episodes, then one."""
    path = tmp_path / "a.jsonl"
    for episodes in (2, 1):
        with Recorder(path, run_id="same") as rec:
            for episode in range(episodes):
                for step in range(3):
                    rec.append(episode, step, [0], "allow")
                rec.flush()
    summary = summarize(read(path).records)
    assert summary["decisions"] == 9 and summary["episodes"] == 3


def test_summary_takes_the_nan_and_infinite_costs_its_recorder_writes(tmp_path: Path) -> None:
    """Was a bug: the recorder writes a NaN or infinite cost as the string "NaN" /
    "Infinity" (strict JSON has no such number), and ``summarize`` then refused the
    whole log ("cost is not a number"), so a log that recorded a broken cost could not
    be summarised at all. A summary of it shows the total as NaN; a string that is not
    one of those three is still refused."""
    path = tmp_path / "a.jsonl"
    with Recorder(path) as rec:
        rec.append(0, 0, [0], "allow", cost=1.0)
        rec.append(0, 1, [0], "warn", cost=float("inf"))
    assert math.isinf(summarize(read(path).records)["total_cost"])
    with Recorder(path) as rec:
        rec.append(0, 2, [0], "warn", cost=float("nan"))
    records = read(path).records
    assert [r["cost"] for r in records] == [1.0, "Infinity", "NaN"]
    assert math.isnan(summarize(records)["total_cost"])
    with pytest.raises(ValueError, match="cost is not a number"):
        summarize([*records, {**records[0], "cost": "1.0"}])


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


# -- the record's text ---------------------------------------------------------------------

RECORD_KEYS = ["seq", "time", "run", "episode", "step", "agent", "proposal", "verdict", "cost",
               "reward_delta", "violations", "prev", "hash"]


def lines_of(path: Path) -> list[str]:
    """Every line of the log, its sessions' close records too."""
    return path.read_text(encoding="utf-8").splitlines()


def decision_lines(path: Path) -> list[str]:
    """The log's decision records, without the close record that ends each session."""
    return [line for line in lines_of(path) if '"event":"close"' not in line]


def without_close(path: Path) -> None:
    """The log as a crash leaves it: no session's close record (a crash writes none)."""
    path.write_text("".join(f"{line}\n" for line in decision_lines(path)), encoding="utf-8")


def test_record_text_is_compact_json_in_the_documented_order(tmp_path: Path) -> None:
    import time

    path = tmp_path / "a.jsonl"
    before = time.time()
    with Recorder(path, run_id="r") as rec:
        rec.append(3, 7, [1], "warn", [VIOLATION], 1.0, -0.5)
    after = time.time()
    (line,) = decision_lines(path)
    record = json.loads(line)
    assert list(record) == RECORD_KEYS
    assert ', "' not in line and '": ' not in line  # no spaces between items
    assert line.startswith('{"seq":0,"time":') and '"run":"r","episode":3,"step":7,' in line
    assert '"verdict":"warn","cost":1.0,"reward_delta":-0.5,"violations":[{' in line
    assert isinstance(record["time"], float) and before - 1e-6 <= record["time"] <= after + 1e-6
    assert record["violations"] == [VIOLATION]
    assert list(record["violations"][0]) == ["rule", "code", "severity", "cost", "stage",
                                             "executed", "message"]


VIOLATION = {"rule": "envelope", "code": "out_of_bounds", "severity": "high",
             "message": "pole_angle=0.1312 outside [-0.12, 0.12]", "cost": 1.0,
             "stage": "post", "executed": True}

# (append arguments, the record's values as read back), for shapes GovernedEnv and users write
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"proposal": [0], "verdict": "allow"},
     {"proposal": [0], "verdict": "allow", "cost": 0.0, "reward_delta": 0.0, "violations": []}),
    ({"proposal": [2], "verdict": "allow", "reward_delta": 0.25, "agent": "agent_1"},
     {"proposal": [2], "agent": "agent_1", "reward_delta": 0.25}),
    ({"proposal": [0.5, -1.0, 0.0], "verdict": "allow"}, {"proposal": [0.5, -1.0, 0.0]}),
    ({"proposal": [True], "verdict": "allow"}, {"proposal": [True]}),
    ({"proposal": [1.0], "verdict": "allow"}, {"proposal": [1.0]}),
    ({"proposal": {"action": [3, 1], "sql": 'SELECT "ü"\n\tFROM t -- \\ \x01'},
      "verdict": "block", "violations": [{**VIOLATION, "stage": "pre", "executed": False}],
      "cost": 2, "reward_delta": -1, "extra": {"executed_action": None}},
     {"proposal": {"action": [3, 1], "sql": 'SELECT "ü"\n\tFROM t -- \\ \x01'}, "cost": 2.0,
      "reward_delta": -1.0, "violations": [{**VIOLATION, "stage": "pre", "executed": False}],
      "extra": {"executed_action": None}}),
    ({"proposal": [1], "verdict": "warn", "cost": 1.0, "reward_delta": -0.5,
      "violations": [VIOLATION, {**VIOLATION, "message": 'quote " and ✓', "cost": 0.5}]},
     {"violations": [VIOLATION, {**VIOLATION, "message": 'quote " and ✓', "cost": 0.5}]}),
    ({"proposal": [1], "verdict": "warn",  # the kernel's five fields, in another key order
      "violations": [{"message": "m", "cost": 3, "severity": "low", "code": "c", "rule": "r"}]},
     {"violations": [{"rule": "r", "code": "c", "severity": "low", "cost": 3.0, "message": "m"}]}),
    ({"proposal": [1], "verdict": "warn",  # an unusual violation: written as it is
      "violations": [{**VIOLATION, "executed": 1}, {"rule": "r", "note": ["x"]}]},
     {"violations": [{**VIOLATION, "executed": 1}, {"rule": "r", "note": ["x"]}]}),
    ({"proposal": [1], "verdict": "allow", "cost": -0.0, "reward_delta": float("nan")},
     {"cost": 0.0}),
]


@pytest.mark.parametrize("kwargs, expected", CASES)
def test_values_read_back_as_appended(tmp_path: Path, kwargs: dict[str, Any],
                                      expected: dict[str, Any]) -> None:
    path = tmp_path / "a.jsonl"
    with Recorder(path, run_id="r") as rec:
        rec.append(episode=1, step=2, **kwargs)
        rec.append(episode=1, step=3, **kwargs)  # the second one from the caches
    log = read(path)
    assert log.ok and len(log.records) == 2
    first, second = decision_lines(path)
    assert first[first.index(',"run"'):first.index(',"prev"')].replace('"step":2', '"step":3') \
        == second[second.index(',"run"'):second.index(',"prev"')]
    def exactly(value: Any) -> str:  # tells 1 from 1.0 and True
        return json.dumps(value, sort_keys=True)

    for record in log.records:
        assert list(record)[:10] == RECORD_KEYS[:10]
        assert record["run"] == "r" and record["episode"] == 1
        assert record["agent"] == kwargs.get("agent")
        for key, value in expected.items():
            assert exactly(record[key]) == exactly(value), key
        if kwargs.get("reward_delta") != kwargs.get("reward_delta"):  # NaN, as strict JSON
            assert record["reward_delta"] == "NaN" and '"cost":0.0,' in first


def test_every_record_is_strict_json(tmp_path: Path) -> None:
    """Was a bug: NaN and infinities were written as the bare tokens NaN / Infinity (not
    JSON: jq and most parsers reject the line), and an int too long to print (a world's
    describe() can return one) made append raise, losing the record."""
    path = tmp_path / "a.jsonl"
    with Recorder(path, run_id="r") as rec:
        rec.append(0, 0, {"action": np.array([np.nan, 1.0]), "meaning": {"v": np.inf}},
                   "allow", reward_delta=float("-inf"))
        rec.append(0, 1, {"action": [1], "meaning": {"big": 10**5000}}, "allow")
        rec.append(0, 2, [0], "allow")
        rec.append(0, 3, [10**5000], "allow")  # was ValueError: the one-int fast path
        rec.append(10**5000, 4, [1], "allow")

    def no_constants(token: str) -> Any:
        raise AssertionError(f"not strict JSON: {token}")

    for line in lines_of(path):
        json.loads(line, parse_constant=no_constants)
    log = read(path)
    assert log.ok and [r["step"] for r in log.records] == [0, 1, 2, 3, 4]
    first, second, _, fourth, fifth = log.records
    huge = f"<int of {(10**5000).bit_length()} bits>"
    assert fourth["proposal"] == [huge] and fifth["episode"] == huge
    assert first["proposal"] == {"action": ["NaN", 1.0], "meaning": {"v": "Infinity"}}
    assert first["reward_delta"] == "-Infinity"
    assert second["proposal"]["meaning"]["big"] == f"<int of {(10**5000).bit_length()} bits>"


def test_strict_json_is_what_records_hold() -> None:
    """The public form of the recorder's strict JSON (the CLI's ``--json`` uses it):
    non-finite numbers as json.dumps spells them, keys JSON cannot take as their str."""
    value = {"a": float("nan"), (1, 2): [np.float64("inf"), -math.inf], np.int64(3): 1.5}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was a NumPy RuntimeWarning for np.float64("inf")
        strict = strict_json(value)
    assert strict == {"a": "NaN", "(1, 2)": ["Infinity", "-Infinity"], "3": 1.5}
    json.dumps(strict, allow_nan=False)


def test_unusual_types_take_the_general_path_and_write_the_same_text(tmp_path: Path) -> None:
    """NumPy numbers make the fast path step aside; the text must not change."""
    import numpy as np

    plain, numpy = tmp_path / "plain.jsonl", tmp_path / "numpy.jsonl"
    args = ([1], "warn", [VIOLATION], 1.0, -0.5)
    with Recorder(plain, run_id="r") as a, Recorder(numpy, run_id="r") as b:
        for step in range(3):
            a.append(4, step, *args)
            b.append(np.int64(4), np.int64(step), *args[:3], np.float64(1.0), np.float32(-0.5))
        a.append(None, 3, None, "allow", agent=None)
        b.append(None, np.int32(3), None, "allow", agent=None)
    strip = [line[line.index(',"run"'):line.index(',"prev"')]
             for path in (plain, numpy) for line in decision_lines(path)]
    assert strip[:4] == strip[4:]
    assert read(numpy).ok


def test_a_record_holds_the_values_of_its_step(tmp_path: Path) -> None:
    """Serialised at append: changing the caller's lists afterwards changes nothing."""
    path = tmp_path / "a.jsonl"
    violations = [dict(VIOLATION)]
    proposal = {"action": [1], "sql": "SELECT 1"}
    with Recorder(path, flush_every=100) as rec:
        rec.append(0, 0, proposal, "warn", violations, 1.0)
        violations[0]["message"] = "changed"
        violations.append(dict(VIOLATION))
        proposal["sql"] = "DROP TABLE t"
    record = read(path).records[0]
    assert record["violations"] == [VIOLATION] and record["proposal"]["sql"] == "SELECT 1"


def test_bad_numbers_raise_and_leave_the_chain_intact(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with Recorder(path) as rec:
        rec.append(0, 0, [1], "allow")
        with pytest.raises(ValueError):
            rec.append(0, 1, [1], "allow", cost="lots")  # type: ignore[arg-type]
        rec.append(0, 1, [1], "allow")
    log = read(path)
    assert log.ok and [r["seq"] for r in log.records] == [0, 1]


def test_records_written_counts_what_reached_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with Recorder(path, flush_every=4) as rec:
        for step in range(6):
            rec.append(0, step, [0], "allow")
        assert rec.records_written == 4 and len(lines_of(path)) == 4
        rec.flush()
        assert rec.records_written == 6 and len(lines_of(path)) == 6


def test_a_large_flush_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with Recorder(path, flush_every=10_000) as rec:
        for step in range(1000):
            rec.append(step // 100, step % 100, [step % 3], "allow", reward_delta=step / 7)
    log = read(path)
    assert log.ok and [r["seq"] for r in log.records] == list(range(1000))
    assert [r["episode"] for r in log.records[::100]] == list(range(10))


def test_caches_stay_bounded(tmp_path: Path) -> None:
    from govgym.audit import recorder as module

    with Recorder(tmp_path / "a.jsonl", flush_every=100_000) as rec:
        for step in range(module._CACHE_LIMIT + 100):
            rec.append(0, step, [step], f"verdict-{step}", cost=step / 3)
    assert len(module._SUMMARIES) <= module._CACHE_LIMIT
    assert len(module._STRINGS) <= module._CACHE_LIMIT
    log = read(tmp_path / "a.jsonl")
    assert log.ok and log.records[-1]["verdict"] == f"verdict-{module._CACHE_LIMIT + 99}"
    for cache in (module._SUMMARIES, module._STRINGS):  # leave room for the other tests
        cache.clear()


def test_a_log_in_an_older_layout_is_verified_and_continued(tmp_path: Path) -> None:
    """The chain is over the text, whatever its layout: earlier logs stay readable."""
    import hashlib

    path = tmp_path / "a.jsonl"
    prev, lines = GENESIS, []
    for seq in range(2):
        body = (f'{{"seq":{seq},"time":1795319450.267144,"run":"old","episode":0,"step":{seq},'
                f'"agent":null,"proposal":[1],"verdict":"warn","violations":[{{"rule": "r", '
                f'"code": "c", "severity": "high", "message": "m", "cost": 1.0}}],"cost":1.0,'
                f'"reward_delta":-0.5,"prev":"{prev}"')
        prev = hashlib.sha256(body.encode()).hexdigest()
        lines.append(f'{body},"hash":"{prev}"}}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read(path).ok
    with Recorder(path, run_id="new") as rec:
        rec.append(0, 0, [0], "allow")
    log = read(path)
    assert log.ok and [r["seq"] for r in log.records] == [0, 1, 2]
    assert log.records[2]["prev"] == log.records[1]["hash"]


class _NoStr:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    def __repr__(self) -> str:
        return "NoStr()"


def test_a_meaning_keeps_every_key_it_shows_and_says_what_it_leaves_out() -> None:
    """Were bugs: keys that are different but print the same (``1`` and ``"1"``) were
    merged, so one value was silently lost; a key whose ``str`` raises crashed the
    governed step; the top level had no bound at all; a nested mapping past 32 keys was
    cut with nothing in the record to say so."""
    summary = summarize_meaning({1: "int", "1": "str", "1 (int)": "taken", 2.5: "float"})
    assert summary == {"1": "str", "1 (int)": "taken", "1 (int 2)": "int", "2.5": "float"}
    assert list(summarize_meaning({_NoStr(): "v"}).values()) == ["v"]
    assert list(summarize_meaning({"k": {_NoStr(): "v"}})["k"].values()) == ["v"]

    wide = {f"k{i}": i for i in range(100)}
    top, nested = summarize_meaning(wide), summarize_meaning({"m": wide})["m"]
    for cut in (top, nested):
        assert len(cut) == 33 and cut["k31"] == 31 and "k32" not in cut
        assert cut["…"] == "100 keys: the first 32 kept"
    json.dumps(top)
    # a world's own key named "…" is kept, and the marker steps aside
    marked = summarize_meaning({"…": "mine", **wide})
    assert marked["…"] == "mine" and marked["… (str)"] == "101 keys: the first 32 kept"


def test_a_world_meaning_is_recorded_as_json_values_not_reprs(tmp_path: Path) -> None:
    meaning = {"sql": "SELECT 1", "level": 0, "write": np.bool_(True), "n": np.int64(3),
               "parts": {"verb": "count", "value": np.int64(2), "deep": {"a": 1}},
               "vector": np.arange(3), "long": "x" * 1000, "other": object}
    summary = summarize_meaning(meaning)
    assert summary["sql"] == "SELECT 1" and summary["level"] == 0 and summary["n"] == 3
    assert summary["write"] is True and summary["vector"] == [0, 1, 2]
    assert summary["parts"]["verb"] == "count" and summary["parts"]["value"] == 2
    assert isinstance(summary["parts"]["deep"], str)  # one level of mapping, then text
    assert summary["long"] == "x" * 1000 and summary["other"] == repr(object)
    json.dumps(summary)  # all of it is JSON

    path = tmp_path / "sql.jsonl"
    env = gym.make("Governed-SQL-v0", audit_path=str(path))
    env.reset(seed=0, options={"task": "count_rows:orders"})
    gold = env.unwrapped.gold_action()
    env.step(gold)
    env.close()
    (record,) = read(path).records
    meaning = record["proposal"]["meaning"]
    assert record["proposal"]["action"] == gold.tolist()
    assert meaning["sql"] == "SELECT COUNT(*) FROM orders"
    assert meaning["level"] == 0 and meaning["parts"]["verb"] == "count"


def test_a_long_statement_is_recorded_whole_and_a_cut_one_says_so(tmp_path: Path) -> None:
    """Was a bug (red-team): the record cut SQL at 256 characters with a bare '…', so a
    statement padded with a comment hid its real predicate from the audit log."""
    sql = "SELECT id FROM orders WHERE id = 1 /*" + " " * 300 + "*/ OR id BETWEEN 2 AND 240"
    path = tmp_path / "text.jsonl"
    env = gym.make("Governed-SQL-v0", audit_path=str(path), world_kwargs={"action_mode": "text"})
    env.reset(seed=0)
    env.step(sql)
    env.step("SELECT 1 -- " + "y" * 5000)  # over the statement limit and the record's
    env.close()
    first, second = read(path).records
    assert first["proposal"]["action"] == sql and first["proposal"]["meaning"]["sql"] == sql
    cut = second["proposal"]["action"]
    full = "SELECT 1 -- " + "y" * 5000
    assert cut.startswith(full[:4096]) and len(cut) < len(full)
    digest = hashlib.sha256(full.encode()).hexdigest()[:16]
    assert cut[4096:] == f"…[cut: {len(full)} chars, sha256 {digest}]"


class ImageAction(gym.Env):
    """A world whose action is a 32 x 32 grid and whose describe() returns an array."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (32, 32), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> Any:
        return np.zeros(2, np.float32), 0.0, False, False, {}

    def describe(self, action: Any) -> dict[str, Any]:
        return {"grid": np.asarray(action), "rows": [np.asarray(row) for row in action[:3]]}


def test_a_large_action_and_meaning_are_recorded_bounded(tmp_path: Path) -> None:
    """Was a bug (summarize_action bounded only the outer list): a 32 x 32 action was
    recorded whole, 1,024 numbers a record, and so was an array in a meaning."""
    from govgym import GovernedEnv

    path = tmp_path / "grid.jsonl"
    policy = {"name": "edge", "rules": [{"kind": "forbidden_actions",
                                         "ranges": [{"index": 0, "low": 0.5, "high": 1.0}]}]}
    env = GovernedEnv(ImageAction(), policy, audit_path=path)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(3):
        *_, info = env.step(env.action_space.sample())
    env.close()
    proposed = info["governance"]["proposed_action"]
    assert len(proposed) == 65 and proposed[-1] == "… 1024 values, shape (32, 32)"
    log = read(path)
    assert log.ok and len(log.records) == 3
    for record, line in zip(log.records, decision_lines(path), strict=True):
        assert len(line) < 6000, "a record of a bounded summary"
        grid = record["proposal"]["meaning"]["grid"]
        assert len(grid) == 65 and grid[-1].startswith("… 1024 values")
        assert record["proposal"]["action"] == grid
    small = np.arange(6).reshape(2, 3)
    assert summarize_meaning({"m": small})["m"] == [[0, 1, 2], [3, 4, 5]]  # small: kept whole


@pytest.mark.parametrize("junk, where", [
    ("hello, not a record", 2),  # text in the middle
    ("hello, not a record", 0),  # text before the first record
    ('{"seq":7,"time":1.0,"ru', 2),  # a cut-off record, but not the one a crash would write
])
def test_a_line_no_crash_leaves_breaks_the_chain(tmp_path: Path, junk: str, where: int) -> None:
    """Was a bug: every unreadable line counted as torn by a crash, so text inserted
    anywhere in a log verified as ok (`govgym audit verify` exited 0)."""
    path = tmp_path / "a.jsonl"
    write_log(path, n=4)
    lines = path.read_text().splitlines()
    lines.insert(where, junk)
    path.write_text("\n".join(lines) + "\n")
    log = read(path)
    assert not log.ok and log.first_broken == where + 1 and not log.torn
    assert len(log.records) == where and "crash" in (log.problem or "")
    assert main(["audit", "verify", str(path)]) == 1


@pytest.mark.parametrize(("edit", "line"), [
    (lambda lines: lines.__setitem__(0, b"\xef\xbb\xbf" + lines[0]), 1),  # a byte-order mark
    (lambda lines: lines.__setitem__(2, lines[2].replace(b'"verdict":', b'"verdict"\xff:')), 3),
    (lambda lines: lines.__setitem__(1, lines[1].replace(b'"verdict":', b'"verdict"')), 2),
])
def test_a_whole_record_made_unreadable_is_named_where_it_is(tmp_path: Path, edit, line: int) -> None:
    """Was a bug: a record whose line no longer parsed (a BOM before it, a byte that is not
    UTF-8, an edit that broke the JSON) counted as torn, and the chain was blamed on the
    line after it ("broken at 2" for a BOM on line 1)."""
    path = tmp_path / "a.jsonl"
    write_log(path, n=4)
    lines = path.read_bytes().splitlines()
    edit(lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    log = read(path)
    assert not log.ok and log.first_broken == line and not log.torn
    assert "not a hash-chained record" in (log.problem or "") and len(log.records) == line - 1


def test_a_crash_in_the_middle_then_a_resumed_recorder_verifies(tmp_path: Path) -> None:
    """The honest case beside the one above: a crash cuts the record being written,
    a recorder opened afterwards goes on from the last complete record."""
    path = tmp_path / "a.jsonl"
    with Recorder(path, run_id="first") as rec:
        for step in range(3):
            rec.append(0, step, [step], "allow")
    without_close(path)
    data = path.read_bytes()
    path.write_bytes(data[:data.rfind(b'"run"')])  # the third record cut after its seq
    with Recorder(path, run_id="second") as rec:
        rec.append(1, 0, [0], "allow")
    log = read(path)
    assert log.ok and log.torn == [3] and [r["seq"] for r in log.records] == [0, 1, 2]
    assert [r["run"] for r in log.records] == ["first", "first", "second"]
    # the crashed session is intact as far as it goes, and reported as not closed
    assert [(s.run, s.decisions, s.closed) for s in log.sessions] == [
        ("first", 2, False), ("second", 1, True)]
    assert main(["audit", "verify", str(path)]) == 1
    assert main(["audit", "verify", "--allow-open", str(path)]) == 0


def test_a_flush_that_fails_part_way_is_cut_back_and_written_once_later(tmp_path: Path) -> None:
    """A file size limit (as a full disk would) stops a flush in the middle of a record:
    the part written is cut back, the records stay buffered, and the next flush writes
    each record once (was: the part stayed and the retry wrote it again, a broken chain)."""
    resource = pytest.importorskip("resource")  # POSIX: a file size limit
    import signal

    path = tmp_path / "a.jsonl"
    rec = Recorder(path, run_id="r", flush_every=10_000)
    rec.append(0, 0, [0], "allow")
    rec.flush()
    begin = path.stat().st_size
    for step in range(1, 300):
        rec.append(0, step, [step], "allow")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (begin + 20_000, hard))
    try:
        with pytest.raises(OSError):
            rec.flush()
        assert path.stat().st_size == begin  # the part-written flush was cut back
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert rec.records_written == 1
    rec.close()
    log = read(path)
    assert log.ok, log.problem
    assert [r["seq"] for r in log.records] == list(range(300))


def test_a_log_with_crlf_line_ends_verifies_and_continues(tmp_path: Path) -> None:
    """A copy whose line ends became CRLF (git autocrlf, a Windows editor) holds the
    same records: the ``\\r`` is not part of any hashed text."""
    path = tmp_path / "a.jsonl"
    write_log(path, n=3)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    log = read(path)
    assert log.ok and not log.torn and [r["seq"] for r in log.records] == [0, 1, 2]
    with Recorder(path, run_id="more") as rec:
        rec.append(1, 0, [0], "allow")
    log = read(path)
    assert log.ok and [r["seq"] for r in log.records] == [0, 1, 2, 4]  # 3: the close record
    assert [s.closed for s in log.sessions] == [True, True]


def test_nesting_too_deep_to_parse_is_reported_not_raised(tmp_path: Path) -> None:
    import sys

    nested: Any = 0
    for _ in range(300):
        nested = [nested]
    path = tmp_path / "a.jsonl"
    with Recorder(path) as rec:
        rec.append(0, 0, [0], "allow")
        rec.append(0, 1, nested, "allow")  # written: within this Python's limit
    without_close(path)  # a crash: the deep record is the last one a resumed recorder finds
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(250)  # a reader whose stack allows less than the writer's did
    try:
        log = read(path)
        with Recorder(path, run_id="resumed") as rec:  # still finds the last record
            rec.append(1, 0, [0], "allow")
    finally:
        sys.setrecursionlimit(limit)
    assert not log.ok and log.first_broken == 2 and len(log.records) == 1
    assert "nested too deeply to parse" in (log.problem or "")
    log = read(path)
    assert log.ok and [r["seq"] for r in log.records] == [0, 1, 2]
    # a deeply nested line inserted into a log is inserted text, whatever the limit
    path.write_bytes(path.read_bytes() + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    log = read(path)
    assert not log.ok and log.first_broken == 5 and "text inserted" in (log.problem or "")
    assert main(["audit", "verify", str(path)]) == 1


def test_keys_json_cannot_take_are_written_as_text(tmp_path: Path) -> None:
    """A proposal or extra with a tuple, NumPy or NaN key is recorded, not lost."""
    path = tmp_path / "a.jsonl"
    proposal = {(1, 2): "a", np.int64(3): 1, float("nan"): 2, 1.5: 3, True: 4, None: 5, 7: 6}
    with Recorder(path) as rec:
        rec.append(0, 0, proposal, "allow", extra={"by_cell": {(0, 1): [1.0]}})
    (record,) = read(path).records
    assert record["proposal"] == {"(1, 2)": "a", "3": 1, "NaN": 2, "1.5": 3, "true": 4,
                                  "null": 5, "7": 6}
    assert record["extra"] == {"by_cell": {"(0, 1)": [1.0]}}


def test_summaries_of_text_object_and_tensor_arrays_are_bounded() -> None:
    texts = summarize_action(np.array(["x" * 10_000, "short"]))
    assert len(texts[0]) < 400 and texts[0].startswith("x" * 256) and "cut: 10000 chars" in texts[0]
    assert texts[1] == "short"
    assert summarize_action(np.array([["a", "b"], ["c", "d"]])) == [["a", "b"], ["c", "d"]]
    objects = np.empty(3, dtype=object)
    objects[:] = ["y" * 9_999, None, None]
    objects[1] = list(range(100_000))  # a list held in the array: a value, not a dimension
    held = summarize_action(objects)
    assert len(json.dumps(held)) < 1_000 and held[2] is None and "cut: " in held[1]
    assert len(json.dumps(summarize_action(np.array([b"ab" * 1_000])))) < 400
    assert len(json.dumps(summarize_meaning({"texts": np.array(["z" * 9_000])}))) < 400
    nested: Any = 0
    for _ in range(100_000):
        nested = [nested]
    assert summarize_action(nested) == "<list: repr failed with RecursionError>"
    torch = pytest.importorskip("torch")
    big = summarize_action(torch.zeros(10, 100_000))
    assert len(big) == 65 and big[-1] == "… 1000000 values, shape (10, 100000)"
    assert summarize_action(torch.tensor([1.5, 2.0])) == [1.5, 2.0]
    assert summarize_action(torch.tensor(3)) == [3]


def _three_records(path: Path) -> list[bytes]:
    with Recorder(path, run_id="a") as rec:
        for step in range(3):
            rec.append(0, step, [0], "allow")
    return path.read_bytes().split(b"\n")[:3]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("where", ["last_line", "inside_last_line", "last_newline"])
def test_the_zeros_a_power_loss_leaves_at_the_end_are_a_crash_not_tampering(
        tmp_path: Path, where: str, crlf: bool) -> None:
    """Was a bug: after a power loss, file systems with delayed allocation (ext4, XFS)
    can leave the unwritten end of a file as NUL bytes, over the last line(s) and their
    newlines. The reader called such a line inserted text and broke the chain, and the
    recorder, resuming, glued its records after it. NUL padding at the end of a line is
    now what a crash leaves: the line is torn (or, when a whole record precedes the
    zeros, that record counts), and a recorder opened afterwards continues the chain
    from the last record the reader accepts."""
    path = tmp_path / "a.jsonl"
    a, b, c = _three_records(path)
    if crlf:  # a CRLF copy (Windows, git) that lost its end: zeros after a record's \r
        a, b, c = a + b"\r", b + b"\r", c + b"\r"
    crashed = {  # what the file holds after the power loss
        "last_line": a + b"\n" + b + b"\n" + b"\0" * (len(c) + 1),
        "inside_last_line": a + b"\n" + b + b"\n" + c[:40] + b"\0" * (len(c) - 39),
        "last_newline": a + b"\n" + b + b"\0" * (len(c) + 2),
    }[where]
    path.write_bytes(crashed)
    log = read(path)
    assert log.ok, log.problem
    assert [r["step"] for r in log.records] == [0, 1]
    assert log.torn == ([] if where == "last_newline" else [3])
    with Recorder(path, run_id="b") as rec:
        rec.append(1, 0, [0], "allow")
    log = read(path)
    assert log.ok, log.problem
    assert [r["seq"] for r in log.records] == [0, 1, 2] and log.records[-1]["run"] == "b"


def test_zeros_are_crash_debris_only_at_the_end_of_a_line(tmp_path: Path) -> None:
    """NULs before a record, or a record's prefix with a different sequence number, are
    still not what a crash leaves."""
    path = tmp_path / "a.jsonl"
    a, b, c = _three_records(path)
    path.write_bytes(a + b"\n" + b"\0\0" + b + b"\n" + c + b"\n")
    assert not read(path).ok and read(path).first_broken == 2
    path.write_bytes(a + b"\n" + b[:40].replace(b'"seq":1', b'"seq":7') + b"\0" * 9 + b"\n"
                     + b + b"\n")
    log = read(path)
    assert not log.ok and "sequence number 7, expected 1" in log.problem


@pytest.mark.parametrize("inserted", [b"", b"\r"], ids=["empty", "cr"])
def test_an_empty_line_inserted_after_a_record_breaks_the_chain(tmp_path: Path,
                                                                 inserted: bytes) -> None:
    """Was a gap: empty lines (or a lone CR) between records were skipped, so an edited
    log verified; the recorder writes none, and no crash leaves one."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([*lines[:2], inserted, *lines[2:]]))
    log = read(path)
    assert not log.ok and log.first_broken == 3 and "empty line" in (log.problem or "")
    assert len(log.records) == 2
    path.write_bytes(b"\n" + b"\n".join(lines))  # before any record: still no record lost
    assert read(path).ok and len(read(path).records) == 4
