"""Env specs: YAML files in ``envs/`` that bind a world, a policy, intervention and
shaping into one registered id, plus :func:`make` to govern any Gymnasium id.

An env spec file::

    id: Governed-CartPole-v1
    description: CartPole inside a stricter position and angle envelope.
    world: CartPole-v1                 # a Gymnasium id, or "package.module:Class"
    world_kwargs: {}
    policy: cartpole-envelope          # a name in policies/, a path relative to this file,
                                       # or an inline mapping
    intervention: {high: warn}         # optional: severity -> verdict overrides
    shaping: {max_penalty: 1.0}        # optional: see govgym.shaping.Shaping
    safe_action: null                  # optional: substitute for the replace verdict
    cost_limit: 25                     # optional: reported in info for CMDP learners
    max_episode_steps: 500             # optional: defaults to the world's own

Arguments to ``gym.make(id, ...)`` replace the spec's, each whole, as Gymnasium replaces
any keyword argument: ``world_kwargs={"action_mode": "text"}`` replaces the spec's
``world_kwargs`` (``Governed-SQL-ReadOnly-v0``'s ``levels`` too), it is not merged into them.

Step limits. A registered id gets Gymnasium's own ``TimeLimit`` (``max_episode_steps``
of the spec, or the world's registered limit), around the governed env, and the world
inside is built without its ``TimeLimit`` (``gym.make(world, max_episode_steps=-1)``). So
``gym.make(id, max_episode_steps=n)`` runs ``n`` steps, longer or shorter than the
world's default, and blocked steps (which never reach the world) count. A limit the
world keeps itself still applies: ``SQLWorld`` truncates at its own ``max_steps``
(default 10, the SQL ids' limit too), so a longer SQL episode needs
``world_kwargs={"max_steps": n}`` as well. As everywhere in
Gymnasium, a step that ends the episode on the limit step reports ``truncated=True``
too: ``terminated`` and ``governance["terminated_by_policy"]`` still say that the world
or the policy ended it. :func:`make` of a plain Gymnasium id builds the world with its
``TimeLimit`` (``max_episode_steps`` passed on to ``gym.make``), which
:class:`GovernedEnv` takes over: its own limit, counting blocked steps too, reported the
same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from govgym import _yaml
from govgym._paths import data_dir
from govgym.kernel.policy import PolicyError, available_policies, load_policy, parse_verdict_table
from govgym.kernel.types import check_cost
from govgym.shaping import Shaping
from govgym.wrappers.governed import GovernedEnv

__all__ = ["ENV_SPECS", "EnvSpecError", "EnvSpecFile", "load_env_specs", "make", "make_governed",
           "register_env_specs"]

_SPEC_KEYS = {"id", "description", "world", "world_kwargs", "policy", "intervention", "shaping",
              "safe_action", "cost_limit", "max_episode_steps"}
_WRAPPER_KEYS = {"intervention", "shaping", "safe_action", "cost_limit", "max_episode_steps",
                 "audit_path", "run_id", "flush_every"}


class EnvSpecError(ValueError):
    """An env spec file that cannot be registered; names the file and the field."""


@dataclass(frozen=True)
class EnvSpecFile:
    id: str
    world: str
    policy: Any
    source: str
    description: str = ""
    world_kwargs: Mapping[str, Any] = field(default_factory=dict)
    intervention: Mapping[str, str] | None = None
    shaping: Mapping[str, Any] | None = None
    safe_action: Any = None
    cost_limit: float | None = None
    max_episode_steps: int | None = None

    def make_kwargs(self) -> dict[str, Any]:
        return {
            "world": self.world, "world_kwargs": dict(self.world_kwargs), "policy": self.policy,
            "intervention": self.intervention, "shaping": self.shaping,
            "safe_action": self.safe_action, "cost_limit": self.cost_limit,
        }


def _parse_spec(path: Path) -> EnvSpecFile:
    try:
        data, _ = _yaml.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvSpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise EnvSpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise EnvSpecError(f"{path}: an env spec is a mapping")
    unknown = set(data) - _SPEC_KEYS
    if unknown:
        hint = ("; this looks like a policy file: keep policies out of the env spec folder "
                "(a spec names one by name, or by a path relative to the spec)"
                if "rules" in unknown else "")
        raise EnvSpecError(f"{path}: unknown field(s) {sorted(map(str, unknown))}; "
                           f"expected {sorted(_SPEC_KEYS)}{hint}")
    for required in ("id", "world", "policy"):
        if not data.get(required):
            raise EnvSpecError(f"{path}: field {required!r} is required")
    if isinstance(data["policy"], str) and _looks_like_path(data["policy"]):
        # relative to the spec file, not to wherever the process that builds the env runs
        data = {**data, "policy": str(path.parent / Path(data["policy"]).expanduser())}
    problems = [f"field {key!r}: {problem}" for key, check in _FIELD_CHECKS.items()
                if data.get(key) is not None and (problem := check(data[key])) is not None]
    if problems:
        raise EnvSpecError(f"{path}: " + "; ".join(problems))
    return EnvSpecFile(
        id=str(data["id"]), world=str(data["world"]), policy=data["policy"], source=path.name,
        description=str(data.get("description") or "").strip(),
        world_kwargs=dict(data.get("world_kwargs") or {}), intervention=data.get("intervention"),
        shaping=data.get("shaping"), safe_action=data.get("safe_action"),
        cost_limit=data.get("cost_limit"), max_episode_steps=data.get("max_episode_steps"),
    )


def _check_id(value: Any) -> str | None:
    """An id Gymnasium registers: ``[namespace/]name[-v<version>]``."""
    if not isinstance(value, str):
        return f"an env id is text, got {value!r}"
    try:
        gym.envs.registration.parse_env_id(value)
    except gym.error.Error as exc:
        return str(exc)
    return None


def _check_mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else f"a mapping, got {value!r}"


def _check_cost_limit(value: Any) -> str | None:
    try:
        check_cost(value, "cost_limit")
    except ValueError:
        return f"a finite number >= 0, got {value!r}"
    return None


def _check_steps(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"a whole number of steps >= 1, got {value!r}"
    return None


def _check_intervention(value: Any) -> str | None:
    if value == "monitor":
        return None
    if not isinstance(value, Mapping):
        return f"a severity -> verdict mapping or 'monitor', got {value!r}"
    try:
        parse_verdict_table(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_policy(value: Any) -> str | None:
    """A named policy must exist; an inline one, or a file (its path already resolved
    against the spec's folder), must be valid (a named one is validated, with its own file
    and lines, when it is loaded)."""
    if isinstance(value, Mapping):
        try:
            load_policy(value)
        except PolicyError as exc:
            return "; ".join(f"{where}: {message}" for where, message in exc.problems)
        return None
    if not isinstance(value, str):
        return f"a policy name, path or mapping, got {value!r}"
    if _looks_like_path(value):
        if not Path(value).is_file():
            return f"no such policy file: {value}"
        try:
            load_policy(value)
        except PolicyError as exc:
            return f"{exc.source}: " + "; ".join(f"{where}: {message}" for where, message in exc.problems)
        return None
    if value not in available_policies():
        return f"no policy named {value!r}; available: {', '.join(available_policies())}"
    return None


def _looks_like_path(value: str) -> bool:
    """A policy given by path, not by name (as ``load_policy`` tells them apart)."""
    return value.endswith((".yaml", ".yml")) or "/" in value or "\\" in value


def _check_shaping(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return f"a mapping, got {value!r}"
    try:
        Shaping.from_config(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _check_safe_action(value: Any) -> str | None:
    """A number or a (nested) list of numbers; whether the world's action space holds it
    is known only once the world is built, and GovernedEnv checks it then."""
    def numeric(v: Any) -> bool:
        if isinstance(v, list):
            return bool(v) and all(numeric(x) for x in v)
        return isinstance(v, int | float) and not isinstance(v, bool)
    return None if numeric(value) else f"a number or a list of numbers, got {value!r}"


_FIELD_CHECKS = {
    "id": _check_id, "world_kwargs": _check_mapping, "shaping": _check_shaping, "policy": _check_policy,
    "safe_action": _check_safe_action,
    "intervention": _check_intervention, "cost_limit": _check_cost_limit,
    "max_episode_steps": _check_steps,
}


def load_env_specs(folder: Path | None = None) -> dict[str, EnvSpecFile]:
    """Every env spec in ``folder`` (default: the shipped ``envs/``), by id."""
    folder = folder or data_dir("envs")
    if not folder.is_dir():
        raise EnvSpecError(f"{folder}: no such folder of env specs")
    specs: dict[str, EnvSpecFile] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        spec = _parse_spec(path)
        if spec.id in specs:
            raise EnvSpecError(f"{path}: id {spec.id!r} is already defined in {specs[spec.id].source}")
        specs[spec.id] = spec
    return specs


ENV_SPECS: dict[str, EnvSpecFile] = {}
_ENTRY_POINT = "govgym.registration:make_governed"


def _is_class_path(world: str) -> bool:
    return ":" in world and world.split(":", 1)[0] not in gym.registry and "." in world.split(":", 1)[0]


def _render_modes(world: str) -> list[str] | None:
    """The render modes the world's class declares, if it can be found without building it."""
    try:
        creator = (gym.envs.registration.load_env_creator(world) if _is_class_path(world)
                   else gym.spec(world).entry_point)
        if isinstance(creator, str):
            creator = gym.envs.registration.load_env_creator(creator)
        modes = getattr(creator, "metadata", {}).get("render_modes")
    except Exception:  # not found here: building the world reports it
        return None
    return list(modes) if isinstance(modes, list | tuple) else None


def _make_world(world: str, world_kwargs: Mapping[str, Any], render_mode: str | None) -> gym.Env:
    kwargs = dict(world_kwargs)
    if render_mode is not None:
        modes = _render_modes(world)
        if modes is not None and render_mode not in modes:
            # a TypeError, as for an argument the world does not take: SB3's make_vec_env
            # asks for "rgb_array" first and builds the env without it on a TypeError
            base = render_mode.removesuffix("_list")
            hint = (f"; build it with render_mode={base!r} and wrap it in "
                    "gymnasium.wrappers.RenderCollection" if base in modes and base != render_mode
                    else "; build it with render_mode='rgb_array' and wrap it in "
                    "gymnasium.wrappers.HumanRendering" if render_mode == "human" and "rgb_array" in modes
                    else "")
            raise TypeError(f"render_mode {render_mode!r} is not one of the world {world!r}'s "
                            f"render modes {modes}{hint}")
        kwargs["render_mode"] = render_mode
    if _is_class_path(world):
        creator = gym.envs.registration.load_env_creator(world)
        return creator(**kwargs)
    # no TimeLimit inside: the limit is applied around the governed env (see the module doc)
    return gym.make(world, disable_env_checker=True, max_episode_steps=-1, **kwargs)


def _registered_limit(world: str) -> int | None:
    """The ``max_episode_steps`` Gymnasium has registered for ``world``, if it is an id."""
    try:
        return gym.spec(world).max_episode_steps
    except gym.error.Error:
        return None


def make_governed(world: str, policy: Any, world_kwargs: Mapping[str, Any] | None = None,
                  render_mode: str | None = None, **wrapper_kwargs: Any) -> GovernedEnv:
    """Entry point of every registered govgym id: build the world, then govern it."""
    unknown = set(wrapper_kwargs) - _WRAPPER_KEYS
    if unknown:
        raise TypeError(f"unexpected argument(s) {sorted(unknown)}; a governed env takes "
                        f"render_mode, world_kwargs, policy and {sorted(_WRAPPER_KEYS)}")
    world_env = None
    try:
        world_env = _make_world(world, world_kwargs or {}, render_mode)
        env = GovernedEnv(world_env, policy, **wrapper_kwargs)
    except Exception as exc:  # say which spec asked for it; a world built for it is closed
        if world_env is not None:
            world_env.close()
        exc.add_note(_built_from(world, policy, world_kwargs, wrapper_kwargs))
        raise
    env._part_of_entry_point = True  # the id's spec rebuilds it: no additional wrapper entry
    env.metadata = {**env.metadata, "render_modes": env.env.metadata.get("render_modes", [])}
    return env


def _built_from(world: str, policy: Any, world_kwargs: Mapping[str, Any] | None,
                wrapper_kwargs: Mapping[str, Any]) -> str:
    """Where a refused governed env came from: the env spec whose arguments these are (the
    entry point is not told the id), else only the world."""
    given = {"world": world, "world_kwargs": dict(world_kwargs or {}), "policy": policy,
             **wrapper_kwargs}
    for spec in ENV_SPECS.values():
        try:
            same = spec.make_kwargs() == given
        except Exception:  # an argument (a NumPy array) that == does not answer: not the file's
            same = False
        if same:
            return f"while building {spec.id!r}, as the env spec {spec.source} sets it"
    return f"while building a governed env of the world {world!r}"


def register_env_specs(specs: Mapping[str, EnvSpecFile] | None = None) -> None:
    """Register env specs with Gymnasium (all shipped ones by default)."""
    specs = load_env_specs() if specs is None else specs
    for spec in specs.values():  # every conflict first: all of the specs register, or none
        problem = _check_id(spec.id)
        if problem is not None:
            raise EnvSpecError(f"{spec.source}: field 'id': {problem}")
        registered = gym.registry.get(spec.id)
        if registered is not None and registered.entry_point != _ENTRY_POINT:
            raise EnvSpecError(f"{spec.source}: id {spec.id!r} is already registered with "
                               f"Gymnasium by {registered.entry_point!r}; choose another id")
    for spec in specs.values():
        registered = gym.registry.get(spec.id)
        if registered is not None:  # ours: a spec registered again replaces the old one
            del gym.registry[spec.id]
        limit = spec.max_episode_steps
        if limit is None:
            limit = _registered_limit(spec.world)
        gym.register(id=spec.id, entry_point=_ENTRY_POINT,
                     kwargs=spec.make_kwargs(), max_episode_steps=limit)
        ENV_SPECS[spec.id] = spec


def make(env_id: str | gym.envs.registration.EnvSpec, policy: Any = None,
         **kwargs: Any) -> gym.Env:
    """Govern any registered env: ``govgym.make("CartPole-v1", policy="cartpole-envelope")``.

    For a govgym id, ``policy`` (if given) replaces the spec's policy. For any other id,
    the governance arguments (``intervention``, ``shaping``, ``safe_action``,
    ``cost_limit``, ``max_episode_steps``, ``audit_path``, ``run_id``, ``flush_every``) go
    to :class:`GovernedEnv` and the rest to :func:`gymnasium.make`, ``max_episode_steps``
    included (default: the registered limit): GovernedEnv takes over the ``TimeLimit``
    that builds and counts every step with it, blocked ones too. The result records how
    it was built, so ``gymnasium.make(env.spec)`` rebuilds it, and
    ``gymnasium.make(env.spec, max_episode_steps=n)`` rebuilds it with another limit.
    """
    if isinstance(env_id, gym.envs.registration.EnvSpec) and _GOVERNED in {
            w.entry_point for w in env_id.additional_wrappers}:
        return _make_from_governed_spec(env_id, policy, kwargs)
    name = env_id.id if isinstance(env_id, gym.envs.registration.EnvSpec) else env_id
    if isinstance(name, str) and name.split(":")[-1] in ENV_SPECS:
        if policy is not None:
            kwargs["policy"] = policy
        return gym.make(env_id, **kwargs)
    wrapper_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _WRAPPER_KEYS}
    limit = wrapper_kwargs.get("max_episode_steps")
    if limit is None or _is_step_limit(limit):
        # the limit goes to gym.make, whose TimeLimit (the registered one by default)
        # GovernedEnv takes over: it counts every step, blocked ones too. Kept out of the
        # wrapper's own arguments, so gym.make(env.spec, max_episode_steps=n) changes it,
        # as for any Gymnasium env (an explicit one there would override the TimeLimit)
        wrapper_kwargs.pop("max_episode_steps", None)
        if limit is not None:
            kwargs["max_episode_steps"] = int(limit)
    # (else GovernedEnv refuses it with its own message)
    return GovernedEnv(gym.make(env_id, **kwargs), policy, **wrapper_kwargs)


_GOVERNED = f"{GovernedEnv.__module__}:{GovernedEnv.__name__}"


def _is_step_limit(limit: Any) -> bool:
    """A ``max_episode_steps`` gym.make takes: a whole number >= 1, or -1 for none."""
    return (isinstance(limit, int | np.integer) and not isinstance(limit, bool)
            and (limit >= 1 or limit == -1))


def _make_from_governed_spec(spec: gym.envs.registration.EnvSpec, policy: Any,
                             kwargs: dict[str, Any]) -> gym.Env:
    """Rebuild an env whose spec already carries GovernedEnv: govern it once, not twice;
    ``policy`` and governance arguments update that wrapper's recorded arguments."""
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _WRAPPER_KEYS}
    if policy is not None:
        overrides["policy"] = policy
    limit = overrides.get("max_episode_steps")
    if _is_step_limit(limit):
        # gym.make's, as in make(): the wrapper takes over the TimeLimit it builds
        kwargs["max_episode_steps"] = int(limit)
        overrides["max_episode_steps"] = None
    if overrides:
        wrappers = tuple(
            dataclasses.replace(w, kwargs={**(w.kwargs or {}), **overrides}) if w.entry_point == _GOVERNED
            else w for w in spec.additional_wrappers)
        spec = dataclasses.replace(spec, additional_wrappers=wrappers)
    return gym.make(spec, **kwargs)
