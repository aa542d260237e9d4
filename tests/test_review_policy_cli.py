"""Adversarial review of policy loading/validation, env-spec loading and the CLI.

Tests named ``test_bug_*`` fail on the current code and pass once the bug is fixed;
tests named ``test_good_*`` pin behaviour verified to be right.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import govgym
from govgym import registration
from govgym._paths import data_dir
from govgym.cli import main
from govgym.kernel import PolicyError, load_policy
from govgym.registration import EnvSpecError, EnvSpecFile, load_env_specs, register_env_specs
from govgym.wrappers.governed import GovernedEnv

GENESIS = "0" * 64


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def policy_error(source: object) -> PolicyError:
    """The PolicyError ``load_policy(source)`` raises; any other exception fails the test."""
    try:
        load_policy(source)  # type: ignore[arg-type]
    except PolicyError as exc:
        return exc
    except Exception as exc:  # the bug under test
        pytest.fail(f"expected PolicyError, got {type(exc).__name__}: {exc}")
    pytest.fail(f"{source!r} loaded without error")


def problems(exc: PolicyError) -> str:
    """The problems of a PolicyError, without its source path (tmp paths hold test names)."""
    return "\n".join(f"{where}: {message}" for where, message in exc.problems)


def scrub(text: str, tmp_path: Path) -> str:
    return text.replace(str(tmp_path), "TMP")


def is_governed(env: gym.Env) -> bool:
    while env is not None:
        if isinstance(env, GovernedEnv):
            return True
        env = getattr(env, "env", None)
    return False


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in-process; an uncaught exception (a traceback for the user) fails."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # the bug under test
        pytest.fail(f"govgym {' '.join(args)} raised {type(exc).__name__}: {exc} (a traceback)")
    out, err = capsys.readouterr()
    return code, out, err


def chained_line(body: str) -> str:
    """A record line with a correct own hash (as a tamperer who recomputes hashes writes it)."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body + f',"hash":"{digest}"}}\n'


def spec_error(tmp_path: Path, text: str | bytes) -> str:
    """The EnvSpecError text for one spec file ``mine.yaml``, with the tmp path scrubbed."""
    folder = tmp_path / "envs"
    folder.mkdir()
    path = folder / "mine.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        load_env_specs(folder)
    except EnvSpecError as exc:
        return scrub(str(exc), tmp_path)
    except Exception as exc:  # the bug under test
        pytest.fail(f"expected EnvSpecError, got {type(exc).__name__}: {exc}")
    pytest.fail("the env spec loaded without error")


GOOD_SPEC = "id: Review-Mine-v0\nworld: CartPole-v1\npolicy: cartpole-envelope\n"


# -- policy loading: bugs -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["[x, y]", "{x: 1}"])
def test_bug_unhashable_rule_kind_is_a_policy_error(tmp_path: Path, kind: str) -> None:
    # now: TypeError: unhashable type (policy.py _parse_rule, `kind not in RULE_KINDS`)
    path = write(tmp_path, f"name: a\nrules:\n  - kind: {kind}\n")
    text = problems(policy_error(path))
    assert "line 3" in text and "rules.0.kind" in text and "budget" in text  # known kinds listed


@pytest.mark.parametrize("as_dict", [False, True])
def test_bug_huge_integer_cost_is_a_policy_error(tmp_path: Path, as_dict: bool) -> None:
    # now: OverflowError from math.isfinite(int) (policy.py _parse_rule cost check)
    huge = "9" * 400
    if as_dict:
        spec: object = {"name": "a", "rules": [{"kind": "forbidden_actions", "values": [1],
                                                 "cost": int(huge)}]}
    else:
        spec = write(tmp_path, f"name: a\nrules:\n  - kind: forbidden_actions\n"
                               f"    values: [1]\n    cost: {huge}\n")
    assert "rules.0.cost" in problems(policy_error(spec))


def test_bug_duplicate_top_level_key_is_rejected(tmp_path: Path) -> None:
    # now: PyYAML keeps the last `rules:`; the first rule list is silently dropped and the
    # policy loads with 0 rules (policy.py _from_yaml uses yaml.safe_load)
    path = write(tmp_path, "name: a\nrules:\n  - kind: forbidden_actions\n    values: [1]\n"
                           "rules: []\n")
    text = problems(policy_error(path))
    assert "rules" in text and "line 5" in text and "duplicate" in text.lower()


def test_bug_duplicate_rule_field_is_rejected(tmp_path: Path) -> None:
    # now: `severity: critical` is silently overridden by a later `severity: low`
    path = write(tmp_path, "name: a\nrules:\n  - kind: forbidden_actions\n    values: [1]\n"
                           "    severity: critical\n    severity: low\n")
    text = problems(policy_error(path))
    assert "severity" in text and "line 6" in text and "duplicate" in text.lower()


@pytest.mark.parametrize("text", ["rules: {}", "rules: false", "rules: ''", "verdicts: []",
                                  "verdicts: 0"])
def test_bug_rules_or_verdicts_of_the_wrong_type_are_rejected(tmp_path: Path, text: str) -> None:
    # now: `data.get("rules") or []` / `data.get("verdicts") or {}` turn every falsy value of
    # any type into "no rules" / "default verdicts" (policy.py _from_data)
    field = text.split(":")[0]
    path = write(tmp_path, f"name: a\n{text}\n")
    assert f"field {field}" in problems(policy_error(path))


@pytest.mark.parametrize("field", ["soft_severity", "hard_severity"])
def test_bug_budget_severity_error_names_its_field(tmp_path: Path, field: str) -> None:
    # now: "line 3, rule 'budget', field rules.0: Value error, unknown severity 'hgh'" - which
    # of the two severities is wrong is not said (budget.py BudgetParams._one_source)
    path = write(tmp_path, f"name: a\nrules:\n  - kind: budget\n    norm: l1\n    hard: 5\n"
                           f"    {field}: hgh\n")
    text = problems(policy_error(path))
    assert field in text and "line 6" in text


def test_bug_non_utf8_policy_file_is_a_policy_error_naming_the_file(tmp_path: Path) -> None:
    # now: UnicodeDecodeError without the file name (policy.py load_policy, path.read_text)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\nrules: []\n")
    assert str(path) in str(policy_error(path))


def test_bug_unknown_rule_field_lists_the_available_fields(tmp_path: Path) -> None:
    # now: "field rules.0.valuse: Extra inputs are not permitted" - the available fields
    # are not listed (pydantic's extra="forbid" message passed through in _parse_rule)
    path = write(tmp_path, "name: a\nrules:\n  - kind: forbidden_actions\n    valuse: [1]\n")
    exc = policy_error(path)
    [(where, message)] = exc.problems
    assert "line 4" in where and "valuse" in where
    assert "values" in message and "ranges" in message


@pytest.mark.parametrize("name", ["[x, y]", "'   '", "{a: 1}"])
def test_bug_rule_name_must_be_a_non_empty_string(tmp_path: Path, name: str) -> None:
    # now: str(entry.get("name") or kind) turns a list into the name "['x', 'y']" and keeps a
    # blank name (policy.py _parse_rule); these names become info keys cost_<name>
    path = write(tmp_path, f"name: a\nrules:\n  - kind: forbidden_actions\n    name: {name}\n"
                           "    values: [1]\n")
    assert "rules.0.name" in problems(policy_error(path))


def test_bug_missing_kind_is_reported_as_missing_not_as_rule_none(tmp_path: Path) -> None:
    # now: "line 3, rule 'None', field rules.0.kind: unknown rule kind None; ..."
    path = write(tmp_path, "name: a\nrules:\n  - values: [1]\n")
    text = problems(policy_error(path))
    assert "rules.0.kind" in text and "None" not in text


@pytest.mark.parametrize("entry", ["kind: rate\n    limit: yes\n    window: 5",
                                   "kind: forbidden_actions\n    values: [true]"])
def test_bug_yaml_booleans_are_not_accepted_as_integers(tmp_path: Path, entry: str) -> None:
    # now: pydantic's lax mode turns `limit: yes` into 1 and `values: [true]` into [1]
    # (rate.py RateParams, forbidden_actions.py ForbiddenActionsParams: plain `int`)
    path = write(tmp_path, f"name: a\nrules:\n  - {entry}\n")
    text = problems(policy_error(path))
    assert "line 4" in text and "rules.0." in text


def test_bug_huge_bound_index_is_rejected_when_the_policy_is_loaded(tmp_path: Path) -> None:
    # now: load_policy and `govgym policy check` accept it; building the kernel then raises
    # OverflowError (state_bounds.py Bound.index is an unbounded int; np.intp in StateBounds)
    path = write(tmp_path, "name: a\nrules:\n  - kind: state_bounds\n    bounds:\n"
                           f"      - {{index: {'9' * 30}, low: 0}}\n")
    assert "rules.0.bounds.0" in problems(policy_error(path))


@pytest.mark.parametrize("field, value", [("severity", "9"), ("verdict", "7")])
def test_bug_out_of_range_level_number_lists_the_names(tmp_path: Path, field: str,
                                                       value: str) -> None:
    # now: "9 is not a valid Severity": the number path of _Level.parse (kernel/types.py)
    # raises the enum's own error, without the accepted names the name path lists
    path = write(tmp_path, f"name: a\nrules:\n  - kind: forbidden_actions\n    values: [1]\n"
                           f"    {field}: {value}\n")
    text = problems(policy_error(path))
    assert f"rules.0.{field}" in text and ("critical" if field == "severity" else "terminate") in text


def test_bug_pathlike_without_yaml_suffix_is_a_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # now: "no policy named 'mine'": a Path object is looked up as a shipped name when it has
    # no .yaml suffix and no slash (policy.py load_policy, looks_like_path)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "name: mine\nrules: []\n", name="mine")
    assert load_policy(Path("mine")).name == "mine"


def test_bug_a_file_named_without_a_suffix_loads_as_text_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # was: `govgym policy show mine` said "no policy named 'mine'" (rc 2) while
    # `govgym policy check mine` read the file; a shipped name still comes first
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "name: mine\nrules: []\n", name="mine")
    write(tmp_path, "name: impostor\nrules: []\n", name="empty")
    assert load_policy("mine").name == "mine" and load_policy("empty").name == "empty"
    code, out, _ = cli(capsys, "policy", "show", "mine")
    assert code == 0 and "mine" in out
    code, _, err = cli(capsys, "policy", "show", "nope")
    assert code == 2 and "no policy named 'nope' and no such file" in err


def test_bug_directory_is_reported_as_a_directory(tmp_path: Path) -> None:
    # now: "no such policy file: <dir>" although it exists (policy.py load_policy)
    folder = tmp_path / "policy.yaml"
    folder.mkdir()
    assert "directory" in scrub(problems(policy_error(folder)), tmp_path)


def test_bug_cost_in_exponent_notation_is_a_number(tmp_path: Path) -> None:
    # now: "cost must be a finite number >= 0, got '1e-3'": PyYAML (YAML 1.1) reads 1e-3 as a
    # string; rule parameters (pydantic) accept the same text, the cost check does not
    path = write(tmp_path, "name: a\nrules:\n  - kind: forbidden_actions\n    values: [1]\n"
                           "    cost: 1e-3\n")
    assert load_policy(path).rules[0].cost == pytest.approx(0.001)


# -- CLI: bugs --------------------------------------------------------------------------------------


def test_bug_cli_policy_check_non_utf8_file_names_it_and_checks_the_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # now: "govgym: 'utf-8' codec can't decode byte 0xe9 ..." (no file name), exit 2, and the
    # files after it are never checked (cli.py _cmd_policy_check catches only PolicyError)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\nrules: []\n")
    good = write(tmp_path, "name: good\nrules: []\n", name="good.yaml")
    code, out, err = cli(capsys, "policy", "check", str(bad), str(good))
    assert code == 1
    assert str(bad) in err
    assert f"{good}: ok" in out


@pytest.mark.parametrize("entry", ["kind: [x]", "kind: forbidden_actions\n    values: [1]\n"
                                               "    cost: " + "9" * 400])
def test_bug_cli_policy_check_has_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               entry: str) -> None:
    # now: TypeError / OverflowError tracebacks (exit 1 only because Python died)
    path = write(tmp_path, f"name: a\nrules:\n  - {entry}\n")
    code, _, err = cli(capsys, "policy", "check", str(path))
    assert code == 1 and str(path) in err and "rules.0." in err


def test_bug_cli_audit_verify_rejects_a_file_with_no_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # now: every line of a binary (or any non-log) file is a "torn record", and the verdict is
    # "ok, 0 record(s), chain intact", exit 0 (audit/reader.py read; cli.py _cmd_audit_verify)
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    code, out, _ = cli(capsys, "audit", "verify", str(path))
    assert code == 1
    assert "chain intact" not in out


def test_bug_cli_audit_verify_record_without_seq_is_a_broken_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # now: TypeError from int(None) (audit/reader.py read, `expected_seq = int(seq) + 1`)
    path = tmp_path / "audit.jsonl"
    path.write_text(chained_line(f'{{"verdict":"allow","prev":"{GENESIS}"'))
    code, _, err = cli(capsys, "audit", "verify", str(path))
    assert code == 1 and f"{path}:1" in err


def test_bug_cli_audit_summary_record_without_verdict_has_no_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # now: KeyError: 'verdict' (audit/reader.py summarize, r["verdict"])
    path = tmp_path / "audit.jsonl"
    path.write_text(chained_line(f'{{"seq":0,"cost":1.0,"violations":[],"prev":"{GENESIS}"'))
    code, _, err = cli(capsys, "audit", "summary", str(path))
    assert code != 0 and "verdict" in scrub(err, tmp_path)


# -- env specs: bugs --------------------------------------------------------------------------------


def test_bug_env_spec_non_utf8_is_an_env_spec_error(tmp_path: Path) -> None:
    # now: UnicodeDecodeError without the file name (registration.py _parse_spec)
    assert "mine.yaml" in spec_error(tmp_path, b"id: caf\xe9-v0\nworld: CartPole-v1\n"
                                                  b"policy: empty\n")


@pytest.mark.parametrize("value", ["[a, b]", "5", "text"])
def test_bug_env_spec_world_kwargs_of_the_wrong_type(tmp_path: Path, value: str) -> None:
    # now: ValueError/TypeError from dict(...) without the file or the field
    text = spec_error(tmp_path, GOOD_SPEC + f"world_kwargs: {value}\n")
    assert "mine.yaml" in text and "world_kwargs" in text


@pytest.mark.parametrize("value", [".nan", ".inf", "-3", "lots"])
def test_bug_env_spec_cost_limit_must_be_a_finite_number(tmp_path: Path, value: str) -> None:
    # now: accepted as is; a NaN or negative cost_limit reaches info["cost_limit"]
    text = spec_error(tmp_path, GOOD_SPEC + f"cost_limit: {value}\n")
    assert "mine.yaml" in text and "cost_limit" in text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_bug_governed_env_rejects_a_bad_cost_limit(value: float) -> None:
    # now: GovernedEnv stores float(cost_limit) unchecked (wrappers/governed.py __init__)
    with pytest.raises(ValueError, match="cost_limit"):
        govgym.make("CartPole-v1", policy="empty", cost_limit=value)


@pytest.mark.parametrize("value", ["many", "-5", "0", "2.5"])
def test_bug_env_spec_max_episode_steps_is_validated(tmp_path: Path, value: str) -> None:
    # now: accepted at load; gym.make fails later with Gymnasium's own message, no file
    text = spec_error(tmp_path, GOOD_SPEC + f"max_episode_steps: {value}\n")
    assert "mine.yaml" in text and "max_episode_steps" in text


@pytest.mark.parametrize("policy", ["no-such-policy", "'{name: x, rules: [{kind: nope}]}'"])
def test_bug_env_spec_with_a_bad_policy_fails_at_load_naming_the_file(tmp_path: Path,
                                                                      policy: str) -> None:
    # now: the spec loads and registers; only gym.make raises, and its PolicyError does not
    # name the env spec file (registration.py _parse_spec never checks the policy)
    policy = policy.strip("'")
    text = spec_error(tmp_path, f"id: Review-Mine-v0\nworld: CartPole-v1\npolicy: {policy}\n")
    assert "mine.yaml" in text and "policy" in text


def test_bug_env_spec_misspelled_intervention_fails_at_load(tmp_path: Path) -> None:
    # now: loads; gym.make raises "unknown verdict 'blok'" without the file or the field
    text = spec_error(tmp_path, GOOD_SPEC + "intervention: {high: blok}\n")
    assert "mine.yaml" in text and "intervention" in text and "blok" in text


def test_bug_env_spec_duplicate_key_is_rejected(tmp_path: Path) -> None:
    # now: the later `policy:` silently wins
    text = spec_error(tmp_path, GOOD_SPEC + "policy: empty\n")
    assert "mine.yaml" in text and "policy" in text and "duplicate" in text.lower()


def test_bug_env_specs_from_a_missing_folder_raise(tmp_path: Path) -> None:
    # now: returns {} (registration.py load_env_specs globs a folder that does not exist)
    folder = tmp_path / "no-such-folder"
    with pytest.raises((EnvSpecError, FileNotFoundError, NotADirectoryError), match="no-such-folder"):
        load_env_specs(folder)


def test_bug_env_spec_clashing_with_an_existing_gym_id_is_not_silently_ungoverned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # now: register_env_specs skips ids already in gym.registry but still records the spec in
    # ENV_SPECS, so govgym.make("CartPole-v1") returns a plain, ungoverned CartPole
    # (registration.py register_env_specs, `if spec.id in gym.registry: continue`)
    monkeypatch.setattr(registration, "ENV_SPECS", dict(registration.ENV_SPECS))
    monkeypatch.setitem(gym.registry, "CartPole-v1", gym.registry["CartPole-v1"])
    spec = EnvSpecFile(id="CartPole-v1", world="CartPole-v1", policy="cartpole-envelope",
                       source="clash.yaml")
    try:
        register_env_specs({spec.id: spec})
    except ValueError as exc:  # EnvSpecError is one: a clear refusal is fine
        assert "CartPole-v1" in str(exc)
        return
    assert is_governed(govgym.make("CartPole-v1")), "the spec is listed but the env is ungoverned"


def test_bug_a_clash_registers_none_of_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    # was: specs before the clashing one stayed registered (registration half-applied)
    monkeypatch.setattr(registration, "ENV_SPECS", dict(registration.ENV_SPECS))
    monkeypatch.setitem(gym.registry, "CartPole-v1", gym.registry["CartPole-v1"])
    fine = EnvSpecFile(id="Review-Fine-v0", world="CartPole-v1", policy="empty", source="a.yaml")
    clash = EnvSpecFile(id="CartPole-v1", world="CartPole-v1", policy="empty", source="c.yaml")
    with pytest.raises(EnvSpecError, match=r"c\.yaml: id 'CartPole-v1' is already registered"):
        register_env_specs({fine.id: fine, clash.id: clash})
    assert "Review-Fine-v0" not in gym.registry and "Review-Fine-v0" not in registration.ENV_SPECS


@pytest.mark.parametrize(("line", "fragment"), [
    ("shaping: {max_penalty: -1}", "max_penalty"), ("shaping: {bonus: 1}", "unknown shaping keys"),
    ("shaping: {penalties: {huge: 1}}", "huge"), ("safe_action: left", "a number or a list"),
    ("safe_action: [1, [true]]", "a number or a list"),
])
def test_bug_env_spec_shaping_and_safe_action_fail_at_load(tmp_path: Path, line: str,
                                                           fragment: str) -> None:
    # was: loaded and registered; gym.make raised later without the file or the field
    text = spec_error(tmp_path, GOOD_SPEC + line + "\n")
    field_name = line.split(":")[0]
    assert "mine.yaml" in text and f"field {field_name!r}" in text and fragment in text


def test_bug_reregistered_govgym_id_does_not_disagree_with_env_specs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # now: ENV_SPECS (what `govgym envs` prints) says policy=empty, gym.make builds the old
    # cartpole-envelope env (registration.py register_env_specs)
    env_id = "Governed-CartPole-v1"
    monkeypatch.setattr(registration, "ENV_SPECS", dict(registration.ENV_SPECS))
    monkeypatch.setitem(gym.registry, env_id, gym.registry[env_id])
    spec = EnvSpecFile(id=env_id, world="CartPole-v1", policy="empty", source="mine.yaml")
    try:
        register_env_specs({env_id: spec})
    except ValueError as exc:
        assert env_id in str(exc)
        return
    env = gym.make(env_id)
    assert env.get_wrapper_attr("kernel").policy.name == registration.ENV_SPECS[env_id].policy


# -- good behaviour, verified ---------------------------------------------------------------------


def test_good_every_problem_is_reported_with_line_rule_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([
        "name: a",                                   # 1
        "verdicts: {hihg: block}",                   # 2
        "rules:",                                    # 3
        "  - kind: forbidden_actions",               # 4
        "    name: f",                               # 5
        "    values: [1]",                           # 6
        "    severity: hgih",                        # 7
        "    verdict: blok",                         # 8
        "    cost: .nan",                            # 9
        "  - kind: state_bounds",                    # 10
        "    name: s",                               # 11
        "    bounds:",                               # 12
        "      - {index: 0, low: 2, high: 1}",       # 13
        "  - kind: nope",                            # 14
        "  - kind: budget",                          # 15
        "    name: b",                               # 16
        "    norm: l1",                              # 17
        "    hard: .inf",                            # 18
        "",
    ]))
    exc = policy_error(path)
    wheres = [where for where, _ in exc.problems]
    assert "line 2, field verdicts.hihg" in wheres
    assert "line 7, rule 'f', field rules.0.severity" in wheres
    assert "line 8, rule 'f', field rules.0.verdict" in wheres
    assert "line 9, rule 'f', field rules.0.cost" in wheres
    assert "line 13, rule 's', field rules.1.bounds.0.high" in wheres  # low > high
    assert "line 14, rule 'nope', field rules.2.kind" in wheres
    assert "line 18, rule 'b', field rules.3.hard" in wheres
    assert str(path) in str(exc)


@pytest.mark.parametrize("text, got", [("", "an empty document"), ("- a\n- b\n", "list"),
                                       ("hello\n", "str")])
def test_good_non_mapping_yaml_is_a_policy_error(tmp_path: Path, text: str, got: str) -> None:
    assert got in problems(policy_error(write(tmp_path, text)))


@pytest.mark.parametrize("text, line", [("name: a\n---\nname: b\n", "line 2"),
                                        ("name: a\nrules:\n\t- kind: x\n", "line 3"),
                                        ("name: [a\n", "line 2")])
def test_good_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: str) -> None:
    assert line in problems(policy_error(write(tmp_path, text)))


@pytest.mark.parametrize("entry", [
    "kind: forbidden_actions\n    values: [1]\n    cost: -1",
    "kind: forbidden_actions\n    values: [1]\n    cost: .inf",
    "kind: forbidden_actions\n    values: [1]\n    cost: 1.0e+400",
    "kind: budget\n    norm: l1\n    hard: .nan",
    "kind: budget\n    norm: l1\n    hard: 5\n    scale: .inf",
    "kind: budget\n    action_costs: {0: -1}\n    hard: 5",
    "kind: budget\n    norm: l1\n    hard: 5\n    soft: 6",
    "kind: forbidden_actions\n    ranges: [{index: 0, low: .nan, high: 1}]",
    "kind: state_bounds\n    bounds: [{index: 0, low: 1, high: .nan}]",
    "kind: sql\n    tables: {t: {columns: [a]}}\n    query_cost: {hard: .nan}",
])
def test_good_nan_infinite_negative_and_reversed_numbers_are_rejected(tmp_path: Path,
                                                                      entry: str) -> None:
    assert "rules.0" in problems(policy_error(write(tmp_path, f"name: a\nrules:\n  - {entry}\n")))


def test_good_unknown_names_list_the_available_ones(tmp_path: Path) -> None:
    assert "cartpole-envelope" in problems(policy_error("no-such-policy"))
    text = problems(policy_error(write(tmp_path, "name: a\nrules:\n  - kind: nope\n")))
    assert "budget, forbidden_actions, rate, sql, state_bounds" in text
    text = problems(policy_error(write(tmp_path, "name: a\nrulez: []\n")))
    assert "line 2, field rulez" in text and "'rules'" in text


def test_good_duplicate_and_reserved_rule_names(tmp_path: Path) -> None:
    text = problems(policy_error(write(tmp_path, "name: a\nrules:\n"
                                            "  - {kind: rate, limit: 1, window: 2}\n"
                                            "  - {kind: rate, limit: 2, window: 3}\n"
                                            "  - {kind: rate, name: limit, limit: 1, window: 2}\n")))
    assert "duplicate rule name 'rate'" in text and "reserved" in text


def test_good_shipped_policies_round_trip(tmp_path: Path) -> None:
    for name in ("cartpole-envelope", "pendulum-energy", "sql-guarded-writes"):
        policy = load_policy(name)
        assert policy.name == name
        assert load_policy(policy.to_dict()).to_dict() == policy.to_dict()


def test_good_cli_exit_codes_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "policy", "show", "nope")
    assert code == 2 and "no policy named 'nope'" in err and "sql-safety" in err
    code, _, err = cli(capsys, "sql", "check", "SELECT 1", "--policy", "cartpole-envelope")
    assert code == 2 and "has no sql rule" in err
    code, _, err = cli(capsys, "audit", "verify", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in err
    code, _, err = cli(capsys, "policy", "check", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err


def test_good_cli_audit_verify_names_the_tampered_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    env = gym.make("Governed-CartPole-v1", audit_path=str(path))
    env.reset(seed=0)
    for step in range(6):
        env.step(step % 2)
    env.close()
    assert cli(capsys, "audit", "verify", str(path))[0] == 0
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"step":3', '"step":9')
    path.write_text("".join(lines))
    code, _, err = cli(capsys, "audit", "verify", str(path))
    assert code == 1 and f"{path}:4: chain broken" in err and "3 record(s)" in err
    path.write_text("".join(lines[:2] + lines[4:]))  # a deleted record (line 4 was tampered)
    code, _, err = cli(capsys, "audit", "verify", str(path))
    assert code == 1 and f"{path}:3" in err
    assert cli(capsys, "audit", "summary", str(path))[0] == 1


def test_good_env_spec_errors_name_the_file(tmp_path: Path) -> None:
    text = spec_error(tmp_path, GOOD_SPEC + "polcy: x\n")
    assert "mine.yaml" in text and "polcy" in text and "policy" in text
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.yaml").write_text(GOOD_SPEC)
    (other / "b.yaml").write_text(GOOD_SPEC)
    with pytest.raises(EnvSpecError, match=r"already defined in a\.yaml"):
        load_env_specs(other)
    for text, message in (("", "an env spec is a mapping"), ("- a\n", "an env spec is a mapping"),
                          ("id: [\n", "not valid YAML"),
                          ("world: CartPole-v1\npolicy: empty\n", "field 'id' is required")):
        (tmp_path / "envs" / "mine.yaml").write_text(text)
        with pytest.raises(EnvSpecError, match=rf"mine\.yaml: {message}"):
            load_env_specs(tmp_path / "envs")


def test_a_spec_whose_safe_action_does_not_fit_names_its_file_and_closes_the_world(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # was: gym.make raised "safe_action 7 is not an action of the action space Discrete(2)"
    # with no word of which env spec set it, and the world it had built stayed open
    monkeypatch.setattr(registration, "ENV_SPECS", dict(registration.ENV_SPECS))
    env_id = "Review-BadSafeAction-v0"
    spec = EnvSpecFile(id=env_id, world="CartPole-v1", policy="empty", source="mine.yaml",
                       safe_action=7)
    closed: list[str] = []
    original_close = gym.Env.close

    def close(self: gym.Env) -> None:
        closed.append(type(self.unwrapped).__name__)
        original_close(self)

    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    monkeypatch.setattr(CartPoleEnv, "close", close)
    register_env_specs({env_id: spec})
    try:
        with pytest.raises(ValueError, match="safe_action 7 is not an action") as caught:
            gym.make(env_id)
        notes = " ".join(getattr(caught.value, "__notes__", []))
        assert "mine.yaml" in notes and env_id in notes
        assert closed == ["CartPoleEnv"]
        # an argument given to gym.make is not blamed on the file
        with pytest.raises(ValueError, match="safe_action 9 is not an action") as caught:
            gym.make(env_id, safe_action=9)
        notes = " ".join(getattr(caught.value, "__notes__", []))
        assert "mine.yaml" not in notes and "CartPole-v1" in notes
        with pytest.raises(ValueError, match=r"safe_action array\(\[9\]\) is not an action"):
            gym.make(env_id, safe_action=np.array([9]))  # == of an array says no bool
    finally:
        del gym.registry[env_id]


def test_a_policy_path_in_an_env_spec_is_relative_to_the_spec_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # was: resolved against the working directory when gym.make ran, so a worker started
    # elsewhere (or any other directory) failed with "no such policy file"
    folder = tmp_path / "specs"
    (folder / "pol").mkdir(parents=True)
    policy = (data_dir("policies") / "cartpole-envelope.yaml").read_text(encoding="utf-8")
    (folder / "pol" / "mine.yaml").write_text(policy, encoding="utf-8")
    (folder / "cp.yaml").write_text("id: Review-RelPolicy-v0\nworld: CartPole-v1\n"
                                    "policy: pol/mine.yaml\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_env_specs(folder)["Review-RelPolicy-v0"]
    assert Path(spec.policy) == folder / "pol" / "mine.yaml"
    assert load_policy(spec.policy).to_dict() == load_policy("cartpole-envelope").to_dict()


@pytest.mark.parametrize(("policy", "fragment"), [
    ("pol/missing.yaml", "no such policy file"),
    ("pol/bad.yaml", "severity"),
])
def test_a_policy_file_an_env_spec_names_is_checked_when_the_spec_loads(
        tmp_path: Path, policy: str, fragment: str) -> None:
    # was: accepted and registered; only gym.make found the file missing or invalid,
    # without naming the env spec
    folder = tmp_path / "specs"
    (folder / "pol").mkdir(parents=True)
    (folder / "pol" / "bad.yaml").write_text(
        "name: bad\nrules:\n  - kind: forbidden_actions\n    values: [0]\n    severity: hgih\n",
        encoding="utf-8")
    (folder / "mine.yaml").write_text(f"id: Review-BadPolicy-v0\nworld: CartPole-v1\n"
                                      f"policy: {policy}\n", encoding="utf-8")
    with pytest.raises(EnvSpecError) as caught:
        load_env_specs(folder)
    text = str(caught.value)
    assert "mine.yaml" in text and "field 'policy'" in text and fragment in text


def test_a_policy_file_in_the_env_spec_folder_is_named_as_such(tmp_path: Path) -> None:
    text = spec_error(tmp_path, (data_dir("policies") / "cartpole-envelope.yaml").read_text())
    assert "mine.yaml" in text and "policy file" in text


def _laughs(levels: int) -> str:
    """A few hundred bytes of nested aliases standing for 10**levels values."""
    lines = ["name: laughs", "rules:", "  - kind: forbidden_actions", "    values: [1]",
             "    _a: &a [" + ", ".join(["x"] * 10) + "]"]
    names = "abcdefghijkl"
    for i in range(1, levels):
        lines.append(f"    _{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 10) + "]")
    lines.append(f"    cost: *{names[levels - 1]}")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_policy_is_refused_at_once(tmp_path: Path) -> None:
    # was: 16.8 s and 1.1 GB for 8 levels (the error messages repr'd the expanded value),
    # still running after 120 s for 9
    path = write(tmp_path, _laughs(9))
    error = policy_error(path)
    assert "aliases expand it to more than" in str(error)
    assert main(["policy", "check", str(path)]) == 1
    spec = tmp_path / "envs"
    spec.mkdir()
    aliases = [line.replace("    _", "  _", 1) for line in _laughs(9).splitlines()
               if line.startswith("    _")]
    (spec / "a.yaml").write_text("\n".join(["id: Laughs-v0", "world: CartPole-v1", "policy: empty",
                                            "world_kwargs:", *aliases, "cost_limit: *i", ""]),
                                 encoding="utf-8")
    with pytest.raises(EnvSpecError, match="aliases expand"):
        load_env_specs(spec)


def test_a_recursive_alias_is_refused_and_a_modest_one_still_loads(tmp_path: Path) -> None:
    error = policy_error(write(tmp_path, "name: loop\nrules: &r\n  - *r\n"))
    assert "refers to a value that holds it" in str(error)
    shared = write(tmp_path, "name: shared\nrules:\n"
                   "  - {kind: forbidden_actions, name: a, values: &v [0]}\n"
                   "  - {kind: forbidden_actions, name: b, values: *v, severity: low}\n",
                   name="shared.yaml")
    assert [r.params.values for r in load_policy(shared).rules] == [[0], [0]]


def test_a_bound_given_only_as_low_minus_infinity_survives_show_and_the_spec(tmp_path: Path) -> None:
    # was: to_dict dropped low (it equals the default), so `policy show` printed a policy
    # that does not load and gym.make(env.spec) raised PolicyError
    path = write(tmp_path, "name: nan-guard\nrules:\n  - kind: state_bounds\n"
                           "    bounds:\n      - {index: 0, low: -.inf}\n")
    policy = load_policy(path)
    assert load_policy(policy.to_dict()).to_dict() == policy.to_dict()
    env = govgym.make("CartPole-v1", policy=policy)
    rebuilt = gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json()))
    assert rebuilt.get_wrapper_attr("kernel").policy.to_dict() == policy.to_dict()
    shown = tmp_path / "shown.yaml"
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["policy", "show", str(path)]) == 0
    shown.write_text(out.getvalue(), encoding="utf-8")
    assert main(["policy", "check", str(shown)]) == 0


def test_a_policy_built_in_code_is_checked_as_a_files_is() -> None:
    # was: a rule named 'limit' built in code was accepted and its cost_limit key
    # overwrote info["cost_limit"] (25 reported as 28); an unknown kind failed later in
    # Kernel() with a bare KeyError
    from govgym.kernel.policy import Policy, RuleConfig
    from govgym.rules.forbidden_actions import ForbiddenActionsParams

    params = ForbiddenActionsParams(values=[0])
    with pytest.raises(PolicyError, match="'limit' is reserved"):
        Policy("p", (RuleConfig("forbidden_actions", "limit", "low", 3.0, params),))
    with pytest.raises(ValueError, match="unknown rule kind 'nope'"):
        RuleConfig("nope", "x", "low", 1.0, params)
    with pytest.raises(TypeError, match="BudgetParams"):
        RuleConfig("budget", "b", "low", 1.0, params)
    with pytest.raises(ValueError, match="non-empty string"):
        RuleConfig("forbidden_actions", " ", "low", 1.0, params)


def test_a_malformed_id_is_refused_with_its_file_and_registers_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # was: gymnasium.error.Error "Malformed environment ID" from gym.register, after the
    # specs before it had registered and with the bad id already in ENV_SPECS
    text = spec_error(tmp_path, "id: Bad CartPole v1\nworld: CartPole-v1\npolicy: empty\n")
    assert "mine.yaml" in text and "field 'id'" in text and "Malformed" in text
    monkeypatch.setattr(registration, "ENV_SPECS", dict(registration.ENV_SPECS))
    fine = EnvSpecFile(id="Review-FineToo-v0", world="CartPole-v1", policy="empty", source="a.yaml")
    bad = EnvSpecFile(id="Bad CartPole v1", world="CartPole-v1", policy="empty", source="b.yaml")
    with pytest.raises(EnvSpecError, match=r"b\.yaml: field 'id'"):
        register_env_specs({fine.id: fine, bad.id: bad})
    assert fine.id not in gym.registry and not {fine.id, bad.id} & set(registration.ENV_SPECS)


def test_an_intervention_that_names_a_severity_twice_is_refused(tmp_path: Path) -> None:
    # was: the spec loaded and the last spelling won (high: warn, HIGH: terminate gave terminate)
    text = spec_error(tmp_path, GOOD_SPEC + "intervention: {high: warn, HIGH: terminate}\n")
    assert "mine.yaml" in text and "field 'intervention'" in text and "given twice" in text
    with pytest.raises(ValueError, match="given twice"):
        govgym.make("CartPole-v1", policy="cartpole-envelope",
                    intervention={"high": "warn", "HIGH": "terminate"})


@pytest.mark.parametrize("text", ["name: p\ndescription: 0\nrules: []\n",
                                  "name: p\ndescription: []\nrules: []\n",
                                  "name: p\nrules:\n"
                                  "  - {kind: forbidden_actions, values: [0], description: 0}\n"])
def test_a_description_that_is_not_text_is_refused_even_when_falsy(tmp_path: Path, text: str) -> None:
    # was: description: 0 or [] read as "" (the check was `data.get("description") or ""`)
    assert "a description is text" in str(policy_error(write(tmp_path, text)))


def test_an_empty_policy_file_says_so(tmp_path: Path) -> None:
    assert "got an empty document" in str(policy_error(write(tmp_path, "# nothing here\n")))


@pytest.mark.parametrize(("world", "world_kwargs", "error"), [
    ("nosuch.module:World", {}, ModuleNotFoundError),
    ("CartPole-v1", {"no_such_argument": 1}, TypeError),
])
def test_a_world_that_does_not_build_names_its_env_spec(
        monkeypatch: pytest.MonkeyPatch, world: str, world_kwargs: dict, error: type) -> None:
    # was: a bare ModuleNotFoundError / TypeError with no word of the spec file
    monkeypatch.setattr(registration, "ENV_SPECS", dict(registration.ENV_SPECS))
    spec = EnvSpecFile(id="Review-NoWorld-v0", world=world, policy="empty", source="mine.yaml",
                       world_kwargs=world_kwargs)
    register_env_specs({spec.id: spec})
    try:
        with pytest.raises(error) as caught:
            gym.make(spec.id)
        # gym.make re-raises a TypeError as its own, naming the id (and the note is lost)
        text = str(caught.value) if error is TypeError else " ".join(caught.value.__notes__)
        assert ("mine.yaml" in text) if error is not TypeError else (spec.id in text)
    finally:
        del gym.registry[spec.id]
