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


#: Values a document may hold once its aliases are expanded: far more than any policy
#: or env spec needs, far fewer than a "billion laughs" file (a few hundred bytes of
#: nested aliases standing for 10^8 values, which every repr in an error would expand).
MAX_VALUES = 100_000


def _expanded_size(root: yaml.Node) -> int | None:
    """How many nodes ``root`` stands for with every alias expanded, or ``None`` if an
    alias refers to a node that holds it (a recursive document)."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()

    def size(node: yaml.Node) -> int | None:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in pending:
            return None
        pending.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            inner = size(child)
            if inner is None:
                return None
            total += inner
            if total > MAX_VALUES:
                break
        pending.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """``(data, node)`` of one YAML document; raises ``yaml.YAMLError`` (with a
    ``problem_mark``) on bad YAML, a duplicate key, a recursive alias, or more than
    :data:`MAX_VALUES` values once aliases are expanded."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            size = _expanded_size(node)
            if size is None or size > MAX_VALUES:
                what = ("an alias refers to a value that holds it" if size is None else
                        f"its aliases expand it to more than {MAX_VALUES:,} values")
                raise yaml.composer.ComposerError(None, None, f"{what}; write the values out",
                                                  node.start_mark)
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node
