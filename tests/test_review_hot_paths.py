"""Adversarial review of the two rewritten hot paths: ``Recorder.append`` (hand-built JSON
lines with caches) and ``GovernedEnv.step``/``reset`` (info from templates, no-proposal
and no-rules paths).

Each bug the review found is a test here (all fixed since); the other tests pin
behaviour that holds and that the rewrites could easily break.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import govgym
from govgym import GovernedEnv
from govgym.audit import Recorder, read
from govgym.kernel import Kernel, PolicyError, Severity, Violation
from govgym.rules import RULE_KINDS, Rule
from govgym.shaping import Shaping


def records_of(path: Path) -> list[dict[str, Any]]:
    log = read(path)
    assert log.ok, log.problem
    return log.records


# -- Recorder: the written text against an independent reference -------------------------

_V7 = ["rule", "code", "severity", "cost", "stage", "executed", "message"]
_V5 = ["rule", "code", "severity", "cost", "message"]
_TEXT_FIELDS = ("rule", "code", "severity", "message")


def _ref_number(value: Any) -> float | str:
    number = float(value)
    if number - number != 0.0:  # strict JSON: a non-finite number as json.dumps spells it
        return json.dumps(number)
    return 0.0 if number == 0.0 else number


def _ref_violation(v: dict[str, Any]) -> dict[str, Any]:
    """The documented layout: the kernel's fields (plus stage, executed) in a fixed order."""
    texts = all(isinstance(v.get(k), str) for k in _TEXT_FIELDS)
    if texts and set(v) == set(_V7) and type(v["executed"]) is bool and isinstance(v["stage"], str):
        order = _V7
    elif texts and set(v) == set(_V5):
        order = _V5
    else:  # as it is, strict JSON: a non-finite float as a string
        return {k: json.dumps(x) if isinstance(x, float) and x - x != 0.0 else x for k, x in v.items()}
    return {k: _ref_number(v[k]) if k == "cost" else v[k] for k in order}


def _reference_line(record: dict[str, Any], **appended: Any) -> str:
    """``json.dumps`` of the record the docstring describes (time and hashes taken from
    the record itself)."""
    expected = {
        "seq": record["seq"], "time": 0, "run": appended["run"], "episode": appended["episode"],
        "step": appended["step"], "agent": appended["agent"], "proposal": appended["proposal"],
        "verdict": appended["verdict"], "cost": _ref_number(appended["cost"]),
        "reward_delta": _ref_number(appended["delta"]),
        "violations": [_ref_violation(v) for v in appended["violations"]],
        "prev": record["prev"], "hash": record["hash"],
    }
    return json.dumps(expected, ensure_ascii=False, separators=(",", ":"))


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)  # surrogates: below
_number = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e300, 5e-324]), st.booleans(),
                    st.integers(-10**6, 10**6), st.floats(allow_nan=False))
_violation = st.fixed_dictionaries(
    {"rule": st.sampled_from(["r", "é", 'q"\\']) | _text, "code": _text,
     "severity": st.sampled_from(["high", "low"]) | _text, "message": _text, "cost": _number},
    optional={"stage": st.sampled_from(["pre", "post"]), "executed": st.booleans() | st.integers(0, 1)})


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(episodes=st.lists(st.integers(0, 2), min_size=1, max_size=3),
       step=st.integers(0, 2**40), action=st.integers(-3, 3) | st.booleans(),
       verdict=st.sampled_from(["allow", "warn"]) | _text, cost=_number, delta=_number,
       agent=st.none() | st.sampled_from(["a", "b"]) | _text, violations=st.lists(_violation, max_size=2),
       runs=st.tuples(_text.filter(bool), _text.filter(bool)))
def test_every_line_is_the_documented_json_whatever_the_caches_hold(
        tmp_path_factory: pytest.TempPathFactory, episodes: list[int], step: int, action: Any,
        verdict: str, cost: Any, delta: Any, agent: str | None, violations: list[dict[str, Any]],
        runs: tuple[str, str]) -> None:
    """Two recorders with different run ids, appending alternately, the same values twice
    (the second time from the caches): each line is exactly ``json.dumps`` of the record
    in the documented layout, and each log verifies."""
    folder = tmp_path_factory.mktemp("fuzz")
    paths = [folder / "a.jsonl", folder / "b.jsonl"]
    appended: list[list[dict[str, Any]]] = [[], []]
    with Recorder(paths[0], run_id=runs[0]) as a, Recorder(paths[1], run_id=runs[1]) as b:
        for episode in episodes:
            for _ in range(2):
                for i, rec in enumerate((a, b)):
                    rec.append(episode, step, [action], verdict, violations, cost, delta, agent)
                    appended[i].append(dict(run=runs[i], episode=episode, step=step, agent=agent,
                                            proposal=[action], verdict=verdict, cost=cost,
                                            delta=delta, violations=violations))
    for path, calls, run_id in zip(paths, appended, runs, strict=True):
        *lines, closing = path.read_text(encoding="utf-8").split("\n")[:-1]  # not splitlines(): U+2028
        records = records_of(path)
        assert len(lines) == len(records) == len(calls)
        close = json.loads(closing)  # the session's close record, as documented
        assert list(close) == ["seq", "time", "run", "event", "decisions", "by", "govgym", "prev",
                               "hash"]
        assert (close["run"], close["event"], close["decisions"], close["by"]) == (
            run_id, "close", len(calls), "close")
        assert close["prev"] == records[-1]["hash"] == hashlib.sha256(
            lines[-1][:lines[-1].index(',"hash":')].encode()).hexdigest()
        for line, record, call in zip(lines, records, calls, strict=True):
            written = re.sub(r'"time":[0-9.e-]+,', '"time":0,', line)
            assert written == _reference_line(record, **call)


# -- Recorder: bugs ---------------------------------------------------------------------

@pytest.mark.parametrize("field", ["message", "agent", "proposal"])
def test_a_lone_surrogate_is_recorded_not_raised(tmp_path: Path, field: str) -> None:
    odd = "caf\udce9"
    violation = {"rule": "r", "code": "c", "severity": "high", "cost": 1.0, "stage": "pre",
                 "executed": False, "message": odd if field == "message" else "m"}
    path = tmp_path / "a.jsonl"
    with Recorder(path, run_id="r") as rec:
        rec.append(0, 0, {"sql": odd} if field == "proposal" else [1], "block", [violation], 1.0,
                   agent=odd if field == "agent" else None)
    (record,) = records_of(path)
    found = {"message": record["violations"][0]["message"], "agent": record["agent"],
             "proposal": record["proposal"]}
    assert found[field] in (odd, {"sql": odd})


def test_a_surrogate_in_sql_text_is_blocked_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "sql.jsonl"
    env = gym.make("Governed-SQL-v0", world_kwargs={"action_mode": "text"}, audit_path=str(path))
    env.reset(seed=0)
    *_, info = env.step("SELECT name FROM products WHERE name = 'caf\udce9'")
    env.close()
    assert info["governance"]["verdict"] == "block"
    assert records_of(path)[0]["verdict"] == "block"


def test_a_line_torn_inside_a_utf8_character_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    violation = {"rule": "r", "code": "c", "severity": "high", "message": "pole ü", "cost": 1.0}
    with Recorder(path, run_id="r") as rec:
        for step in range(3):
            rec.append(0, step, [1], "warn", [violation], 1.0)
    data = path.read_bytes()
    path.write_bytes(data[:data.rfind("ü".encode()) + 1])  # crash after the first byte of "ü"
    log = read(path)
    assert log.ok and log.torn_tail and len(log.records) == 2
    with Recorder(path, run_id="next") as rec:
        rec.append(1, 0, [0], "allow")
    log = read(path)
    assert log.ok and log.torn == [3] and [r["seq"] for r in log.records] == [0, 1, 2]


@pytest.mark.parametrize("where", ["last", "middle"])
def test_a_whole_json_line_without_its_hash_breaks_the_chain(tmp_path: Path, where: str) -> None:
    path = tmp_path / "a.jsonl"
    with Recorder(path, run_id="r") as rec:
        for step in range(3):
            rec.append(0, step, [step], "block" if step == 2 else "allow")
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    if where == "last":  # the block becomes an allow, its hash dropped
        record = json.loads(lines[2])
        del record["hash"]
        lines[2] = json.dumps({**record, "verdict": "allow"}, separators=(",", ":"))
    else:
        lines.insert(1, json.dumps({"seq": 1, "verdict": "allow", "note": "not from the recorder"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert not read(path).ok


def test_a_vector_env_with_one_audit_path_writes_a_verifiable_log(tmp_path: Path) -> None:
    """Two recorders on one file would interleave two chains: the second is refused, and
    the ``{run}`` template gives each env a file of its own."""
    path = tmp_path / "vec.jsonl"
    with pytest.raises(RuntimeError, match=r"already open by another recorder.*\{run\}"):
        gym.make_vec("Governed-CartPole-v1", num_envs=2, vectorization_mode="sync",
                     audit_path=str(path))
    vec = gym.make_vec("Governed-CartPole-v1", num_envs=2, vectorization_mode="sync",
                       audit_path=str(tmp_path / "vec-{run}.jsonl"))
    vec.reset(seed=0)
    for _ in range(3):
        vec.step(np.array([0, 1]))
    vec.close()
    logs = sorted(tmp_path.glob("vec-*.jsonl"))
    assert len(logs) == 2 and all(read(log).ok and len(read(log).records) == 3 for log in logs)


def test_append_after_close_raises(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "a.jsonl")
    rec.append(0, 0, [0], "allow")
    rec.close()
    with pytest.raises(ValueError, match="closed"):
        rec.append(0, 1, [0], "allow")


# -- GovernedEnv: what holds ------------------------------------------------------------

FORBID_1 = {"kind": "forbidden_actions", "values": [1]}
TIGHT_VELOCITY = {"kind": "state_bounds", "name": "velocity", "severity": "low",
                  "bounds": [{"index": 1, "low": -0.1, "high": 0.1}]}
CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "no rules": (None, {}),
    "post only": ({"name": "p", "rules": [TIGHT_VELOCITY]}, {}),
    "warn": ({"name": "p", "rules": [{**FORBID_1, "severity": "low"}, TIGHT_VELOCITY]}, {}),
    "block": ({"name": "p", "rules": [FORBID_1, TIGHT_VELOCITY]}, {}),
    "replace": ({"name": "p", "rules": [FORBID_1, TIGHT_VELOCITY]}, {"intervention": {"high": "replace"}}),
    "terminate": ({"name": "p", "rules": [{**FORBID_1, "severity": "critical"}]}, {}),
    "monitor": ({"name": "p", "rules": [{**FORBID_1, "severity": "critical"}, TIGHT_VELOCITY]},
                {"intervention": "monitor"}),
    "box repair": ("pendulum-energy", {"safe_action": [0.0]}),
}


def _vandalise(info: dict[str, Any]) -> None:
    """What a careless caller might do to an info it was given."""
    gov = info["governance"]
    for v in gov["violations"]:
        v["message"] = v["rule"] = "MUTATED"
    gov["violations"].append("MUTATED")
    for key in ("proposed_action", "executed_action"):
        if isinstance(gov[key], list):
            gov[key].append("MUTATED")
    gov["verdict"] = "MUTATED"
    info["cost"] = info["episode_cost"] = "MUTATED"
    info["MUTATED"] = True


@pytest.mark.parametrize("case", CASES)
def test_each_record_matches_its_steps_info_and_no_info_shares_state(tmp_path: Path, case: str) -> None:
    """For every verdict path: the audit record of a step says what its info says, even
    though the caller mangles every info (reset's too) right after receiving it; and no
    later info, reset info or record shows the damage."""
    policy, kwargs = CASES[case]
    box = case == "box repair"
    world = gym.make("Pendulum-v1") if box else gym.make("CartPole-v1")
    path = tmp_path / "a.jsonl"
    env = GovernedEnv(world, policy, audit_path=path, cost_limit=2.0, **kwargs)
    actions = ([np.array([a], dtype=np.float32) for a in (2.2, 0.5, -2.1, 1.9)] if box
               else [1, 0, 1, 1, 0, 1])
    seen: list[dict[str, Any]] = []
    for episode in range(2):
        _, info = env.reset(seed=episode)
        seen.append(copy.deepcopy(info))
        _vandalise(info)
        for action in actions:
            *_, terminated, truncated, info = env.step(action)
            seen.append(copy.deepcopy(info))
            _vandalise(info)
            if terminated or truncated:
                break
    env.close()
    assert "MUTATED" not in repr(seen) and "MUTATED" not in path.read_text(encoding="utf-8")
    steps = [info for info in seen if info["governance"]["proposed_action"] is not None]
    records = records_of(path)
    assert len(records) == len(steps)
    for record, info in zip(records, steps, strict=True):
        gov = info["governance"]
        assert info["cost_limit"] == 2.0
        assert record["verdict"] == gov["verdict"] and record["violations"] == gov["violations"]
        assert record["cost"] == info["cost"] and record["reward_delta"] == gov["reward_delta"]
        assert record["proposal"] == pytest.approx(gov["proposed_action"])
        executed = record["extra"]["executed_action"] if "extra" in record else record["proposal"]
        assert executed == (None if gov["executed_action"] is None
                            else pytest.approx(gov["executed_action"]))
    if case in ("block", "replace", "terminate", "box repair"):
        assert any(r.get("extra") for r in records)  # the path under test was taken


@pytest.mark.parametrize("action", [1, True, np.int64(1), np.array(1), np.int32(1)],
                         ids=["int", "bool", "int64", "0-d array", "int32"])
def test_a_discrete_action_of_any_integer_type_is_judged_and_recorded_alike(
        tmp_path: Path, action: Any) -> None:
    path = tmp_path / "a.jsonl"
    env = GovernedEnv(gym.make("CartPole-v1"), {"name": "p", "rules": [FORBID_1]},
                      intervention={"high": "replace"}, audit_path=path)
    env.reset(seed=0)
    *_, info = env.step(action)
    env.close()
    gov = info["governance"]
    assert (gov["verdict"], gov["proposed_action"], gov["executed_action"]) == ("replace", [1], [0])
    (record,) = records_of(path)
    assert record["proposal"] == [1] and record["extra"] == {"executed_action": [0]}


@pytest.mark.parametrize("policy", [None, {"name": "p", "rules": [
    {**TIGHT_VELOCITY, "bounds": [{"index": 1, "low": -50.0, "high": 50.0}]}]}],
    ids=["no rules", "post rule"])
def test_cost_limit_and_shaping_assigned_after_construction_take_effect(policy: Any) -> None:
    env = govgym.make("CartPole-v1", policy=policy)
    _, info = env.reset(seed=0)
    assert "cost_limit" not in info
    env.set_wrapper_attr("cost_limit", 3.0)
    env.set_wrapper_attr("shaping", Shaping(clean_bonus=0.25))
    _, info = env.reset(seed=0)
    _, reward, *_, step_info = env.step(0)
    assert info["cost_limit"] == step_info["cost_limit"] == 3.0
    assert reward == pytest.approx(1.25) and step_info["governance"]["reward_delta"] == 0.25
    env.set_wrapper_attr("cost_limit", None)
    assert "cost_limit" not in env.step(0)[4] and "cost_limit" not in env.reset(seed=1)[1]


# -- GovernedEnv: bugs ------------------------------------------------------------------

def test_a_rule_named_limit_does_not_change_the_reported_cost_limit() -> None:
    """Its cost key would be info["cost_limit"]: the name is refused with the policy."""
    policy = {"name": "p", "rules": [{**FORBID_1, "name": "limit"}]}
    with pytest.raises(PolicyError, match=re.escape("rules.0.name: rule name 'limit' is reserved")):
        GovernedEnv(gym.make("CartPole-v1"), policy, cost_limit=25)


def test_a_replaced_kernel_judges_proposals() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), "cartpole-envelope")  # post-step rules only
    env.reset(seed=0)
    env.kernel = Kernel({"name": "stricter", "rules": [
        {**FORBID_1, "name": "envelope", "verdict": "block"}]})
    assert env.action_masks().tolist() == [True, False]
    *_, info = env.step(1)
    assert info["governance"]["verdict"] == "block" and info["governance"]["executed_action"] is None


class _ReportsForAnother(Rule):
    kind = "review_reports_for_another"
    checks_proposals = True

    def check(self, proposal: Any, state: Any) -> list[Violation]:
        return [Violation("shared_budget", "over", Severity.LOW, "counted against a shared budget")]


def test_a_violation_named_for_another_rule_does_not_crash_the_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RULE_KINDS, _ReportsForAnother.kind, _ReportsForAnother)
    env = GovernedEnv(gym.make("CartPole-v1"), {"name": "p", "rules": [{"kind": _ReportsForAnother.kind}]})
    env.reset(seed=0)
    *_, info = env.step(0)
    assert info["cost"] == 1.0 and info["governance"]["verdict"] == "warn"


class _Described(gym.Env):
    """A world whose describe() has a key named ``action``."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(2)

    def describe(self, action: int) -> dict[str, Any]:
        return {"action": ["hold", "sell"][int(action)], "venue": "x"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return 0, {}

    def step(self, action: int) -> Any:
        return 0, 0.0, False, False, {}


def test_a_meaning_key_named_action_does_not_hide_the_action(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    env = GovernedEnv(_Described(), None, audit_path=path)
    env.reset(seed=0)
    env.step(1)
    env.close()
    (record,) = records_of(path)
    assert record["proposal"]["action"] == [1]


def test_numpy_values_are_recorded_as_numbers_and_bad_values_raise_value_error(tmp_path: Path) -> None:
    path = tmp_path / "np.jsonl"
    rec = Recorder(path)
    violation = {"rule": "r", "code": "c", "severity": "high", "cost": np.float32(1.5),
                 "stage": "post", "executed": np.bool_(True), "message": "m", "extra": np.int64(7)}
    rec.append(0, 0, {"action": np.arange(2), "n": np.int64(3)}, "warn", [violation], cost=1.5)
    for bad in ({"cost": 10**400}, {"proposal": (circular := [])}):
        if "proposal" in bad:
            circular.append(circular)
        with pytest.raises(ValueError):
            rec.append(0, 1, bad.get("proposal", [0]), "allow", cost=bad.get("cost", 0.0))
    rec.close()
    (record,) = read(path).records  # the refused appends left nothing behind
    assert record["proposal"] == {"action": [0, 1], "n": 3}
    (written,) = record["violations"]
    assert written["executed"] is True and written["cost"] == 1.5 and written["extra"] == 7
