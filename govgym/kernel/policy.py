"""Governance policies: a named set of configured rules and the verdict each severity gets.

A policy is a YAML file in ``policies/`` (shipped inside the wheel), a path, a dict, or
a :class:`Policy` built in code. Every problem in a policy is reported at once, each
with the file, the line, the rule and the field, and nothing of a bad policy is used.

>>> policy = load_policy({
...     "name": "demo",
...     "rules": [{"kind": "forbidden_actions", "values": [1]}],
... })
>>> [rule.name for rule in policy.rules], policy.verdict_for("high")
(['forbidden_actions'], <Verdict.BLOCK: 3>)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from govgym import _yaml
from govgym._paths import data_dir
from govgym.kernel.types import MAX_COST, Severity, Verdict, check_cost

if TYPE_CHECKING:  # the rule kinds (and pydantic) load on first use, not at import
    from govgym.rules import Rule, RuleParams

__all__ = [
    "DEFAULT_VERDICTS",
    "RESERVED_RULE_NAMES",
    "Policy",
    "PolicyError",
    "RuleConfig",
    "available_policies",
    "load_policy",
]

DEFAULT_VERDICTS: dict[Severity, Verdict] = {
    Severity.LOW: Verdict.WARN,
    Severity.MEDIUM: Verdict.WARN,
    Severity.HIGH: Verdict.BLOCK,
    Severity.CRITICAL: Verdict.TERMINATE,
}

#: Names a rule may not take: a governed env reports ``info["cost_<rule name>"]``, and
#: ``cost_limit`` is already a key of its info.
RESERVED_RULE_NAMES = frozenset({"limit"})
_POLICY_KEYS = {"name", "description", "verdicts", "rules"}
_COMMON_RULE_KEYS = {"kind", "name", "severity", "cost", "verdict", "description"}


class PolicyError(ValueError):
    """A policy that cannot be used. ``problems`` lists every ``(where, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"invalid policy {source}:"] + [f"  {where}: {msg}" for where, msg in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class RuleConfig:
    """One validated rule entry of a policy."""

    kind: str
    name: str
    severity: Severity
    cost: float
    params: RuleParams
    verdict: Verdict | None = None
    description: str = ""

    def __post_init__(self) -> None:  # one built in code is checked as a file's is
        from govgym.rules import RULE_KINDS

        if not isinstance(self.kind, str) or self.kind not in RULE_KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}; known kinds: "
                             f"{', '.join(sorted(RULE_KINDS))}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a rule name is a non-empty string, got {self.name!r}")
        expected = RULE_KINDS[self.kind].Params
        if not isinstance(self.params, expected):
            raise TypeError(f"rule {self.name!r}: params of a {self.kind!r} rule are a "
                            f"{expected.__name__}, got {type(self.params).__name__}")
        object.__setattr__(self, "severity", Severity.parse(self.severity))
        kind = RULE_KINDS[self.kind]
        if kind.severity_fields and self.severity != kind.default_severity:
            raise ValueError(f"rule {self.name!r}: {_unused_severity(self.kind, kind)}")
        object.__setattr__(self, "cost", check_cost(self.cost, f"rule {self.name!r}"))
        if self.verdict is not None:
            object.__setattr__(self, "verdict", Verdict.parse(self.verdict))

    def build(self) -> Rule:
        from govgym.rules import RULE_KINDS

        return RULE_KINDS[self.kind](self.name, self.params, self.severity, self.cost)


@dataclass(frozen=True)
class Policy:
    """A validated policy. Build one with :func:`load_policy`."""

    name: str
    rules: tuple[RuleConfig, ...] = ()
    verdicts: Mapping[Severity, Verdict] = field(default_factory=lambda: dict(DEFAULT_VERDICTS))
    description: str = ""
    source: str = "<code>"

    def __post_init__(self) -> None:
        # one built in code: names parsed, a severity it leaves out gets its default
        # verdict (the kernel must find a verdict for every severity), rule names unique
        verdicts = dict(DEFAULT_VERDICTS)
        verdicts.update({Severity.parse(k): Verdict.parse(v) for k, v in self.verdicts.items()})
        object.__setattr__(self, "verdicts", verdicts)
        object.__setattr__(self, "rules", tuple(self.rules))
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise PolicyError(self.source, [("rules", f"duplicate rule names in {names}")])
        reserved = sorted(RESERVED_RULE_NAMES.intersection(names))
        if reserved:
            raise PolicyError(self.source, [("rules", f"rule name {reserved[0]!r} is reserved: "
                                             f"info['cost_{reserved[0]}'] is already part of the "
                                             "info contract")])

    def verdict_for(self, severity: str | Severity) -> Verdict:
        return self.verdicts[Severity.parse(severity)]

    def with_verdicts(self, overrides: Mapping[str | Severity, str | Verdict]) -> Policy:
        """A copy whose severity -> verdict mapping is updated by ``overrides``."""
        verdicts = dict(self.verdicts)
        verdicts.update(parse_verdict_table(overrides))
        return Policy(self.name, self.rules, verdicts, self.description, self.source)

    def monitor_only(self) -> Policy:
        """A copy that judges but never intervenes: every verdict (rule overrides too) is
        ``allow``. Violations and costs are still reported, as an ungoverned baseline's meter."""
        from dataclasses import replace

        rules = tuple(replace(r, verdict=None) for r in self.rules)
        return Policy(self.name, rules, dict.fromkeys(Severity, Verdict.ALLOW), self.description,
                      self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :func:`load_policy` turns back into an equal policy."""
        from govgym.rules import RULE_KINDS

        rules = []
        for r in self.rules:
            entry: dict[str, Any] = {"kind": r.kind, "name": r.name, "cost": r.cost}
            if not RULE_KINDS[r.kind].severity_fields:  # a kind that does not use it refuses it
                entry["severity"] = str(r.severity)
            if r.verdict is not None:
                entry["verdict"] = str(r.verdict)
            if r.description:
                entry["description"] = r.description
            # what was given (a default given explicitly included: a state_bounds bound of
            # low: -.inf alone must keep it, or it no longer loads)
            entry.update(r.params.model_dump(exclude_unset=True))
            rules.append(entry)
        return {
            "name": self.name,
            "description": self.description,
            "verdicts": {str(s): str(v) for s, v in self.verdicts.items()},
            "rules": rules,
        }


def parse_verdict_table(table: Mapping[Any, Any]) -> dict[Severity, Verdict]:
    """``table`` parsed, refusing a severity given twice (``high`` and ``HIGH``): one of
    the two verdicts would silently win."""
    parsed: dict[Severity, Verdict] = {}
    for key, verdict in table.items():
        severity = Severity.parse(key)
        if severity in parsed:
            raise ValueError(f"severity {str(severity)!r} is given twice ({key!r} and another "
                             "spelling); one verdict would silently win")
        parsed[severity] = Verdict.parse(verdict)
    return parsed


def available_policies() -> dict[str, Path]:
    """Policy names shipped with govgym, mapped to their files."""
    folder = data_dir("policies")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml")}


def load_policy(spec: Policy | Mapping[str, Any] | str | PathLike[str] | None) -> Policy:
    """Load a policy by name (from ``policies/``), from a YAML path, or from a dict.

    A bare word is a shipped policy's name first, else a file of that name.

    ``None`` gives the empty policy (no rules: every proposal is allowed).
    """
    if spec is None:
        return Policy(name="empty", source="<empty>")
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, Mapping):
        return _from_data(spec, "<dict>", None)
    if not isinstance(spec, str | PathLike):
        hint = (": pass its .policy, or assign the kernel to GovernedEnv.kernel"
                if hasattr(spec, "policy") and hasattr(spec, "decide") else "")
        raise TypeError(f"a policy is a name, a path, a mapping or a Policy, "
                        f"not {type(spec).__name__}{hint}")
    text = str(spec)
    path = Path(text)
    looks_like_path = (isinstance(spec, PathLike) or path.suffix in {".yaml", ".yml"}
                       or "/" in text or "\\" in text)
    if not looks_like_path:
        known = available_policies()
        if text in known:
            path = known[text]
        elif not path.is_file():  # a file named without a suffix is read as the file
            names = ", ".join(known) or "(none found)"
            raise PolicyError(text, [("name", f"no policy named {text!r} and no such file; "
                                              f"available: {names}")])
    if path.is_dir():
        raise PolicyError(text, [("path", f"{text} is a directory, not a policy file")])
    if not path.is_file():
        raise PolicyError(text, [("path", f"no such policy file: {text}")])
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise PolicyError(str(path), [("file", reason)]) from None
    except OSError as exc:
        raise PolicyError(str(path), [("file", f"cannot be read: {exc.strerror or exc}")]) from None
    return _from_yaml(content, str(path))


def _from_yaml(text: str, source: str) -> Policy:
    try:
        data, node = _yaml.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        raise PolicyError(source, [(where, f"not valid YAML: {exc}")]) from None
    return _from_data(data, source, node)


def _line(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node along ``path`` in a composed YAML tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            if match is None:
                match = next((k for k, _ in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            match = node.value[key]
        else:
            match = None
        if match is None:
            break
        node = match
        line = node.start_mark.line + 1
    return line


class _Problems:
    def __init__(self, node: yaml.Node | None) -> None:
        self.node = node
        self.items: list[tuple[str, str]] = []

    def add(self, path: tuple[Any, ...], message: str, rule: str | None = None) -> None:
        line = _line(self.node, path)
        where = [f"line {line}"] if line is not None else []
        if rule is not None:
            where.append(f"rule {rule!r}")
        if path:
            where.append("field " + ".".join(str(p) for p in path))
        self.items.append((", ".join(where) or "policy", message))


def _from_data(data: Any, source: str, node: yaml.Node | None) -> Policy:
    problems = _Problems(node)
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else type(data).__name__
        problems.add((), f"a policy is a mapping with keys {sorted(_POLICY_KEYS)}, got {got}")
        raise PolicyError(source, problems.items)
    for key in sorted(set(data) - _POLICY_KEYS, key=str):
        problems.add((key,), f"unknown key; expected one of {sorted(_POLICY_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(("name",), "a policy needs a non-empty string name")
    # an empty ``verdicts:`` or ``rules:`` (None) means the defaults; any other non-mapping
    # or non-list is an error, not "no rules"
    if data.get("description") is not None and not isinstance(data["description"], str):
        problems.add(("description",), f"a description is text, got {_short(data['description'])}")
    verdicts = _parse_verdicts({} if data.get("verdicts") is None else data["verdicts"], problems)
    rules = _parse_rules([] if data.get("rules") is None else data["rules"], problems)
    if problems.items:
        raise PolicyError(source, problems.items)
    return Policy(str(name), tuple(rules), verdicts, str(data.get("description") or ""), source)


def _parse_verdicts(raw: Any, problems: _Problems) -> dict[Severity, Verdict]:
    verdicts = dict(DEFAULT_VERDICTS)
    if not isinstance(raw, Mapping):
        problems.add(("verdicts",), "verdicts maps severities to verdicts, e.g. {high: block}")
        return verdicts
    given: dict[Severity, Any] = {}
    for severity, verdict in raw.items():
        try:
            parsed = Severity.parse(severity)
            verdicts[parsed] = Verdict.parse(verdict)
        except ValueError as exc:
            problems.add(("verdicts", severity), str(exc))
            continue
        if parsed in given:  # "high" and "HIGH": one would silently win
            problems.add(("verdicts", severity),
                         f"severity {str(parsed)!r} is given twice (as {given[parsed]!r} and {severity!r})")
        given[parsed] = severity
    return verdicts


def _parse_rules(raw: Any, problems: _Problems) -> list[RuleConfig]:
    if not isinstance(raw, list):
        problems.add(("rules",), "rules is a list of rule entries")
        return []
    rules: list[RuleConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        rule = _parse_rule(i, entry, problems)
        if rule is None:
            continue
        if rule.name in seen:
            problems.add(("rules", i, "name"),
                         f"duplicate rule name {rule.name!r}; give each rule a unique name", rule.name)
        if rule.name in RESERVED_RULE_NAMES:
            problems.add(("rules", i, "name"),
                         f"rule name {rule.name!r} is reserved: info['cost_{rule.name}'] is already "
                         "part of the info contract", rule.name)
        seen.add(rule.name)
        rules.append(rule)
    return rules


def _parse_rule(i: int, entry: Any, problems: _Problems) -> RuleConfig | None:
    from pydantic import ValidationError

    from govgym.rules import RULE_KINDS
    from govgym.rules.base import FieldError

    at = ("rules", i)
    if not isinstance(entry, Mapping):
        problems.add(at, "a rule entry is a mapping with at least a 'kind'")
        return None
    kind = entry.get("kind")
    name = entry.get("name", kind)
    ok = True
    if "name" in entry and (not isinstance(name, str) or not name.strip()):
        problems.add((*at, "name"), f"a rule name is a non-empty string, got {name!r}")
        name, ok = None, False
    if not isinstance(name, str):
        name = None  # (a missing kind is the problem to report, not a name)
    if not isinstance(kind, str) or kind not in RULE_KINDS:
        known = ", ".join(sorted(RULE_KINDS))
        said = "a rule needs a 'kind'" if kind is None else f"unknown rule kind {kind!r}"
        problems.add((*at, "kind"), f"{said}; known kinds: {known}", name)
        return None
    cls = RULE_KINDS[kind]
    if "severity" in entry and cls.severity_fields and not _is_default_severity(entry["severity"], cls):
        # was: accepted, and silently not used (the default value, as Policy.to_dict wrote
        # it once, says nothing false and loads)
        problems.add((*at, "severity"), _unused_severity(kind, cls), name)
        ok = False
    try:
        severity = Severity.parse(entry.get("severity", cls.default_severity))
    except ValueError as exc:
        problems.add((*at, "severity"), str(exc), name)
        severity, ok = cls.default_severity, False
    cost = entry.get("cost", 1.0)
    try:
        check_cost(cost, "cost")  # the one cost check, as RuleConfig and Violation use it
    except ValueError:
        problems.add((*at, "cost"),
                     f"cost must be a finite number >= 0 and <= {MAX_COST:g}, got {_short(cost)}", name)
        ok = False
    if entry.get("description") is not None and not isinstance(entry["description"], str):
        problems.add((*at, "description"), f"a description is text, got {_short(entry['description'])}",
                     name)
        ok = False
    verdict = None
    if entry.get("verdict") is not None:
        try:
            verdict = Verdict.parse(entry["verdict"])
        except ValueError as exc:
            problems.add((*at, "verdict"), str(exc), name)
            ok = False
    params_raw = {k: v for k, v in entry.items() if k not in _COMMON_RULE_KEYS}
    try:
        params = cls.Params.model_validate(params_raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = err["msg"]
            raised = (err.get("ctx") or {}).get("error")
            if isinstance(raised, FieldError):  # a whole-model check that names its field
                loc, message = (*loc, *raised.loc), str(raised)
            if err["type"] == "extra_forbidden" and len(loc) == 1:
                fields = sorted(cls.Params.model_fields)
                message = (f"unknown field for kind {kind!r}; its fields are {fields}, and every "
                           f"rule takes {sorted(_COMMON_RULE_KEYS)}")
            problems.add((*at, *loc), message, name)
        return None
    if not ok or name is None:
        return None
    return RuleConfig(kind, name, severity, float(cost), params, verdict, str(entry.get("description") or ""))


def _is_default_severity(value: Any, cls: Any) -> bool:
    try:
        return Severity.parse(value) == cls.default_severity
    except (TypeError, ValueError):
        return False


def _unused_severity(kind: str, cls: Any) -> str:
    return (f"a {kind!r} rule does not use severity: its severities are set by "
            f"{' and '.join(cls.severity_fields)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
