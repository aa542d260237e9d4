"""``GovernedEnv``: the Gymnasium wrapper that puts a policy kernel around any env."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Mapping
from os import PathLike, fspath
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from govgym.audit.recorder import Recorder, new_run_id, summarize_action, summarize_meaning
from govgym.kernel import (
    Decision,
    Kernel,
    Outcome,
    Policy,
    Proposal,
    Severity,
    Verdict,
    Violation,
    load_policy,
)
from govgym.kernel.kernel import error_message
from govgym.kernel.types import SEVERITY_NAMES, check_cost
from govgym.shaping import Shaping
from govgym.wrappers.info import StepInfo

__all__ = ["GovernedEnv"]

# module constants: an Enum class attribute costs ~100 ns a lookup in CPython 3.11
_ALLOW, _WARN, _REPLACE, _BLOCK, _TERMINATE = (
    Verdict.ALLOW, Verdict.WARN, Verdict.REPLACE, Verdict.BLOCK, Verdict.TERMINATE)
_ALLOW_PRE = Decision(Verdict.ALLOW, stage="pre")
# info["governance"] with its keys in contract order: a step copies it and fills it in,
# which is ~2x cheaper than building the 7-key dict anew
_GOVERNANCE = {
    "verdict": "allow", "violations": None, "proposed_action": None, "executed_action": None,
    "terminated_by_policy": False, "raw_reward": 0.0, "reward_delta": 0.0,
}
_SEVERITY_NAMES = SEVERITY_NAMES
_VERDICT_NAMES = tuple(str(v) for v in Verdict)  # str(Verdict) goes through Enum.name: ~230 ns


def _declarative(value: Any) -> Any:
    """Policies, shaping and NumPy values as plain data, so ``env.spec`` can rebuild the
    wrapper (and ``env.spec.to_json()`` write it)."""
    if isinstance(value, Policy):
        return value.to_dict()
    if isinstance(value, Shaping):
        return value.to_dict()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, PathLike):  # a policy file: its path as text, for env.spec.to_json()
        return fspath(value)
    return value


def _named(table: Any, values: Callable[[Any], Any]) -> Any:
    """A mapping keyed by severity with names for keys (JSON writes an ``IntEnum`` key as
    its number, which does not read back as a severity) and ``values`` applied; anything
    else, or a table with a key that is no severity, as it is, for the constructor to
    refuse."""
    if not isinstance(table, Mapping):
        return table
    try:
        return {str(Severity.parse(k)): values(v) for k, v in table.items()}
    except (TypeError, ValueError):
        return dict(table)


def _declarative_intervention(value: Any) -> Any:
    return _named(value, lambda v: str(Verdict.parse(v)) if isinstance(v, Verdict) else v)


def _declarative_shaping(value: Any) -> Any:
    if isinstance(value, Mapping) and isinstance(value.get("penalties"), Mapping):
        return {**value, "penalties": _named(value["penalties"], _declarative)}
    return _declarative(value)


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


def _merged(world_info: dict[str, Any], contract: dict[str, Any]) -> StepInfo:
    """The world's info with the contract's keys after it; a cost the world reports
    itself (Safety-Gymnasium style ``info["cost"]``) is kept as ``world_cost``."""
    info = StepInfo(world_info)
    info.update(contract)
    if "cost" in world_info:
        info["world_cost"] = world_info["cost"]
    return info


def _snapshot(obs: Any) -> Any:
    """A copy of an observation that later in-place edits of ``obs`` cannot reach."""
    if type(obs) is np.ndarray:
        return obs.copy()
    if obs is None or isinstance(obs, str | bytes | int | float):
        return obs
    return copy.deepcopy(obs)


#: wrappers that pass observations through unchanged: a world's ``blocked_step`` may answer
#: for a blocked step beneath them (any other wrapper would be skipped)
_TRANSPARENT_WRAPPERS = (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker)


def _blocked_step_hook(env: gym.Env) -> Any:
    """The world's ``blocked_step`` method, if it has one and only transparent wrappers
    sit between ``env`` and the world."""
    hook = getattr(env.unwrapped, "blocked_step", None)
    if not callable(hook):
        return None
    layer = env
    while layer is not layer.unwrapped:
        if not isinstance(layer, _TRANSPARENT_WRAPPERS):
            return None
        layer = layer.env
    return hook


class GovernedEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Pass every action through a governance policy before and after it reaches ``env``.

    One step: the world describes the action (``env.unwrapped.describe(action)`` if it
    has one), the kernel decides, the decision is enacted, the world steps, the kernel
    reviews the outcome, the reward is shaped and the decision is recorded. A world may
    also offer ``idle_info()``, its info for a step in which nothing ran (used for
    blocked steps, so their info has the same keys; without it a blocked step's info
    holds governance's keys only: the last step's world info is not repeated, as a
    per-step value in it, such as a world's own cost, would then count twice), and
    ``blocked_step(action, reasons)``, which takes a blocked step (``reasons``:
    ``"rule/code: message"`` of each violation that stopped it) and returns its
    ``(observation, truncated, info)``, so the world can count the step, end the episode
    at its own step limit and tell the agent what was refused and why (the SQL world's
    text mode does).
    It is used only when no wrapper that could change observations sits between this
    wrapper and the world (Gymnasium's ``OrderEnforcing`` and ``PassiveEnvChecker``
    may); otherwise a blocked step returns the last observation.

    Verdicts and how they are enacted (the policy maps each severity to a verdict;
    ``intervention`` overrides that mapping):

    ==========  ================================================================
    allow       the action runs
    warn        the action runs; the step is penalised by ``shaping``
    block       the action does not run; the last observation is returned (the
                world's ``blocked_step`` observation if it has one), world reward 0,
                the episode goes on
    replace     a substitute runs instead: the rules' nearest repair (a Box action
                clipped out of a forbidden range) if the policy allows it, else
                ``safe_action`` if allowed, else the first allowed action of a
                discrete space (``MultiDiscrete``: the dimensions the mask rules out
                set to their first allowed value); if none is allowed the step is
                blocked. The substitute's own violations (a warning, say) are
                reported and cost like any executed action's
    terminate   the action does not run and ``terminated=True``: the policy's end
                is a terminal state, not a truncation (``truncated`` is True
                only if the step limit falls on the same step, as Gymnasium's
                ``TimeLimit`` reports for any env); a violation found after a step
                whose verdict is ``terminate`` (critical, by default)
                also terminates
    ==========  ================================================================

    ``intervention="monitor"`` allows everything (rule-level verdicts too), turns shaping
    off and installs no enforcement inside the world (``Rule.attach`` is skipped): the
    same meter on an ungoverned run, for baselines.

    Shaping: ``reward' = reward - min(max_penalty, sum of severity penalties)``, plus
    ``clean_bonus`` on a step without violations (see :class:`govgym.shaping.Shaping`).
    Without a ``shaping`` argument the penalties are low 0.05, medium 0.2, high 0.5,
    critical 1.0, capped at ``max_penalty=1.0``, no clean bonus; a ``penalties`` table
    that is given is the whole table (a severity it does not list is not penalised);
    ``Shaping.off()`` turns shaping off.
    The reward this wrapper returns is the shaped one, so what wrappers around it count
    (``RecordEpisodeStatistics``, SB3's ``Monitor`` and ``evaluate_policy``) is the
    shaped return; the world's own reward of a step is ``info["governance"]["raw_reward"]``
    (:mod:`govgym.integrations.sb3` logs and evaluates both returns).
    A violation whose verdict is ``allow`` costs but is not penalised. A blocked step's
    world reward is 0: in a world that pays a negative reward every step (MountainCar,
    Acrobot), being blocked can then pay better than acting, and an agent may learn to
    propose forbidden actions; there, use ``replace`` or a penalty above the step cost.

    A violation's ``executed`` says whether the action it is about reached the world: a
    proposal's pre-step violations when it ran (allow, warn), a substitute's, and the
    post-step ones when anything ran (on a blocked step they are not executed).

    ``info`` on every step and reset is a :class:`govgym.wrappers.StepInfo`: a ``dict``
    whose deep copy (SB3's ``DummyVecEnv`` copies every step's infos) skips
    ``copy.deepcopy``'s generic walk of the nested ``governance`` values. It holds:

    - ``cost``: float >= 0, the summed cost of this step's violations (``0.0`` on reset)
    - ``cost_<rule>``: the same per rule, for every rule of the policy
    - ``governance``: ``verdict``, ``violations`` (plain dicts with ``stage`` and
      ``executed``), ``proposed_action``, ``executed_action`` (``None`` if nothing ran),
      ``terminated_by_policy``, ``raw_reward`` and ``reward_delta``; on a ``replace``
      step in which a rule's ``repair`` raised, also ``repair_errors`` (``{"rule",
      "error"}`` each, in the audit record's ``extra`` too): that repair offered nothing
      and the fallbacks ran, so neither verdict nor cost changes, as whatever runs
      instead is judged by the kernel like any action
    - ``episode_cost``, ``episode_violations``, ``episode_executed_violations``: running
      totals of the episode so far (0 on reset), so the last step's info has the
      episode's totals whoever ended it; ``cost_limit`` when one is set
    - ``world_cost``: the world's own ``info["cost"]``, when it reports one (e.g. a
      Safety-Gymnasium env): ``cost`` is governance's, so the world's is kept here

    Action summaries (``proposed_action``, ``executed_action``) are JSON-ready and of one
    type per env: a list for numeric actions (a scalar becomes a one-element list), a
    string for text actions, ``None`` when nothing ran. That keeps vector envs' info
    arrays well-typed.

    ``max_episode_steps`` (default: the world's own; ``-1``: no limit of its own, as in
    ``gymnasium.make``) truncates the episode after that many *governed* steps, blocked
    ones included: a world's own ``TimeLimit`` only
    counts the steps that reached it, and an agent that is always blocked must still
    see its episode end. A ``TimeLimit`` directly around the world (as ``gym.make``
    puts it) is taken over: removed from the stack, its limit the default of this one,
    so ``GovernedEnv(gym.make("CartPole-v1"), ...)`` has one limit of 500 governed steps
    and ``env.spec.max_episode_steps`` says so. A ``TimeLimit`` deeper in the stack
    stays; a longer limit than that one's needs a world built without it
    (``gym.make(id, max_episode_steps=-1)``); otherwise a warning says so. On the limit
    step ``truncated`` is True whatever else ended the episode, exactly as Gymnasium's
    ``TimeLimit`` does, so a governed
    world built by :func:`govgym.make` and a registered id (whose limit is Gymnasium's
    ``TimeLimit`` around this wrapper) report the same flags; ``terminated`` and
    ``governance["terminated_by_policy"]`` still say that the world or the policy ended
    it, and learners (SB3, RLlib) treat ``terminated`` as terminal.

    The audit log is flushed at every episode end this wrapper sees (the world's, the
    policy's, its own step limit), on ``reset``, on ``close``, every ``flush_every``
    records and when the process exits normally. A ``TimeLimit`` *around* it (a
    registered id's) truncates after this wrapper returned, so that episode's records
    are flushed by the next ``reset`` or ``close``. A vector env's worker processes do
    not exit normally unless the vector env is closed: Gymnasium's ``AsyncVectorEnv``
    (also when it is garbage-collected) and SB3's ``SubprocVecEnv`` otherwise stop them,
    and the records since each worker's last flush are lost, so call ``envs.close()``
    (``flush_every=1`` writes every record at once). Such a worker's session lacks the
    close record a recorder writes when it is closed (or at a normal exit), so
    :func:`govgym.audit.read` lists it in ``unclosed`` and ``govgym audit verify`` fails
    on it; keep ``recorder.last_hash`` (after ``close``) to check that a log still ends
    where it did.
    A process forked from this one does not write to this log (its copy refuses to
    record, and drops the records buffered here, which this process writes).

    ``audit_path`` writes every decision to a hash-chained JSON Lines log
    (:class:`govgym.audit.Recorder`; the proposal is recorded as ``{"action": ...,
    "meaning": ...}`` when the world describes its actions). One file takes one
    recorder: a second env opening the same path is refused, so in a vector env write
    ``audit_path="runs/audit-{run}.jsonl"``, where ``{run}`` becomes each env's run id
    (``run_id``, or a random one). For the same reason an env with an ``audit_path``
    cannot be pickled or deep-copied (a ``TypeError`` says so); rebuild it from
    ``env.spec`` instead. Without one it pickles like any Gymnasium env. Gymnasium's
    ``check_env`` rebuilds the env from ``env.spec`` while it is open (its close check),
    which a fixed path refuses: check an env whose path has ``{run}``, or pass
    ``skip_close_check=True``.

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

    _part_of_entry_point = False  # True when govgym.registration.make_governed built it

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
            self, policy=_declarative(policy), intervention=_declarative_intervention(intervention),
            shaping=_declarative_shaping(shaping), safe_action=_declarative(safe_action),
            cost_limit=_declarative(cost_limit),
            max_episode_steps=_declarative(max_episode_steps),
            audit_path=None if audit_path is None else str(audit_path), run_id=run_id,
            flush_every=_declarative(flush_every),
        )
        # the nearest TimeLimit's limit; one directly beneath (gym.make's) is absorbed, its
        # limit this wrapper's default, so one limit counts every step and the stack is the
        # same whether the world was built with it or not (gym.make(env.spec) rebuilds it)
        inner_limit = _time_limit_of(env)
        absorbed = isinstance(env, gym.wrappers.TimeLimit)
        if absorbed:
            env = env.env
        gym.Wrapper.__init__(self, env)
        monitor = intervention == "monitor"
        if isinstance(intervention, str) and not monitor:
            raise ValueError(f"intervention must be a severity->verdict mapping or 'monitor', "
                             f"got {intervention!r}")
        policy = load_policy(policy)
        self._monitor = monitor
        self._describe = getattr(env.unwrapped, "describe", None)
        self._world_idle_info = getattr(env.unwrapped, "idle_info", None)
        self._world_blocked_step = _blocked_step_hook(env)
        self._episode = -1
        # every argument is checked before the kernel's rules attach to the world (the sql
        # rule installs its engine guard there): a refused wrapper leaves the world as it was
        kernel = Kernel(policy.monitor_only()) if monitor else Kernel(policy, intervention)
        self.shaping = Shaping.off() if monitor else Shaping.from_config(shaping)
        self.safe_action = safe_action
        if safe_action is not None:
            self._check_safe_action()
        self._cost_limit: float | None = (
            None if cost_limit is None else check_cost(cost_limit, "cost_limit"))
        if max_episode_steps is not None and (
                isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int | np.integer)
                or (max_episode_steps < 1 and max_episode_steps != -1)):
            raise ValueError(f"max_episode_steps must be a whole number >= 1, or -1 for no limit "
                             f"(as in gymnasium.make), got {max_episode_steps!r}")
        self.max_episode_steps: int | None = (
            inner_limit if max_episode_steps is None
            else None if max_episode_steps == -1 else int(max_episode_steps))
        if not absorbed and inner_limit is not None and self.max_episode_steps is not None and (
                self.max_episode_steps > inner_limit):
            warnings.warn(
                f"max_episode_steps={self.max_episode_steps}, but the world's own TimeLimit ends "
                f"episodes after {inner_limit} steps; build the world without it "
                "(gym.make(id, max_episode_steps=-1)) or use govgym.make", stacklevel=2)
        self.recorder: Recorder | None = None
        if audit_path is not None:
            if not fspath(audit_path):
                raise ValueError("audit_path is empty: give a file, e.g. 'runs/audit-{run}.jsonl'")
            run = new_run_id(run_id)
            template = str(fspath(audit_path))
            if "{run}" in template and ("/" in run or "\\" in run or run in (".", "..")):
                raise ValueError(f"run_id {run!r} would take audit_path {template!r} out of its "
                                 "folder ({run} becomes the run id): use one without / or \\")
            path = template.replace("{run}", run)
            try:
                self.recorder = Recorder(path, run_id=run, flush_every=flush_every)
            except RuntimeError as exc:
                if run_id is None or "{run}" not in str(audit_path) or "already open" not in str(exc):
                    raise
                raise RuntimeError(  # was: advice to use {run}, which this path already does
                    f"audit log {path} is already open by another recorder: every env given "
                    f"run_id={run_id!r} writes the same file, whatever {{run}} in the path; give "
                    "each env its own run_id, or leave run_id out for a random one") from None
        try:
            self.kernel = kernel  # attaches the rules; the info templates follow its rules
        except BaseException:
            if self.recorder is not None:
                self.recorder.close()
            raise
        self._step = 0
        self._refuse_steps = False  # set by close() when there is an audit log
        self._last_obs: Any = None
        self._episode_cost = 0.0
        self._episode_violations = 0
        self._episode_executed = 0

    @property
    def kernel(self) -> Kernel:
        """The kernel that judges every step. Assigning another one takes effect at once:
        unless this env is a monitor, the current kernel's rules are detached from the
        world (``Rule.detach``: the sql rule's engine guard is removed) and the new
        kernel's attached, all or nothing; its rules start from a fresh context.

        Assigning ``kernel``, ``shaping`` or ``cost_limit`` changes this env only:
        ``env.spec`` still describes the env as it was built, so ``gym.make(env.spec)``
        (and a vector env or worker rebuilt from it) gets the original; pass the change
        as an argument instead (``gym.make(env.spec, policy=...)``) to have it carried."""
        return self._kernel

    @kernel.setter
    def kernel(self, kernel: Kernel) -> None:
        if not self._monitor:  # a monitor measures the world as it is: no enforcement inside it
            self._attach(kernel)
        self._kernel = kernel
        names = kernel.rule_names
        self._cost_keys = [f"cost_{name}" for name in names]
        self._cost_key_of = {name: f"cost_{name}" for name in names}
        own_propose = type(self).propose is not GovernedEnv.propose  # a subclass's proposals
        # no rules and no describe(): nothing to judge, only the info contract to keep
        self._unruled = not kernel.rules and self._describe is None and not own_propose
        # nothing to judge before a step: skip building the proposal
        self._judges_proposals = kernel.checks_proposals or self._describe is not None or own_propose
        # a severity or rule mapped to allow: its violations cost but are not penalised
        self._allow_verdicts = _ALLOW in kernel.policy.verdicts.values() or any(
            Verdict.parse(c.verdict) == _ALLOW for c in kernel.policy.rules if c.verdict is not None)
        self._ctx = kernel.new_context(max(self._episode, 0))
        self.cost_limit = self._cost_limit  # the info templates hold the cost_<rule> keys

    def _attach(self, kernel: Kernel) -> None:
        """Detach the current kernel's rules from the world and attach ``kernel``'s; all or
        nothing: if one of them fails to attach, the ones attached are detached, the
        current kernel's are attached again, and the error is raised."""
        for rule in kernel.rules:  # before anything is attached: a misfit changes nothing
            try:
                rule.check_spaces(self.observation_space, self.action_space)
            except ValueError as exc:  # a rules.base.FieldError (not imported: it needs pydantic)
                field = ".".join(str(part) for part in getattr(exc, "loc", ()))
                raise ValueError(
                    f"policy {kernel.policy.name!r} does not fit this env: rule {rule.name!r} "
                    f"({rule.kind}), field {field}: {exc}") from None
        world = self.env.unwrapped
        current = getattr(self, "_kernel", None)
        old = [] if current is None or current is kernel else current.rules
        for rule in reversed(old):
            rule.detach(world)
        attached: list[Any] = []
        try:
            for rule in kernel.rules:
                rule.attach(world)
                attached.append(rule)
        except BaseException:
            for rule in reversed(attached):
                rule.detach(world)
            for rule in old:
                rule.attach(world)
            raise

    @property
    def cost_limit(self) -> float | None:
        """The per-episode cost limit reported in ``info`` (``None``: not reported);
        assignable, for this env only (see :attr:`kernel`)."""
        return self._cost_limit

    @cost_limit.setter
    def cost_limit(self, value: float | None) -> None:
        if value is not None:
            value = check_cost(value, "cost_limit")  # a NaN, infinite or negative limit is refused
        self._cost_limit = value
        # every step's info with the contract's keys in order and starting values: a
        # step copies it and assigns, rather than growing a dict key by key
        limit = {} if value is None else {"cost_limit": value}
        totals = {"episode_cost": 0.0, "episode_violations": 0, "episode_executed_violations": 0}
        zero_costs = dict.fromkeys(self._cost_keys, 0.0)
        self._info_unruled = {"cost": 0.0, "governance": None, **limit, **totals}
        self._info_ruled = {**zero_costs, **self._info_unruled}
        self._info_reset = {"cost": 0.0, **zero_costs, "governance": None, **limit, **totals}

    @property
    def shaping(self) -> Shaping:
        """The reward shaping; assignable, for this env only (see :attr:`kernel`)."""
        return self._shaping

    @shaping.setter
    def shaping(self, value: Shaping) -> None:
        self._shaping = value
        self._clean_bonus = value.clean_bonus

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

    def _allowed(self, action: Any) -> Decision | None:
        """The kernel's decision on ``action`` if it is in the space and may run now."""
        if not self.action_space.contains(action):
            return None
        decision = self.kernel.decide(self.propose(action), self._ctx)
        return decision if decision.executes else None

    def _substitute(self, action: Any, broken: list[dict[str, str]]
                    ) -> tuple[Any, Decision] | None:
        """What the ``replace`` verdict runs, with the kernel's decision on it: the rules'
        repair of ``action``, else ``safe_action``, else (discrete spaces) the first
        allowed action; ``None`` when none of them may run.

        A repair that raises offers nothing (the fallbacks still apply); it is appended
        to ``broken`` as ``{"rule", "error"}``, for the info and the audit record."""
        space = self.action_space
        candidate = action
        for rule in self.kernel.rules:
            try:
                repaired = rule.repair(candidate, space)
            except Exception as exc:  # a broken repair offers nothing, and is reported
                broken.append({"rule": str(rule.name), "error": error_message(exc)})
                repaired = None
            if repaired is not None:
                candidate = repaired
        if candidate is not action and (decision := self._allowed(candidate)) is not None:
            return candidate, decision
        if self.safe_action is not None:
            safe = self._safe_action()
            if (decision := self._allowed(safe)) is not None:
                return safe, decision
        if isinstance(space, gym.spaces.Discrete):
            mask = self.kernel.action_mask(space, self.propose, self._ctx)
            start = int(space.start)
            for i in np.flatnonzero(mask):
                if (decision := self._allowed(start + int(i))) is not None:
                    return start + int(i), decision
        elif isinstance(space, gym.spaces.MultiDiscrete):
            return self._multi_discrete_substitute(action)
        return None

    def _multi_discrete_substitute(self, action: Any) -> tuple[Any, Decision] | None:
        """The proposed action with each dimension whose value the mask rules out set to
        that dimension's first allowed value; else the first allowed value everywhere."""
        space = self.action_space
        nvec = np.asarray(space.nvec).reshape(-1)
        start = np.broadcast_to(np.asarray(space.start).reshape(-1), nvec.shape)
        mask = self.kernel.action_mask(space, self.propose, self._ctx)
        offsets = np.concatenate(([0], np.cumsum(nvec)[:-1]))
        proposed = np.asarray(action).reshape(-1)
        first = [int(np.flatnonzero(mask[o:o + n])[0]) for o, n in zip(offsets, nvec, strict=True)]
        kept = [int(v) - int(s) if 0 <= int(v) - int(s) < n and mask[o + int(v) - int(s)] else f
                for v, s, o, n, f in zip(proposed, start, offsets, nvec, first, strict=True)]
        for indices in (kept, first):
            candidate = (np.asarray(indices) + start).astype(space.dtype).reshape(space.shape)
            if (decision := self._allowed(candidate)) is not None:
                return candidate, decision
        return None

    def _check_safe_action(self) -> None:
        try:
            inside = self.action_space.contains(self._safe_action())
        except (TypeError, ValueError) as exc:
            inside, why = False, f": {exc}"
        else:
            why = ""
        if not inside:
            raise ValueError(f"safe_action {self.safe_action!r} is not an action of the "
                             f"action space {self.action_space}{why}")

    def _safe_action(self) -> Any:
        space = self.action_space
        safe = np.asarray(self.safe_action, dtype=space.dtype).reshape(space.shape)
        return safe.item() if space.shape == () else safe

    # -- the Gymnasium API ----------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.recorder is not None:
            self.recorder.flush()
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode += 1
        self._step = 0
        self._ctx = self.kernel.new_context(self._episode)
        self._last_obs = _snapshot(obs) if self._judges_proposals else obs
        self._episode_cost = 0.0
        self._episode_violations = 0
        self._episode_executed = 0
        info = StepInfo(self._info_reset) if not info else _merged(info, self._info_reset)
        info["governance"] = governance = _GOVERNANCE.copy()
        governance["violations"] = []
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        # The hot path of every governed run, so calls and lookups are kept few: the
        # common cases (no rules; no pre-step rules; a Discrete int action) skip work, and
        # the end of a step is written out in both branches rather than called.
        if self._refuse_steps:  # the log is closed: the world must not run unrecorded
            raise gym.error.Error(
                f"step() on a closed GovernedEnv: its audit log {self.recorder.path} is "  # type: ignore[union-attr]
                "closed, so the step could not be recorded; build a new env")
        # the proposal as it came, before the world sees it (a world may edit it in place)
        proposed = [action] if type(action) is int else summarize_action(action)
        if self._unruled:  # no rules and no describe(): only the info contract and record
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            except Exception as exc:
                self._failed(proposed, "allow", "in the world's step", exc)
                raise
            try:
                raw_reward = reward if type(reward) is float else float(reward)
                delta = self._clean_bonus
                # the contract's keys (cost 0.0, episode totals 0: no rules) after the world's
                info = StepInfo(self._info_unruled) if not info else _merged(info, self._info_unruled)
                executed = [action] if type(action) is int else summarize_action(action)
                info["governance"] = governance = _GOVERNANCE.copy()
                governance["violations"] = []
                governance["proposed_action"] = proposed
                governance["executed_action"] = executed
                governance["raw_reward"] = raw_reward
                governance["reward_delta"] = delta
            except Exception as exc:
                self._failed(proposed, "allow", "after the world's step", exc)
                raise
            # the end of a step, as below
            this_step = self._step
            step = self._step = this_step + 1
            self._last_obs = obs
            limit = self.max_episode_steps
            if limit is not None and step >= limit:  # as Gymnasium's TimeLimit
                truncated = True
            recorder = self.recorder
            if recorder is not None:
                recorder.append(self._episode, this_step, proposed, "allow", [], 0.0, delta)
                if terminated or truncated:
                    recorder.flush()
            return obs, raw_reward + delta if delta else raw_reward, terminated, truncated, info
        if self._judges_proposals:
            proposal = self.propose(action)
            proposed_meaning = proposal.meaning
            pre = self._kernel.decide(proposal, self._ctx)
            verdict = pre.verdict
        else:  # no pre-step rule and no describe(): the verdict is allow, no proposal needed
            proposal = None
            proposed_meaning = {}
            pre = _ALLOW_PRE
            verdict = _ALLOW
        to_run = action
        substitute = None  # the kernel's decision on a replacement, when one runs
        broken_repairs: list[dict[str, str]] = []
        if verdict == _REPLACE:
            found = self._substitute(action, broken_repairs)
            if found is None:
                to_run, verdict = None, _BLOCK
            else:
                to_run, substitute = found
        runs = verdict <= _REPLACE  # allow, warn or replace
        if runs:
            try:
                obs, reward, terminated, truncated, info = self.env.step(to_run)
            except Exception as exc:
                self._failed(proposed, _VERDICT_NAMES[verdict], "in the world's step", exc,
                             to_run is not action, to_run, pre)
                raise
        try:
            if runs:
                meaning = proposed_meaning if to_run is action else (
                    self._describe(to_run) if self._describe is not None else {})
            else:
                if self._episode < 0:  # no observation to return: as the world's step would say
                    raise gym.error.ResetNeeded("Cannot call env.step() before calling env.reset()")
                if self._world_blocked_step is not None:  # the world counts it and says why
                    obs, truncated, info = self._world_blocked_step(
                        action, [f"{v.rule}/{v.code}: {v.message}" for v in pre.violations])
                    info, truncated = dict(info), bool(truncated)
                else:  # a copy: callers may keep and modify the observation of an earlier step
                    obs, info, truncated = _snapshot(self._last_obs), self._idle_info(), False
                reward, terminated = 0.0, False
                meaning, to_run = {}, None
            raw_reward = reward if type(reward) is float else float(reward)
            post = self._kernel.review(
                Outcome(obs, raw_reward, terminated, truncated, info, to_run, runs, meaning, None,
                        proposal), self._ctx)
            if verdict == _TERMINATE or post.verdict == _TERMINATE:  # ended by policy
                stopped_by_policy = terminated = True
            else:
                stopped_by_policy = False
            final = verdict if verdict >= post.verdict else post.verdict
            # the contract's keys (cost_<rule> 0.0 to start with) after the world's
            info = StepInfo(self._info_ruled) if not info else _merged(info, self._info_ruled)
            pre_found, post_found = pre.violations, post.violations
            if pre_found or post_found:  # (a replace verdict always has pre_found)
                violations, cost, delta = self._tally(info, verdict, pre, post, runs, substitute)
            else:  # the common case: nothing to tally, no shaping
                violations, cost, delta = [], 0.0, self._clean_bonus
            info["cost"] = cost
            executed = (None if to_run is None
                        else [to_run] if type(to_run) is int else summarize_action(to_run))
            final_name = _VERDICT_NAMES[final]
            info["governance"] = governance = _GOVERNANCE.copy()
            governance["verdict"] = final_name
            governance["violations"] = violations
            governance["proposed_action"] = proposed
            governance["executed_action"] = executed
            governance["terminated_by_policy"] = stopped_by_policy
            governance["raw_reward"] = raw_reward
            governance["reward_delta"] = delta
            if broken_repairs:
                governance["repair_errors"] = broken_repairs
            summary = proposed
            if proposed_meaning:
                summary = {"action": proposed, "meaning": summarize_meaning(proposed_meaning)}
        except gym.error.ResetNeeded:
            raise  # nothing ran, nothing to record
        except Exception as exc:
            self._failed(proposed, _VERDICT_NAMES[verdict],
                         "after the world's step" if runs else "in the blocked step", exc,
                         to_run is not action, to_run, pre)
            raise
        # the end of every step: the step counted, the running episode totals, the audit
        # record (last: a failed flush leaves the step counted and its record buffered)
        this_step = self._step
        step = self._step = this_step + 1
        # what proposals see and a blocked step returns: a copy when steps can be blocked,
        # as the caller may edit the observation it got in place
        self._last_obs = _snapshot(obs) if self._judges_proposals else obs
        # running totals on every step: whoever ends the episode (the world, the policy,
        # an outer TimeLimit), its last info carries the episode's totals
        info["episode_cost"] = self._episode_cost
        info["episode_violations"] = self._episode_violations
        info["episode_executed_violations"] = self._episode_executed
        limit = self.max_episode_steps
        if limit is not None and step >= limit:  # blocked steps count too; as TimeLimit does
            truncated = True
        recorder = self.recorder
        if recorder is not None:
            extra = {"executed_action": executed} if to_run is not action else None
            if broken_repairs:
                extra = {**(extra or {}), "repair_errors": broken_repairs}
            recorder.append(self._episode, this_step, summary, final_name, violations, cost, delta,
                            extra=extra)
            if terminated or truncated:
                recorder.flush()
        return obs, raw_reward + delta if delta else raw_reward, terminated, truncated, info

    def _failed(self, proposed: Any, verdict: str, where: str, exc: Exception,
                substituted: bool = False, to_run: Any = None,
                pre: Decision | None = None) -> None:
        """A step that raised once the kernel had decided: counted, and recorded with the
        verdict ``"error"``, the verdict it had, where it failed and the exception, so the
        log shows the step (the world may have run) before the exception goes on."""
        this_step = self._step
        self._step = this_step + 1
        if self.recorder is None or self.recorder.closed:
            return
        extra: dict[str, Any] = {"error": error_message(exc), "failed": where,
                                 "decided": verdict}
        if substituted:
            extra["executed_action"] = None if to_run is None else summarize_action(to_run)
        violations = [{**v.as_dict(), "stage": "pre", "executed": False}
                      for v in (pre.violations if pre is not None else ())]
        try:
            self.recorder.append(self._episode, this_step, proposed, "error", violations,
                                 pre.cost if pre is not None else 0.0, 0.0, extra=extra)
            self.recorder.flush()
        except Exception as record_exc:  # the step's own exception is the one to raise
            exc.add_note(f"and its audit record could not be written: {error_message(record_exc)}")

    def _tally(self, info: dict[str, Any], verdict: Verdict, pre: Decision, post: Decision,
               runs: bool, substitute: Decision | None
               ) -> tuple[list[dict[str, Any]], float, float]:
        """A step's violations as info dicts, its cost and reward change; adds the cost per
        rule to ``info`` and the violations to the episode totals.

        ``executed`` says whether the action a violation is about reached the world: the
        proposal's own pre-step violations when it ran (allow, warn), a substitute's (it
        ran), post-step ones when anything ran. Violations whose verdict is ``allow`` cost
        but are not penalised; a step with violations earns no clean bonus."""
        pre_found, post_found = pre.violations, post.violations
        substituted = substitute.violations if substitute is not None else ()
        violations: list[dict[str, Any]] = []
        cost_keys = self._cost_key_of
        executed_count = 0
        for stage, executed, found in (("pre", verdict <= _WARN, pre_found),
                                       ("pre", True, substituted), ("post", runs, post_found)):
            if executed:
                executed_count += len(found)
            for v in found:
                if type(v) is Violation:  # as_dict() inlined, same keys in the same order
                    severity = v.severity
                    violations.append({
                        "rule": v.rule, "code": v.code,
                        "severity": _SEVERITY_NAMES.get(severity) or str(severity),
                        "message": v.message, "cost": v.cost, "stage": stage, "executed": executed,
                    })
                else:
                    violations.append({**v.as_dict(), "stage": stage, "executed": executed})
                rule = v.rule
                key = cost_keys.get(rule) or f"cost_{rule}"  # a rule may report for another name
                info[key] = info.get(key, 0.0) + v.cost
        cost = pre.cost + post.cost
        shaped = pre_found + post_found if pre_found else post_found
        if substitute is not None:
            cost += substitute.cost
            shaped += substituted
        if self._allow_verdicts:  # some violations may be allowed: those are not penalised
            verdict_of = self._kernel.verdict_of
            shaped = tuple(v for v in shaped if verdict_of(v) != _ALLOW)
        delta = self.shaping.delta(shaped) if shaped else 0.0
        self._episode_cost += cost
        self._episode_violations += len(violations)
        self._episode_executed += executed_count
        return violations, cost, delta

    def __getstate__(self) -> dict[str, Any]:
        if self.recorder is not None:
            raise TypeError(
                f"a GovernedEnv writing an audit log ({self.recorder.path}) cannot be pickled "
                "or copied: a copy appending to the same hash chain would fork it. Rebuild the "
                "env instead with gymnasium.make(env.spec) (govgym.make(env.spec) to change "
                "its arguments), with an audit_path of its own, e.g. 'runs/audit-{run}.jsonl'")
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # what a rule installed in the world (the sql rule's engine guard) is not pickled:
        # the world comes back from its arguments, the rules from their parameters, so the
        # rules attach again, as when the env was built
        if not self._monitor:
            self._attach(self._kernel)

    @property
    def spec(self) -> gym.envs.registration.EnvSpec | None:
        """The env spec, as Gymnasium's wrappers give it; for a registered govgym id the
        id's own spec (this wrapper is part of its entry point, so it is not listed as an
        additional wrapper, and ``gym.make(env.spec, cost_limit=7)`` rebuilds it with the
        change), its arguments as plain data (a policy object as its mapping, a path as
        text, severities by name), so ``env.spec.to_json()`` writes it.

        Its ``max_episode_steps`` is this wrapper's limit, which counts every step,
        blocked ones too (for a world built without a ``TimeLimit``, Gymnasium's spec
        alone would say ``None`` and wrappers such as ``TimeAwareObservation`` would find
        no limit). The limit is the spec's, not this wrapper's recorded argument:
        ``gym.make(env.spec)`` gives the world a ``TimeLimit`` of that length, which this
        wrapper takes over, and ``gym.make(env.spec, max_episode_steps=n)`` changes it, as
        for any Gymnasium env."""
        if self._part_of_entry_point:
            spec = self.env.spec  # holds gym.make's arguments as given: put as plain data
            if spec is None:
                return None
            saved = self._saved_kwargs
            return dataclasses.replace(spec, kwargs={
                key: saved.get(key, value) for key, value in spec.kwargs.items()})
        if self._cached_spec is None:  # where Gymnasium's Wrapper.spec caches its answer
            spec = super().spec
            if spec is not None:
                *inner, own = spec.additional_wrappers
                own = dataclasses.replace(own, kwargs={**own.kwargs, "max_episode_steps": None})
                self._cached_spec = dataclasses.replace(
                    spec, max_episode_steps=self.max_episode_steps,
                    additional_wrappers=(*inner, own))
        return self._cached_spec

    def close(self) -> None:
        recorder = self.recorder
        try:
            if recorder is not None and not recorder.closed:
                self._refuse_steps = True  # the world must not run unrecorded after this
                recorder.close()
        finally:  # the world is closed even when the log's last write fails
            super().close()
