"""Compatibility with Gymnasium: ``check_env`` on every registered id, the ``info``
contract, vector envs in both autoreset modes, pickling and rebuilding from
``env.spec``, and determinism down to the audit log."""

from __future__ import annotations

import copy
import functools
import math
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import govgym
from govgym import GovernedEnv, Kernel, Outcome, Proposal, load_policy
from govgym.audit import read as read_audit

ENV_IDS = sorted(govgym.ENV_SPECS)

GOVERNANCE_KEYS = {"verdict", "violations", "proposed_action", "executed_action",
                   "terminated_by_policy", "raw_reward", "reward_delta"}
VIOLATION_KEYS = {"rule", "code", "severity", "message", "cost", "stage", "executed"}
VERDICTS = {"allow", "warn", "replace", "block", "terminate"}
EPISODE_KEYS = ("episode_cost", "episode_violations", "episode_executed_violations")

# check_env's advice about space design, not API breaches: everything else it warns about
# (observations outside the space, wrong dtypes, non-bool flags, ...) fails the test.
BENIGN_CHECKER_WARNINGS = re.compile(
    r"different from the unwrapped version|Box observation space (minimum|maximum) value is"
    r"|symmetric and normalized|precision lowered"
)

ARBITRARY_ID = ("CartPole-v1", "cartpole-envelope")


def governed_layer(env: gym.Env) -> GovernedEnv:
    """The (single) GovernedEnv inside a wrapper stack."""
    layers = []
    inner: Any = env
    while True:
        if isinstance(inner, GovernedEnv):
            layers.append(inner)
        if not isinstance(inner, gym.Wrapper):
            break
        inner = inner.env
    assert len(layers) == 1, f"expected one GovernedEnv layer in {env}, found {len(layers)}"
    return layers[0]


def rule_names_of(env_id: str) -> list[str]:
    return [rule.name for rule in load_policy(govgym.ENV_SPECS[env_id].policy).rules]


def make_arbitrary(**kwargs: Any) -> gym.Env:
    world, policy = ARBITRARY_ID
    return govgym.make(world, policy=policy, **kwargs)


def run_checker(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)  # pygame is not a govgym dependency
    serious = [str(w.message) for w in caught if not BENIGN_CHECKER_WARNINGS.search(str(w.message))]
    assert serious == []


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Deep equality that understands numpy arrays (and NaN-free floats exactly)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
        assert np.asarray(a).dtype == np.asarray(b).dtype, where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a.keys()} != {b.keys()}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# -- check_env ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env_on_the_governed_wrapper(env_id: str) -> None:
    env = gym.make(env_id, disable_env_checker=True)
    run_checker(governed_layer(env))
    run_checker(env)


def test_gymnasium_check_env_on_an_arbitrary_governed_id() -> None:
    env = make_arbitrary()
    assert isinstance(env, GovernedEnv)
    run_checker(env)


def test_every_env_spec_is_registered_with_gymnasium() -> None:
    assert ENV_IDS, "no env specs found"
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == "govgym.registration:make_governed"
        assert spec.max_episode_steps == govgym.ENV_SPECS[env_id].max_episode_steps


# -- the info contract ---------------------------------------------------------------------


def assert_reset_info(info: dict[str, Any], rules: list[str]) -> None:
    assert type(info["cost"]) is float and info["cost"] == 0.0
    for rule in rules:
        assert info[f"cost_{rule}"] == 0.0
    gov = info["governance"]
    assert gov.keys() >= GOVERNANCE_KEYS
    assert gov["violations"] == [] and gov["terminated_by_policy"] is False
    assert [info[key] for key in EPISODE_KEYS] == [0.0, 0, 0]


def assert_step_info(info: dict[str, Any], rules: list[str]) -> None:
    cost = info["cost"]
    assert isinstance(cost, float) and math.isfinite(cost) and cost >= 0.0
    gov = info["governance"]
    assert gov.keys() >= GOVERNANCE_KEYS
    assert gov["verdict"] in VERDICTS
    assert isinstance(gov["terminated_by_policy"], bool)
    for v in gov["violations"]:
        assert v.keys() >= VIOLATION_KEYS and v["rule"] in rules and v["stage"] in {"pre", "post"}
    per_rule = {rule: info[f"cost_{rule}"] for rule in rules}
    assert all(c >= 0.0 for c in per_rule.values())
    assert sum(per_rule.values()) == pytest.approx(cost)
    assert sum(v["cost"] for v in gov["violations"]) == pytest.approx(cost)
    if gov["violations"]:
        assert gov["verdict"] != "allow"


def run_contract_episode(env: gym.Env, rules: list[str], seed: int,
                         cost_limit: float | None) -> tuple[bool, bool]:
    """One random episode, checking every info. Returns (ended, ended_by_policy)."""
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    assert_reset_info(info, rules)
    if cost_limit is not None:
        assert info["cost_limit"] == cost_limit
    total_cost, total_violations = 0.0, 0
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert_step_info(info, rules)
        assert obs in env.observation_space
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        gov = info["governance"]
        assert float(reward) == pytest.approx(gov["raw_reward"] + gov["reward_delta"])
        total_cost += info["cost"]
        total_violations += len(gov["violations"])
        if cost_limit is not None:
            assert info["cost_limit"] == cost_limit
        assert gov["terminated_by_policy"] == (gov["verdict"] == "terminate")
        if gov["terminated_by_policy"]:
            assert terminated  # truncated only if the limit falls on this step, as TimeLimit
        if terminated or truncated:
            assert info["episode_cost"] == pytest.approx(total_cost)
            assert info["episode_violations"] == total_violations
            assert 0 <= info["episode_executed_violations"] <= total_violations
            return True, gov["terminated_by_policy"]
        # running totals on every step
        assert info["episode_cost"] == pytest.approx(total_cost)
        assert info["episode_violations"] == total_violations
    return False, False


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_info_contract_on_every_reset_and_step(env_id: str) -> None:
    env = gym.make(env_id)
    rules = rule_names_of(env_id)
    assert rules, f"{env_id} has no rules: nothing to check"
    for seed in (0, 1):
        ended, _ = run_contract_episode(env, rules, seed, govgym.ENV_SPECS[env_id].cost_limit)
        assert ended


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episode_totals_when_the_time_limit_is_overridden(env_id: str) -> None:
    """``gym.make(id, max_episode_steps=n)`` is ordinary Gymnasium usage; the episode
    still ends with ``episode_cost`` and ``episode_violations`` in ``info``."""
    env = gym.make(env_id, max_episode_steps=10)
    ended, _ = run_contract_episode(env, rule_names_of(env_id), 0,
                                    govgym.ENV_SPECS[env_id].cost_limit)
    assert ended


def test_info_contract_when_governing_an_arbitrary_id() -> None:
    env = make_arbitrary(cost_limit=3.0)
    rules = [rule.name for rule in load_policy(ARBITRARY_ID[1]).rules]
    for seed in (0, 1, 2):
        ended, _ = run_contract_episode(env, rules, seed, 3.0)
        assert ended


CRITICAL_CORRIDOR = {
    "name": "corridor",
    "rules": [{"kind": "state_bounds", "name": "corridor", "severity": "critical",
               "bounds": [{"index": 0, "low": -0.05, "high": 0.05}]}],
}


def test_a_critical_outcome_ends_the_episode_as_terminated_by_policy() -> None:
    env = govgym.make("CartPole-v1", policy=CRITICAL_CORRIDOR)
    env.reset(seed=0)
    steps = 0
    while steps < 50:
        steps += 1
        obs, _, terminated, truncated, info = env.step(1)  # always push right
        if terminated or truncated:
            break
    assert abs(obs[0]) > 0.05 and abs(obs[2]) < 0.2095, "the world itself must not have ended it"
    assert info["governance"]["terminated_by_policy"] is True
    assert (terminated, truncated) == (True, False)
    assert info["governance"]["verdict"] == "terminate"
    assert info["episode_cost"] == info["cost"] > 0.0 and info["episode_violations"] == 1
    assert steps > 1


def test_a_policy_end_on_the_limit_step_is_reported_alike_by_every_way_of_building() -> None:
    """A policy end on the step limit: ``terminated`` and ``terminated_by_policy``, and
    ``truncated`` as Gymnasium's ``TimeLimit`` reports it for every env. Was a bug:
    ``govgym.make(world id)`` (the limit inside GovernedEnv) said (True, False) and the
    registered id (Gymnasium's TimeLimit around it) (True, True) for the same episode."""
    probe = govgym.make("CartPole-v1", policy=CRITICAL_CORRIDOR)
    probe.reset(seed=0)
    steps = 0
    while True:
        steps += 1
        *_, terminated, truncated, info = probe.step(1)
        if terminated or truncated:
            break
    assert info["governance"]["terminated_by_policy"] and not truncated
    reference = gym.make("CartPole-v1", max_episode_steps=steps)  # plain Gymnasium's flags
    builds = {
        "gymnasium": lambda: reference,
        "govgym.make": lambda: govgym.make("CartPole-v1", policy=CRITICAL_CORRIDOR,
                                           max_episode_steps=steps),
        "registered id": lambda: gym.make("Governed-CartPole-v1", policy=CRITICAL_CORRIDOR,
                                          max_episode_steps=steps),
        "GovernedEnv": lambda: GovernedEnv(gym.make("CartPole-v1", max_episode_steps=-1),
                                           CRITICAL_CORRIDOR, max_episode_steps=steps),
    }
    flags = {}
    for name, build in builds.items():
        env = build()
        env.reset(seed=0)
        for _ in range(steps - 1):
            env.step(1)
        *_, terminated, truncated, info = env.step(1)
        flags[name] = (terminated, truncated, info.get("governance", {}).get("terminated_by_policy"))
    assert flags["gymnasium"] == (False, True, None)  # the world itself did not end it
    assert {name: f for name, f in flags.items() if name != "gymnasium"} == {
        name: (True, True, True) for name in builds if name != "gymnasium"}


def test_a_pre_step_terminate_verdict_ends_without_running_the_action() -> None:
    policy = {"name": "stop-left", "rules": [
        {"kind": "forbidden_actions", "values": [0], "verdict": "terminate", "cost": 2.0}]}
    env = govgym.make("CartPole-v1", policy=policy)
    obs, _ = env.reset(seed=0)
    after, reward, terminated, truncated, info = env.step(0)
    assert np.array_equal(after, obs)
    assert (terminated, truncated) == (True, False)
    gov = info["governance"]
    assert gov["terminated_by_policy"] is True and gov["executed_action"] is None
    assert gov["raw_reward"] == 0.0 and info["cost"] == 2.0 and info["episode_cost"] == 2.0


def test_the_world_ending_its_own_episode_is_not_terminated_by_policy() -> None:
    env = govgym.make("CartPole-v1", policy=None)  # no rules: only the world can end it
    env.reset(seed=0)
    for _ in range(100):
        *_, terminated, truncated, info = env.step(1)
        if terminated or truncated:
            break
    assert terminated and info["governance"]["terminated_by_policy"] is False


# -- vector envs ---------------------------------------------------------------------------

AutoresetMode = getattr(gym.vector, "AutoresetMode", None)  # gymnasium >= 1.1
MODES = ["NEXT_STEP", "SAME_STEP"]
VECTOR_ID = "Governed-CartPole-v1"  # short random episodes: several autoresets per env
VECTOR_SEEDS = [3, 4]
VECTOR_STEPS = 150


def autoreset_kwargs(mode_name: str) -> dict[str, Any]:
    """``autoreset_mode=`` for the vector env; Gymnasium 1.0 only knows next-step."""
    if AutoresetMode is not None:
        return {"autoreset_mode": getattr(AutoresetMode, mode_name)}
    if mode_name == "NEXT_STEP":
        return {}
    pytest.skip("same-step autoreset needs gymnasium.vector.AutoresetMode (gymnasium >= 1.1)")


def build_sync(mode_name: str) -> gym.vector.VectorEnv:
    return gym.vector.SyncVectorEnv([lambda: gym.make(VECTOR_ID)] * 2,
                                    **autoreset_kwargs(mode_name))


def build_async(mode_name: str) -> gym.vector.VectorEnv:
    # "govgym:<id>" makes the worker import govgym, which registers the ids there
    fns = [functools.partial(gym.make, f"govgym:{VECTOR_ID}")] * 2
    return gym.vector.AsyncVectorEnv(fns, context="forkserver", **autoreset_kwargs(mode_name))


def build_make_vec(mode_name: str) -> gym.vector.VectorEnv:
    return gym.make_vec(VECTOR_ID, num_envs=2, vectorization_mode="sync",
                        vector_kwargs=autoreset_kwargs(mode_name))


def check_vector_env(vec: gym.vector.VectorEnv, same_step: bool) -> None:
    """Step ``vec`` with random actions next to one plain env per slot, replaying the
    autoreset rules by hand, and compare every observation, reward, flag and cost."""
    n = vec.num_envs
    refs = [gym.make(VECTOR_ID) for _ in range(n)]
    obs, infos = vec.reset(seed=VECTOR_SEEDS)
    assert infos["cost"].shape == (n,) and np.all(infos["cost"] == 0.0)
    for i, ref in enumerate(refs):
        ref_obs, _ = ref.reset(seed=VECTOR_SEEDS[i])
        np.testing.assert_array_equal(obs[i], ref_obs)
    rng = np.random.default_rng(0)
    needs_reset = [False] * n
    episode_ends = [0] * n
    ends_while_other_running = 0
    for _ in range(VECTOR_STEPS):
        actions = rng.integers(0, 2, size=n)
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        cost = infos["cost"]
        assert cost.shape == (n,) and np.issubdtype(cost.dtype, np.floating)
        assert np.all(cost >= 0.0) and np.all(infos["_cost"])
        done = terminated | truncated
        if done.any() and not done.all():
            ends_while_other_running += 1
        for i, ref in enumerate(refs):
            final, final_obs = None, None
            if not same_step and needs_reset[i]:
                ref_obs, info = ref.reset()
                reward, term, trunc = 0.0, False, False
                needs_reset[i] = False
            else:
                ref_obs, reward, term, trunc, info = ref.step(int(actions[i]))
                if term or trunc:
                    episode_ends[i] += 1
                    if same_step:
                        final, final_obs = info, ref_obs
                        ref_obs, info = ref.reset()
                    else:
                        needs_reset[i] = True
            np.testing.assert_array_equal(obs[i], ref_obs)
            assert (rewards[i], terminated[i], truncated[i]) == (reward, term, trunc)
            assert cost[i] == info["cost"]
            # running episode totals on every step (reset included), so they are always present
            for key in EPISODE_KEYS:
                assert bool(infos[f"_{key}"][i]) and key in info
                assert infos[key][i] == info[key]
            if same_step:
                has_final = bool(infos.get("_final_info", np.zeros(n, bool))[i])
                assert has_final == bool(done[i]) == (final is not None)
                if has_final:
                    final_info = infos["final_info"]
                    assert final_info["cost"][i] == final["cost"]
                    for key in EPISODE_KEYS:
                        assert final_info[f"_{key}"][i]
                        assert final_info[key][i] == final[key]
                    np.testing.assert_array_equal(infos["final_obs"][i], final_obs)
    assert min(episode_ends) >= 2, "too few episodes to see autoresets"
    assert ends_while_other_running > 0


@pytest.mark.parametrize("mode_name", MODES)
@pytest.mark.parametrize("build", [build_sync, build_async, build_make_vec],
                         ids=["SyncVectorEnv", "AsyncVectorEnv", "make_vec-sync"])
def test_vector_envs_carry_cost_in_both_autoreset_modes(
        build: Callable[[str], gym.vector.VectorEnv], mode_name: str) -> None:
    vec = build(mode_name)
    passed = False
    try:
        if AutoresetMode is not None:
            assert vec.metadata["autoreset_mode"] == getattr(AutoresetMode, mode_name)
        check_vector_env(vec, same_step=mode_name == "SAME_STEP")
        passed = True
    finally:
        # after a step that raised, AsyncVectorEnv.close() of Gymnasium < 1.4 waits forever
        # for the step's results: end the workers instead
        failed_async = not passed and isinstance(vec, gym.vector.AsyncVectorEnv)
        vec.close(**({"terminate": True} if failed_async else {}))


# -- pickling and rebuilding from env.spec --------------------------------------------------

BUILDERS: dict[str, Callable[..., gym.Env]] = {
    **{env_id: functools.partial(gym.make, env_id) for env_id in ENV_IDS},
    "CartPole-v1+cartpole-envelope": make_arbitrary,
    "CartPole-v1+policy-object": functools.partial(
        govgym.make, "CartPole-v1", policy=load_policy("cartpole-envelope"),
        shaping=govgym.Shaping(max_penalty=0.3), cost_limit=4.0),
    "MountainCar-v0+dict-policy": functools.partial(
        govgym.make, "MountainCar-v0",
        policy={"name": "no-left", "rules": [{"kind": "forbidden_actions", "values": [0]}]},
        intervention={"high": "replace"}),
}


def rollout(env: gym.Env, seed: int, actions: list[Any], episodes: int = 2) -> list[tuple]:
    """Every (obs, reward, terminated, truncated, info) of up to ``episodes`` episodes."""
    out: list[tuple] = []
    out.append(env.reset(seed=seed))
    finished = 0
    for action in actions:
        step = env.step(action)
        out.append(step)
        if step[2] or step[3]:
            finished += 1
            if finished == episodes:
                break
            out.append(env.reset())
    return out


def random_actions(env: gym.Env, n: int, seed: int = 7) -> list[Any]:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(n)]


@pytest.mark.parametrize("rebuild", [gym.make, govgym.make], ids=["gym.make", "govgym.make"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_spec_pickles_and_rebuilds_the_same_governed_env(
        name: str, rebuild: Callable[[gym.envs.registration.EnvSpec], gym.Env]) -> None:
    env = BUILDERS[name]()
    spec = env.spec
    assert spec is not None
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert loads(dumps(spec)) == spec
    rebuilt = rebuild(pickle.loads(pickle.dumps(spec)))
    assert str(rebuilt) == str(env)
    assert rebuilt.spec == spec
    original, copy = governed_layer(env), governed_layer(rebuilt)  # one layer each, not two
    assert copy.kernel.policy.to_dict() == original.kernel.policy.to_dict()
    assert copy.shaping == original.shaping and copy.cost_limit == original.cost_limit
    actions = random_actions(env, 400)
    assert_same(rollout(env, 11, actions), rollout(rebuilt, 11, actions))


def test_spec_keeps_overridden_arguments() -> None:
    env = gym.make("Governed-MountainCar-v0", policy="empty", cost_limit=7.0)
    rebuilt = gym.make(env.spec)
    assert governed_layer(rebuilt).kernel.rule_names == []
    _, info = rebuilt.reset(seed=0)
    assert info["cost_limit"] == 7.0


def governed_transitions(env_id: str, steps: int, seed: int) -> list[tuple[Proposal, Outcome]]:
    """Real proposals (with the world's meaning) and outcomes from a random rollout."""
    env = gym.make(env_id)
    layer = governed_layer(env)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    out = []
    for _ in range(steps):
        action = env.action_space.sample()
        proposal = layer.propose(action)
        obs, _, terminated, truncated, info = env.step(action)
        gov = info["governance"]
        out.append((proposal, Outcome(obs, gov["raw_reward"], terminated, truncated, info, action,
                                      gov["executed_action"] is not None, proposal.meaning)))
        if terminated or truncated:
            env.reset()
    return out


def kernel_trace(kernel: Kernel, ctx: Any,
                 transitions: list[tuple[Proposal, Outcome]]) -> list[tuple[Any, Any]]:
    return [(kernel.decide(proposal, ctx), kernel.review(outcome, ctx))
            for proposal, outcome in transitions]


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("pickler", [pickle, cloudpickle], ids=["pickle", "cloudpickle"])
def test_policy_and_kernel_pickle_and_decide_identically(env_id: str, pickler: Any) -> None:
    name = govgym.ENV_SPECS[env_id].policy
    policy = load_policy(name)
    assert pickler.loads(pickler.dumps(policy)).to_dict() == policy.to_dict()
    fresh = pickler.loads(pickler.dumps(Kernel(name)))
    assert fresh.policy.to_dict() == policy.to_dict() and fresh.rule_names == Kernel(name).rule_names
    transitions = governed_transitions(env_id, 400, 0)
    kernel = Kernel(name)
    ctx = kernel.new_context()
    warmup = kernel_trace(kernel, ctx, transitions[:60])
    # a copy taken mid-episode (kernel and context) goes on exactly like the original
    kernel_copy, ctx_copy = pickler.loads(pickler.dumps((kernel, ctx)))
    ahead = kernel_trace(kernel, ctx, transitions[60:])
    assert kernel_trace(kernel_copy, ctx_copy, transitions[60:]) == ahead
    assert kernel_trace(fresh, fresh.new_context(), transitions) == warmup + ahead
    assert any(d.violations or r.violations for d, r in warmup + ahead), "trace never violated"


def test_governed_env_itself_pickles_through_its_spec() -> None:
    env = make_arbitrary()
    rebuilt = gym.make(cloudpickle.loads(cloudpickle.dumps(env.spec)))
    assert isinstance(rebuilt, GovernedEnv)
    assert rebuilt.kernel.policy.to_dict() == env.kernel.policy.to_dict()


@pytest.mark.parametrize("copier", [pickle.dumps, cloudpickle.dumps, copy.deepcopy],
                         ids=["pickle", "cloudpickle", "deepcopy"])
def test_an_env_writing_an_audit_log_refuses_to_be_copied_and_rebuilds_from_its_spec(
        copier: Any, tmp_path: Path) -> None:
    """A copy of an env with an open audit log would append to the same hash chain: it
    is refused with a message that says why and what to do (was: ``cannot pickle
    '_io.TextIOWrapper' object``). The refused copy changes nothing; the spec rebuilds
    the env with a log of its own."""
    template = str(tmp_path / "audit-{run}.jsonl")
    env = gym.make("Governed-CartPole-v1", audit_path=template)
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(TypeError, match=r"audit log .*audit-.*\.jsonl.*gymnasium\.make\(env\.spec\)"):
        copier(env)
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        copier(env.get_wrapper_attr("recorder"))
    env.step(1)
    rebuilt = gym.make(env.spec)
    rebuilt.reset(seed=0)
    rebuilt.step(1)
    for e in (env, rebuilt):
        e.close()
    logs = sorted(tmp_path.glob("audit-*.jsonl"))
    assert len(logs) == 2
    assert sorted(len(read_audit(p).records) for p in logs) == [1, 2]
    assert all(read_audit(p).ok for p in logs)


# -- determinism and the audit log --------------------------------------------------------

VOLATILE_AUDIT_FIELDS = ("time", "hash", "prev")


@pytest.mark.parametrize("name", [*ENV_IDS, "CartPole-v1+cartpole-envelope"])
def test_identical_seeds_give_identical_trajectories_and_audit(name: str, tmp_path: Path) -> None:
    builder = BUILDERS[name]
    paths = [tmp_path / "a" / "audit.jsonl", tmp_path / "b" / "audit.jsonl"]
    envs = [builder(audit_path=path, run_id="same-run") for path in paths]
    actions = random_actions(envs[0], 450)
    first, second = (rollout(env, 5, actions) for env in envs)
    assert_same(first, second)
    for env in envs:
        env.close()
    steps = [s for s in first if len(s) == 5]
    logs = [read_audit(path) for path in paths]
    for log in logs:
        assert log.ok and not log.torn, log.problem
        assert len(log.records) == len(steps)
        assert {r["run"] for r in log.records} == {"same-run"}
    for a, b in zip(logs[0].records, logs[1].records, strict=True):
        for field in VOLATILE_AUDIT_FIELDS:
            assert field in a and field in b
        assert ({k: v for k, v in a.items() if k not in VOLATILE_AUDIT_FIELDS}
                == {k: v for k, v in b.items() if k not in VOLATILE_AUDIT_FIELDS})
    # the records say what the infos said
    for record, (*_, info) in zip(logs[0].records, steps, strict=True):
        assert record["verdict"] == info["governance"]["verdict"]
        assert record["cost"] == pytest.approx(info["cost"])
        assert len(record["violations"]) == len(info["governance"]["violations"])


def test_different_seeds_give_different_trajectories() -> None:
    """Guards the determinism test against a rollout that ignores its seed."""
    env = gym.make("Governed-CartPole-v1")
    actions = random_actions(env, 50)
    a, b = rollout(env, 1, actions, episodes=1), rollout(env, 2, actions, episodes=1)
    assert not np.array_equal(a[0][0], b[0][0])
