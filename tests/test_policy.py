"""Policy loading and validation: every problem named with file, line, rule and field."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from govgym import PolicyError, Severity, Verdict, available_policies, load_policy


def test_every_shipped_policy_loads_and_round_trips() -> None:
    names = available_policies()
    assert {"empty", "cartpole-envelope", "pendulum-energy", "mountaincar-rate"} <= set(names)
    for name in names:
        policy = load_policy(name)
        assert policy.name == name
        again = load_policy(policy.to_dict())
        assert again.to_dict() == policy.to_dict()
        assert pickle.loads(pickle.dumps(policy)).to_dict() == policy.to_dict()


def test_load_by_path_and_by_dict(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nrules:\n  - kind: forbidden_actions\n    values: [3]\n")
    from_path = load_policy(path)
    from_str = load_policy(str(path))
    assert from_path.name == from_str.name == "mine"
    assert from_path.rules[0].params.values == [3]
    assert load_policy(None).rules == ()


def test_unknown_name_lists_available() -> None:
    with pytest.raises(PolicyError) as err:
        load_policy("no-such-policy")
    message = str(err.value)
    assert "no policy named 'no-such-policy'" in message
    assert "cartpole-envelope" in message


def test_something_that_is_no_policy_is_named_by_its_type() -> None:
    """Was a bug: anything else went through str(), so a Kernel passed as a policy was
    reported as "no policy named '<govgym.kernel.kernel.Kernel object at 0x...>'"."""
    import gymnasium as gym

    from govgym import GovernedEnv, Kernel

    with pytest.raises(TypeError, match=r"not Kernel: pass its \.policy, or assign the kernel"):
        GovernedEnv(gym.make("CartPole-v1"), Kernel("cartpole-envelope"))
    with pytest.raises(TypeError, match="a name, a path, a mapping or a Policy, not int"):
        load_policy(3)  # type: ignore[arg-type]


def test_a_policy_folder_may_hold_yml_files_as_the_envs_folder_may(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "short.yml").write_text("name: short\nrules: []\n")
    (tmp_path / "long.yaml").write_text("name: long\nrules: []\n")
    (tmp_path / "notes.txt").write_text("not a policy\n")
    monkeypatch.setattr("govgym.kernel.policy.data_dir", lambda name: tmp_path)
    assert list(available_policies()) == ["long", "short"]
    assert load_policy("short").name == "short"


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "absent.yaml")


BAD = """\
name: broken
verdicts:
  high: obliterate
rules:
  - kind: state_bounds
    name: env
    bounds:
      - {index: 0, low: 2.0, high: 1.0}
  - kind: budget
    name: money
    hard: -5
    norm: l1
  - kind: teleport
    name: beam
  - kind: rate
    name: env
    limit: 3
    window: 10
    severity: apocalyptic
  - kind: forbidden_actions
    name: fa
    values: [1]
    cost: .nan
    colour: red
"""


def test_bad_file_reports_every_problem_with_line_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    problems = dict(err.value.problems)
    text = str(err.value)
    assert str(path) in text
    assert "line 3, field verdicts.high" in problems
    assert "unknown verdict 'obliterate'" in problems["line 3, field verdicts.high"]
    # pydantic errors are located to the entry's line, with the rule and the field
    assert any(w.startswith("line 8, rule 'env', field rules.0.bounds.0") for w in problems)
    assert "line 11, rule 'money', field rules.1.hard" in problems
    assert "line 13, rule 'beam', field rules.2.kind" in problems
    assert "unknown rule kind 'teleport'" in problems["line 13, rule 'beam', field rules.2.kind"]
    assert "line 19, rule 'env', field rules.3.severity" in problems
    assert "line 23, rule 'fa', field rules.4.cost" in problems
    assert "line 24, rule 'fa', field rules.4.colour" in problems
    assert "unknown field" in problems["line 24, rule 'fa', field rules.4.colour"]


WHOLE_RULE_CHECKS = """\
name: p
rules:
  - kind: budget
    name: b
    norm: l1
    hard: 5
    soft: 7
  - kind: budget
    name: c
    action_costs: {1: -1}
    hard: 5
  - kind: forbidden_actions
    name: f
    ranges:
      - {index: 0, low: 2, high: 1}
  - kind: state_bounds
    name: s
    bounds:
      - index: 0
        low: 3
        high: 1
"""


def test_checks_across_fields_name_the_field_and_its_line(tmp_path: Path) -> None:
    """Was only the rule: a check that compares fields (soft <= hard, low < high) ran on
    the whole entry, so the error said 'field rules.0' at the entry's first line."""
    path = tmp_path / "p.yaml"
    path.write_text(WHOLE_RULE_CHECKS)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    where = [w for w, _ in err.value.problems]
    assert where == ["line 7, rule 'b', field rules.0.soft",
                     "line 10, rule 'c', field rules.1.action_costs.1",
                     "line 15, rule 'f', field rules.2.ranges.0.high",
                     "line 21, rule 's', field rules.3.bounds.0.high"]


def test_duplicate_rule_names_are_rejected() -> None:
    data = {"name": "dup", "rules": [{"kind": "forbidden_actions", "values": [0]},
                                     {"kind": "forbidden_actions", "values": [1]}]}
    with pytest.raises(PolicyError, match="duplicate rule name 'forbidden_actions'"):
        load_policy(data)


def test_invalid_yaml_and_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nrules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(path)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="a policy is a mapping"):
        load_policy(listing)
    with pytest.raises(PolicyError, match="rules is a list"):
        load_policy({"name": "x", "rules": 3})
    with pytest.raises(PolicyError, match="non-empty string name"):
        load_policy({"rules": []})
    with pytest.raises(PolicyError, match="unknown key"):
        load_policy({"name": "x", "rulez": []})


@pytest.mark.parametrize("cost", [float("nan"), float("inf"), -1.0, "cheap", True, 1e16])
def test_non_finite_or_negative_costs_are_rejected(cost: object) -> None:
    with pytest.raises(PolicyError, match="cost must be a finite number >= 0"):
        load_policy({"name": "x", "rules": [{"kind": "forbidden_actions", "values": [0], "cost": cost}]})


def test_verdict_overrides() -> None:
    policy = load_policy("cartpole-envelope")
    assert policy.verdict_for("high") == Verdict.WARN
    stricter = policy.with_verdicts({"high": "terminate"})
    assert stricter.verdict_for(Severity.HIGH) == Verdict.TERMINATE
    assert policy.verdict_for("high") == Verdict.WARN  # the original is unchanged
