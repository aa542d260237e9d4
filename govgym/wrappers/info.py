"""``StepInfo``: the ``info`` dict of a governed step, cheap to deep-copy.

Stable-Baselines3's ``DummyVecEnv`` deep-copies every step's infos, and a governed
step's info holds a nested ``governance`` dict with lists and violation dicts: with
``copy.deepcopy``'s generic walk that copy cost more per step than the whole governed
layer (about 8 us for a CartPole step with one rule, against 1.3 us for an empty info).
:class:`StepInfo` is a plain ``dict`` subclass (``isinstance(info, dict)`` holds, JSON,
pickling and Gymnasium's vector envs treat it as a dict) whose ``__deepcopy__`` walks
dicts and lists itself and hands any other value to ``copy.deepcopy``.

>>> import copy
>>> info = StepInfo(cost=1.0, governance={"verdict": "warn", "violations": [{"rule": "r"}]})
>>> twin = copy.deepcopy(info)
>>> twin == info, type(twin).__name__, twin["governance"] is info["governance"]
(True, 'StepInfo', False)
>>> twin["governance"]["violations"][0]["rule"] = "changed"
>>> info["governance"]["violations"][0]["rule"]
'r'
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["StepInfo"]

#: Types ``copy.deepcopy`` returns as they are (immutable, holding nothing mutable).
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})


def _deep(value: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of ``value``: dicts and lists (exact types) walked here, the rest
    (arrays, tuples, user objects) by ``copy.deepcopy`` with the shared ``memo``.

    Unlike ``copy.deepcopy``, a dict or list reached twice is copied twice: the copy is
    as independent of the original, but does not keep aliasing inside it (an info's
    values never rely on that)."""
    kind = type(value)
    if kind is dict:
        return {k if type(k) in _ATOMIC else copy.deepcopy(k, memo):
                v if type(v) in _ATOMIC else _deep(v, memo) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMIC else _deep(v, memo) for v in value]
    return copy.deepcopy(value, memo)


class StepInfo(dict):  # type: ignore[type-arg]
    """A dict, whose deep copy is ~2.5x faster than ``copy.deepcopy``'s generic one for
    the nested, JSON-like values a governed step's info holds."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> StepInfo:
        new = StepInfo()
        memo[id(self)] = new
        for key, value in self.items():
            if type(key) not in _ATOMIC:
                key = copy.deepcopy(key, memo)
            new[key] = value if type(value) in _ATOMIC else _deep(value, memo)
        return new
