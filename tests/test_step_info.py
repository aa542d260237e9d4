"""StepInfo: a governed step's info deep-copies like copy.deepcopy, through a faster walk."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from govgym import GovernedEnv
from govgym.wrappers import StepInfo

_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.tuples(inner, inner),
    max_leaves=20,
)


def _mutable_parts(value: Any) -> list[Any]:
    """Every dict and list inside ``value`` (``value`` itself included)."""
    found: list[Any] = []
    if isinstance(value, dict):
        found.append(value)
        for v in value.values():
            found += _mutable_parts(v)
    elif isinstance(value, list | tuple):
        if isinstance(value, list):
            found.append(value)
        for v in value:
            found += _mutable_parts(v)
    return found


@given(st.dictionaries(st.text(max_size=6), _json_like, max_size=6))
def test_deepcopy_equals_the_generic_one_and_shares_nothing_mutable(values: dict[str, Any]) -> None:
    info = StepInfo(values)
    fast, generic = copy.deepcopy(info), copy.deepcopy(dict(info))
    assert type(fast) is StepInfo and fast == generic == info
    originals = {id(part) for part in _mutable_parts(info)}
    assert not originals & {id(part) for part in _mutable_parts(fast)}


def test_other_values_go_to_copy_deepcopy() -> None:
    array = np.arange(3.0)
    info = StepInfo(obs=array, nested={"arrays": [array]}, key=(1, [2]))
    twin = copy.deepcopy(info)
    twin["obs"][0] = 99.0
    twin["nested"]["arrays"][0][1] = 99.0
    twin["key"][1].append(3)
    assert array.tolist() == [0.0, 1.0, 2.0] and info["key"] == (1, [2])


def test_a_governed_info_is_a_step_info_and_behaves_as_a_dict() -> None:
    env = GovernedEnv(gym.make("CartPole-v1"), "cartpole-envelope")
    _, reset_info = env.reset(seed=0)
    infos = [reset_info]
    for _ in range(12):  # pushing one way leaves the envelope
        *_, terminated, truncated, info = env.step(1)
        infos.append(info)
        if terminated or truncated:
            break
    env.close()
    assert any(info["governance"]["violations"] for info in infos)  # the nested part is exercised
    for info in infos:
        assert type(info) is StepInfo and isinstance(info, dict)
        assert json.loads(json.dumps(info)) == info
        assert pickle.loads(pickle.dumps(info)) == info
        twin = copy.deepcopy(info)
        assert twin == info and twin["governance"] is not info["governance"]
        if twin["governance"]["violations"]:
            twin["governance"]["violations"][0]["message"] = "edited"
            assert info["governance"]["violations"][0]["message"] != "edited"


def test_the_worlds_own_info_is_kept_in_a_step_info() -> None:
    class Reporting(gym.Wrapper):  # type: ignore[type-arg]
        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward, terminated, truncated, {**info, "cost": 2.0, "seen": np.ones(2)}

    env = GovernedEnv(Reporting(gym.make("CartPole-v1")), None)
    env.reset(seed=0)
    info = env.step(0)[-1]
    assert type(info) is StepInfo and info["world_cost"] == 2.0 and info["cost"] == 0.0
    twin = copy.deepcopy(info)
    twin["seen"][0] = 5.0
    assert info["seen"].tolist() == [1.0, 1.0]
