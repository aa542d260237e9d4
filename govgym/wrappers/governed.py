"""``GovernedEnv``: the Gymnasium wrapper that puts a policy kernel around any env."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from os import PathLike
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from govgym.audit.recorder import Recorder, summarize_action
from govgym.kernel import Decision, Kernel, Outcome, Policy, Proposal, Verdict, load_policy
from govgym.shaping import Shaping

__all__ = ["GovernedEnv"]

# module constants: an Enum class attribute costs ~100 ns a lookup in CPython 3.11
_WARN, _REPLACE, _BLOCK, _TERMINATE = Verdict.WARN, Verdict.REPLACE, Verdict.BLOCK, Verdict.TERMINATE
_VERDICT_NAMES = tuple(str(v) for v in Verdict)  # str(Verdict) goes through Enum.name: ~230 ns


def _declarative(value: Any) -> Any:
    """Policies and shaping as plain data, so ``env.spec`` can rebuild the wrapper."""
    if isinstance(value, Policy):
        return value.to_dict()
    if isinstance(value, Shaping):
        return value.to_dict()
    return value


def _time_limit_of(env: gym.Env) -> int | None:
    """The step limit of a ``TimeLimit`` in the world's wrapper stack, if any.

    Read from the wrappers, not ``env.spec``: a wrapper's ``spec`` property caches itself
    on first use, and computing it here would freeze the stack's spec before
    ``gym.make`` has set it.
    """
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._max_episode_steps)
        env = env.env
    return None


class GovernedEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Pass every action through a governance policy before and after it reaches ``env``.

    One step: the world describes the action (``env.unwrapped.describe(action)`` if it
    has one), the kernel decides, the decision is enacted, the world steps, the kernel
    reviews the outcome, the reward is shaped and the decision is recorded. A world may
    also offer ``idle_info()``, its info for a step in which nothing ran (used for
    blocked steps, so their info has the same keys).

    Verdicts and how they are enacted (the policy maps each severity to a verdict;
    ``intervention`` overrides that mapping):

    ==========  ================================================================
    allow       the action runs
    warn        the action runs; the step is penalised by ``shaping``
    block       the action does not run; the last observation is returned,
                world reward 0, the episode goes on
    replace     a substitute runs instead: the rules' nearest repair (a Box action
                clipped out of a forbidden range) if the policy allows it, else
                ``safe_action`` if allowed, else the first allowed action of a
                discrete space; if none is allowed the step is blocked
    terminate   the action does not run and ``terminated=True`` (not truncated);
                a critical outcome after a step also terminates
    ==========  ================================================================

    ``intervention="monitor"`` allows everything (rule-level verdicts too), turns shaping
    off and installs no enforcement inside the world (``Rule.attach`` is skipped): the
    same meter on an ungoverned run, for baselines.

    Shaping: ``reward' = reward - min(max_penalty, sum of severity penalties)``, plus
    ``clean_bonus`` on a step without violations (see :class:`govgym.shaping.Shaping`).

    ``info`` on every step and reset:

    - ``cost``: float >= 0, the summed cost of this step's violations (``0.0`` on reset)
    - ``cost_<rule>``: the same per rule, for every rule of the policy
    - ``governance``: ``verdict``, ``violations`` (plain dicts with ``stage`` and
      ``executed``), ``proposed_action``, ``executed_action`` (``None`` if nothing ran),
      ``terminated_by_policy``, ``raw_reward`` and ``reward_delta``
    - ``episode_cost``, ``episode_violations``, ``episode_executed_violations``: running
      totals of the episode so far (0 on reset), so the last step's info has the
      episode's totals whoever ended it; ``cost_limit`` when one is set

    Action summaries (``proposed_action``, ``executed_action``) are JSON-ready and of one
    type per env: a list for numeric actions (a scalar becomes a one-element list), a
    string for text actions, ``None`` when nothing ran. That keeps vector envs' info
    arrays well-typed.

    ``max_episode_steps`` (default: the world's own) truncates the episode after that
    many *governed* steps, blocked ones included: a world's own ``TimeLimit`` only
    counts the steps that reached it, and an agent that is always blocked must still
    see its episode end.

    Example:
        >>> import gymnasium as gym
        >>> from govgym import GovernedEnv
        >>> policy = {"name": "no-left", "rules": [{"kind": "forbidden_actions", "values": [0]}]}
        >>> env = GovernedEnv(gym.make("CartPole-v1"), policy, intervention={"high": "replace"})
        >>> obs, info = env.reset(seed=0)
        >>> info["cost"]
        0.0
        >>> obs, reward, terminated, truncated, info = env.step(0)
        >>> info["governance"]["verdict"], info["governance"]["executed_action"], info["cost"]
        ('replace', [1], 1.0)
        >>> env.action_masks()
        array([False,  True])
    """

    def __init__(
        self,
        env: gym.Env,
        policy: Policy | Mapping[str, Any] | str | None = None,
        *,
        intervention: Mapping[str, str] | str | None = None,
        shaping: Shaping | Mapping[str, Any] | None = None,
        safe_action: Any = None,
        cost_limit: float | None = None,
        max_episode_steps: int | None = None,
        audit_path: str | PathLike[str] | None = None,
        run_id: str | None = None,
        flush_every: int = 1024,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, policy=_declarative(policy), intervention=intervention,
            shaping=_declarative(shaping), safe_action=safe_action, cost_limit=cost_limit,
            max_episode_steps=max_episode_steps,
            audit_path=None if audit_path is None else str(audit_path), run_id=run_id,
            flush_every=flush_every,
        )
        gym.Wrapper.__init__(self, env)
        monitor = intervention == "monitor"
        if isinstance(intervention, str) and not monitor:
            raise ValueError(f"intervention must be a severity->verdict mapping or 'monitor', "
                             f"got {intervention!r}")
        policy = load_policy(policy)
        self.kernel = Kernel(policy.monitor_only()) if monitor else Kernel(policy, intervention)
        self.shaping = Shaping.off() if monitor else Shaping.from_config(shaping)
        self.safe_action = safe_action
        self.cost_limit = None if cost_limit is None else float(cost_limit)
        self.max_episode_steps = (_time_limit_of(env) if max_episode_steps is None
                                  else int(max_episode_steps))
        self._describe = getattr(env.unwrapped, "describe", None)
        self._world_idle_info = getattr(env.unwrapped, "idle_info", None)
        if not monitor:  # a monitor measures the world as it is: no enforcement inside it
            for rule in self.kernel.rules:
                rule.attach(env.unwrapped)
        self._cost_keys = [f"cost_{name}" for name in self.kernel.rule_names]
        self.recorder: Recorder | None = None
        if audit_path is not None:
            import uuid

            run = run_id or uuid.uuid4().hex[:12]
            path = str(audit_path).replace("{run}", run)
            self.recorder = Recorder(path, run_id=run, flush_every=flush_every)
        self._ctx = self.kernel.new_context()
        # no rules and no describe(): nothing to judge, only the info contract to keep
        self._unruled = not self.kernel.rules and self._describe is None
        self._episode = -1
        self._step = 0
        self._last_obs: Any = None
        self._episode_cost = 0.0
        self._episode_violations = 0
        self._episode_executed = 0

    # -- proposals and substitutes -------------------------------------------------

    def propose(self, action: Any) -> Proposal:
        """The proposal the kernel judges for ``action`` in the current state."""
        meaning = self._describe(action) if self._describe is not None else {}
        return Proposal(action, meaning, self._last_obs)

    def _idle_info(self) -> dict[str, Any]:
        """The world's info for a step in which nothing ran (``world.idle_info()`` if it
        has one, e.g. zero damage), so a blocked step carries the same keys as others."""
        return dict(self._world_idle_info()) if self._world_idle_info is not None else {}

    def action_masks(self) -> np.ndarray:
        """Allowed actions now (``Discrete``/``MultiDiscrete``), for sb3-contrib's MaskablePPO."""
        space = self.action_space
        if not isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
            raise TypeError(f"action_masks needs a Discrete or MultiDiscrete action space, got {space}")
        return self.kernel.action_mask(space, self.propose, self._ctx)

    def _allowed(self, action: Any) -> bool:
        return self.action_space.contains(action) and self.kernel.decide(
            self.propose(action), self._ctx).executes

    def _substitute(self, action: Any) -> Any | None:
        space = self.action_space
        candidate = action
        for rule in self.kernel.rules:
            repaired = rule.repair(candidate, space)
            if repaired is not None:
                candidate = repaired
        if candidate is not action and self._allowed(candidate):
            return candidate
        if self.safe_action is not None:
            safe = np.asarray(self.safe_action, dtype=space.dtype).reshape(space.shape)
            if space.shape == ():
                safe = safe.item()
            if self._allowed(safe):
                return safe
        if isinstance(space, gym.spaces.Discrete):
            mask = self.kernel.action_mask(space, self.propose, self._ctx)
            start = int(space.start)
            for i in np.flatnonzero(mask):
                if self._allowed(start + int(i)):
                    return start + int(i)
        return None

    # -- the Gymnasium API ----------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.recorder is not None:
            self.recorder.flush()
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode += 1
        self._step = 0
        self._ctx = self.kernel.new_context(self._episode)
        self._last_obs = obs
        self._episode_cost = 0.0
        self._episode_violations = 0
        self._episode_executed = 0
        info = dict(info)
        info["cost"] = 0.0
        for key in self._cost_keys:
            info[key] = 0.0
        info["governance"] = {
            "verdict": "allow", "violations": [], "proposed_action": None,
            "executed_action": None, "terminated_by_policy": False,
            "raw_reward": 0.0, "reward_delta": 0.0,
        }
        if self.cost_limit is not None:
            info["cost_limit"] = self.cost_limit
        info["episode_cost"] = 0.0
        info["episode_violations"] = 0
        info["episode_executed_violations"] = 0
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._unruled:
            return self._step_unruled(action)
        proposal = self.propose(action)
        pre = self.kernel.decide(proposal, self._ctx)
        verdict = pre.verdict
        to_run = action
        if verdict == _REPLACE:
            to_run = self._substitute(action)
            if to_run is None:
                verdict = _BLOCK
        runs = verdict <= _REPLACE  # allow, warn or replace
        if runs:
            obs, reward, terminated, truncated, info = self.env.step(to_run)
            meaning = proposal.meaning if to_run is action else (
                self._describe(to_run) if self._describe is not None else {})
        else:
            # a copy: callers may keep and modify the observation of an earlier step
            obs, reward, terminated, truncated, info = (
                copy.deepcopy(self._last_obs), 0.0, False, False, self._idle_info())
            meaning, to_run = {}, None
        outcome = Outcome(obs, float(reward), terminated, truncated, info, to_run, runs, meaning)
        post = self.kernel.review(outcome, self._ctx)
        stopped_by_policy = verdict == _TERMINATE or post.verdict == _TERMINATE
        return self._finish(proposal, to_run, verdict, pre, post, outcome, stopped_by_policy)

    def _step_unruled(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """``step`` for a policy without rules: the same info, record and reward."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        raw_reward = float(reward)
        delta = self.shaping.clean_bonus
        info = dict(info)
        info["cost"] = 0.0
        proposed = summarize_action(action)
        info["governance"] = {
            "verdict": "allow", "violations": [], "proposed_action": proposed,
            "executed_action": summarize_action(action), "terminated_by_policy": False,
            "raw_reward": raw_reward, "reward_delta": delta,
        }
        truncated = self._close_step(info, obs, terminated, truncated, proposed, "allow", [], 0.0,
                                     delta, None)
        return obs, raw_reward + delta, terminated, truncated, info

    def _finish(self, proposal: Proposal, ran: Any, verdict: Verdict, pre: Decision,
                post: Decision, outcome: Outcome, stopped_by_policy: bool
                ) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        action = proposal.action
        final = verdict if verdict >= post.verdict else post.verdict
        info = dict(outcome.info)
        for key in self._cost_keys:
            info[key] = 0.0
        if pre.violations or post.violations:
            pre_ran = verdict <= _WARN
            violations = [{**v.as_dict(), "stage": "pre", "executed": pre_ran}
                          for v in pre.violations]
            violations += [{**v.as_dict(), "stage": "post", "executed": True}
                           for v in post.violations]
            cost = pre.cost + post.cost
            delta = self.shaping.delta(pre.violations + post.violations)
            for v in violations:
                info[f"cost_{v['rule']}"] += v["cost"]
            self._episode_cost += cost
            self._episode_violations += len(violations)
            self._episode_executed += sum(1 for v in violations if v["executed"])
        else:  # the common case: skip the comprehensions, the generator and shaping
            violations = []
            cost = 0.0
            delta = self.shaping.clean_bonus
        raw_reward = outcome.reward
        terminated = outcome.terminated or stopped_by_policy
        truncated = outcome.truncated and not stopped_by_policy  # ended by policy: terminated only
        info["cost"] = cost
        proposed = summarize_action(action)
        executed = None if ran is None else summarize_action(ran)
        final_name = _VERDICT_NAMES[final]
        info["governance"] = {
            "verdict": final_name, "violations": violations, "proposed_action": proposed,
            "executed_action": executed, "terminated_by_policy": stopped_by_policy,
            "raw_reward": raw_reward, "reward_delta": delta,
        }
        summary = proposed
        if self.recorder is not None and proposal.meaning:
            summary = {"action": proposed, **{k: summarize_action(v) for k, v in proposal.meaning.items()}}
        extra = {"executed_action": executed} if ran is not action else None
        truncated = self._close_step(info, outcome.observation, terminated, truncated, summary,
                                     final_name, violations, cost, delta, extra)
        return outcome.observation, raw_reward + delta, terminated, truncated, info

    def _close_step(self, info: dict[str, Any], obs: Any, terminated: bool, truncated: bool,
                    summary: Any, verdict: str, violations: list[dict[str, Any]], cost: float,
                    delta: float, extra: dict[str, Any] | None) -> bool:
        """What every step ends with: the audit record, running episode totals, and the
        step limit (blocked steps count too). Returns ``truncated``."""
        if self.cost_limit is not None:
            info["cost_limit"] = self.cost_limit
        if self.recorder is not None:
            self.recorder.append(self._episode, self._step, summary, verdict, violations, cost, delta,
                                 extra=extra)
        self._step += 1
        self._last_obs = obs
        # running totals on every step: whoever ends the episode (the world, the policy,
        # an outer TimeLimit), its last info carries the episode's totals
        info["episode_cost"] = self._episode_cost
        info["episode_violations"] = self._episode_violations
        info["episode_executed_violations"] = self._episode_executed
        if not terminated and self.max_episode_steps is not None and self._step >= self.max_episode_steps:
            truncated = True
        if (terminated or truncated) and self.recorder is not None:
            self.recorder.flush()
        return truncated

    def close(self) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.close()
        super().close()
