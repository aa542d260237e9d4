"""The kernel: evaluates one policy. Pure, fast, and ignorant of Gymnasium.

>>> kernel = Kernel({"name": "demo", "rules": [{"kind": "forbidden_actions", "values": [1]}]})
>>> ctx = kernel.new_context()
>>> kernel.decide(Proposal(action=0), ctx).verdict
<Verdict.ALLOW: 0>
>>> decision = kernel.decide(Proposal(action=1), ctx)
>>> decision.verdict, decision.cost, decision.violations[0].code
(<Verdict.BLOCK: 3>, 1.0, 'forbidden_value')
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from govgym.kernel.policy import Policy, load_policy
from govgym.kernel.types import Decision, Outcome, Proposal, Severity, Verdict, Violation

if TYPE_CHECKING:
    from govgym.rules import Rule

__all__ = ["Context", "Kernel"]

_ALLOW_PRE = Decision(Verdict.ALLOW, stage="pre")
_ALLOW_POST = Decision(Verdict.ALLOW, stage="post")
_AFTER_THE_FACT = {Verdict.BLOCK: Verdict.WARN, Verdict.REPLACE: Verdict.WARN}
_RULE_ERROR = "rule_error"  # the code of a rule that raised: always judged as critical


def error_message(exc: BaseException) -> str:
    """``"Type: message"`` of an exception; its type alone if ``str(exc)`` raises."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() raises still names its type
        return f"{type(exc).__name__} (its message could not be formatted)"


def _violations(found: Iterable[Violation] | None) -> list[Violation]:
    """A rule's result as a list, every item checked to be a Violation."""
    result = list(found) if found else []
    for v in result:
        if not isinstance(v, Violation):
            raise TypeError(f"returned {type(v).__name__}, not a Violation")
    return result


@dataclass(slots=True)
class Context:
    """Per-episode state of every rule (budgets spent, rate windows), kept by the caller."""

    episode: int = 0
    state: dict[str, Any] = field(default_factory=dict)


class Kernel:
    """Judge proposals before a step (:meth:`decide`) and outcomes after it (:meth:`review`).

    The verdict of a decision is the strictest verdict among its violations, where a
    violation's verdict is its rule's own ``verdict`` if set, else the policy's verdict
    for its severity; a ``rule_error`` always gets the policy's verdict for critical, as a
    rule's own ``verdict: allow`` is for what the rule finds, not for the rule breaking.
    After a step the action has already run, so ``block`` and ``replace`` found by
    :meth:`review` become ``warn``; ``terminate`` stays.

    The kernel never raises on a proposal or outcome: a rule that raises, or returns
    something that is not a valid :class:`Violation` (a NaN cost, say), yields a
    critical ``rule_error`` violation naming the exception (fail closed).

    ``check`` must not change rule state; only ``review`` does, so a proposal can be
    judged many times (action masks, replacement search) without side effects.
    """

    def __init__(self, policy: Policy | Mapping[str, Any] | str | None = None,
                 verdicts: Mapping[str, str] | None = None) -> None:
        policy = load_policy(policy)
        if verdicts:
            policy = policy.with_verdicts(verdicts)
        self.policy = policy
        self.rules: list[Rule] = [config.build() for config in policy.rules]
        self._pre = [r for r in self.rules if r.checks_proposals]
        self._post = [r for r in self.rules if r.reviews_outcomes]
        self._rule_verdicts = {c.name: c.verdict for c in policy.rules if c.verdict is not None}
        self._verdicts = dict(policy.verdicts)

    @property
    def checks_proposals(self) -> bool:
        """True when some rule judges proposals, i.e. :meth:`decide` can do more than allow."""
        return bool(self._pre)

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self.rules]

    def new_context(self, episode: int = 0) -> Context:
        return Context(episode, {r.name: r.initial_state() for r in self.rules} if self.rules else {})

    def verdict_of(self, violation: Violation) -> Verdict:
        override = (self._rule_verdicts.get(violation.rule)
                    if violation.code != _RULE_ERROR else None)
        return override if override is not None else self._verdicts[violation.severity]

    def _judge(self, violations: list[Violation], stage: str) -> Decision:
        overrides, verdicts = self._rule_verdicts, self._verdicts
        verdict = Verdict.ALLOW
        cost = 0.0
        for v in violations:  # verdict_of, inlined: this runs on every violating step
            found = overrides.get(v.rule) if overrides and v.code != _RULE_ERROR else None
            if found is None:
                found = verdicts[v.severity]
            if found > verdict:
                verdict = found
            cost += v.cost
        if stage == "post":
            verdict = _AFTER_THE_FACT.get(verdict, verdict)
        return Decision(verdict, tuple(violations), cost, stage)

    @staticmethod
    def _rule_error(rule: Rule, exc: Exception) -> list[Violation]:
        return [Violation(str(rule.name), _RULE_ERROR, Severity.CRITICAL, error_message(exc),
                          max(rule.cost, 1.0))]

    def _run(self, rules: list[Rule], stage: str, arg: Any, ctx: Context) -> Decision | None:
        """Every rule of one stage, each exactly once; ``None`` when none found anything.

        A rule that raises, or returns something that is not a Violation, yields a
        critical ``rule_error`` in place of its result (fail closed); the other rules'
        results and state updates stand.
        """
        state = ctx.state
        violations: list[Violation] | None = None
        for rule in rules:
            try:  # free in CPython >= 3.11 when nothing is raised
                found = (rule.check if stage == "pre" else rule.review)(arg, state.get(rule.name))
                if found and type(found) is not list and type(found) is not tuple:
                    found = list(found)  # a generator or iterator: checking it must not use it up
                if found:
                    for v in found:
                        if type(v) is not Violation and not isinstance(v, Violation):
                            raise TypeError(f"returned {type(v).__name__}, not a Violation")
                        if not isinstance(v.rule, str) or not isinstance(v.code, str):
                            # the verdict lookup hashes the rule name; the record prints both
                            raise TypeError(f"returned a Violation whose rule or code is not "
                                            f"text: {v.rule!r:.60}, {v.code!r:.60}")
                    if violations is None:
                        violations = list(found)
                    else:
                        violations.extend(found)
            except Exception as exc:  # fail closed: a broken rule is a critical violation
                if violations is None:
                    violations = []
                violations.extend(self._rule_error(rule, exc))
        return None if violations is None else self._judge(violations, stage)

    def decide(self, proposal: Proposal, ctx: Context) -> Decision:
        """The verdict on a proposal before it reaches the world."""
        if not self._pre:
            return _ALLOW_PRE
        return self._run(self._pre, "pre", proposal, ctx) or _ALLOW_PRE

    def review(self, outcome: Outcome, ctx: Context) -> Decision:
        """The verdict on an outcome after the step; updates per-episode rule state."""
        if not self._post:
            return _ALLOW_POST
        return self._run(self._post, "post", outcome, ctx) or _ALLOW_POST

    def decide_batch(self, proposals: Sequence[Proposal], ctx: Context) -> list[Decision]:
        """Decide many agents' proposals of one step, jointly, in the order given.

        Each proposal is judged as if the earlier ones that run as proposed (allow, warn)
        had already run (every earlier one, for a rule whose ``admits_all_proposals`` is
        set, such as a ``rate`` with ``count: proposed``): rules see the joint action, so
        two agents cannot each spend the last of a shared budget or the last slot of a
        shared rate. ``ctx`` is not
        changed (the trial is a copy); :meth:`review_batch` after the step spends.
        """
        if not self._pre or len(proposals) <= 1:
            return [self.decide(p, ctx) for p in proposals]
        # a rule whose admit() failed, or whose state cannot be copied (a lock, a
        # connection): every later proposal (every one, for the latter) fails closed
        broken: list[Violation] = []
        trial = Context(ctx.episode, dict(ctx.state))
        uncopyable: set[str] = set()
        for rule in self._pre:  # only their state is used (and admitted to) here
            try:
                trial.state[rule.name] = copy.deepcopy(ctx.state.get(rule.name))
            except Exception as exc:  # its check still runs on the real state; no admit
                broken.extend(self._rule_error(rule, exc))
                uncopyable.add(rule.name)
        decisions: list[Decision] = []
        for proposal in proposals:
            decision = self._run(self._pre, "pre", proposal, trial) or _ALLOW_PRE
            if broken:
                decision = self._judge([*decision.violations, *broken], "pre")
            decisions.append(decision)
            executes = decision.executes
            for rule in self._pre:
                if (executes or rule.admits_all_proposals) and rule.name not in uncopyable:
                    try:
                        rule.admit(proposal, trial.state.get(rule.name))
                    except Exception as exc:
                        broken.extend(self._rule_error(rule, exc))
        return decisions

    def review_batch(self, outcomes: Sequence[Outcome], ctx: Context) -> list[Decision]:
        """Review the outcomes of one joint step (one per agent, in order); rule state
        advances once for the step (``Rule.review_step``)."""
        if not self._post:
            return [_ALLOW_POST for _ in outcomes]
        state = ctx.state
        found: list[list[Violation]] = [[] for _ in outcomes]
        for rule in self._post:
            try:
                results = list(rule.review_step(outcomes, state.get(rule.name)))
                if len(results) != len(outcomes):
                    raise TypeError(f"review_step returned {len(results)} results for "
                                    f"{len(outcomes)} outcomes")
                results = [_violations(r) for r in results]
            except Exception as exc:  # fail closed, for every agent of the step
                for violations in found:
                    violations.extend(self._rule_error(rule, exc))
                continue
            for violations, result in zip(found, results, strict=True):
                violations.extend(result)
        return [self._judge(v, "post") if v else _ALLOW_POST for v in found]

    def action_mask(self, space: Any, propose: Callable[[Any], Proposal], ctx: Context) -> np.ndarray:
        """Which actions of a ``Discrete`` or ``MultiDiscrete`` space may run as proposed.

        ``Discrete``: every action is judged by :meth:`decide` (exact). ``MultiDiscrete``:
        the per-dimension masks of rules that can give one and whose verdict stops the
        action (a combination of dimensions is not enumerated). A mask that would
        forbid every action (or every value of a dimension) is returned all-True: the
        step-time verdict then handles the action, and a learner never sees an empty
        choice.
        """
        nvec = getattr(space, "nvec", None)
        if nvec is not None:
            return self._multi_discrete_mask(space, np.asarray(nvec).reshape(-1), ctx)
        n = int(space.n)
        start = int(getattr(space, "start", 0))
        mask = np.ones(n, dtype=bool)
        if self._pre:
            for i in range(n):
                mask[i] = self.decide(propose(np.int64(start + i)), ctx).executes
        return mask if mask.any() else np.ones(n, dtype=bool)

    def _multi_discrete_mask(self, space: Any, nvec: np.ndarray, ctx: Context) -> np.ndarray:
        mask = np.ones(int(nvec.sum()), dtype=bool)
        for rule in self._pre:
            stops = self._rule_verdicts.get(rule.name, self._verdicts[rule.severity]) > Verdict.WARN
            if not stops:
                continue
            try:
                part = rule.mask(space, ctx.state.get(rule.name))
                if part is not None:
                    part = np.asarray(part, dtype=bool)
                    if part.shape != mask.shape:  # was: raised out of action_masks()
                        raise ValueError(f"mask of shape {part.shape}, expected {mask.shape}")
                    mask &= part
            except Exception:  # a broken mask masks nothing: the step-time decision still
                pass            # judges the action (a rule_error if the rule is broken there too)
        offset = 0
        for n in nvec:
            if not mask[offset:offset + n].any():
                mask[offset:offset + n] = True
            offset += int(n)
        return mask
