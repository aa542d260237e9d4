"""Reading govgym's YAML files (policies, env specs): strict where PyYAML is lenient.

- A key given twice in one mapping is an error naming the key and its line (PyYAML keeps
  the last one silently, so a second ``rules:`` would drop every rule above it).
- Numbers in exponent notation without a dot (``1e-3``, ``5E6``) are floats, as in YAML
  1.2 (PyYAML's YAML 1.1 rules read them as strings).

:func:`load` returns the data and the composed node tree, which gives the line of any
field for error messages.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["load"]

_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(_BASE):  # type: ignore[misc, valid-type]
    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base constructor reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """``(data, node)`` of one YAML document; raises ``yaml.YAMLError`` (with a
    ``problem_mark``) on bad YAML or a duplicate key."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node
