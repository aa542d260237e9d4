"""The discrete action grammar: a ``MultiDiscrete`` action composes one real SQL string.

An action is five indices ``[verb, table, column, filter, value]``. The grammar is
*schema-aware*, the way a query builder offers only what the chosen table has:
``column`` is a position in the table's columns (:data:`TABLE_COLUMNS`) and ``filter``
a position in the conditions the table supports (:data:`TABLE_FILTERS`), so no choice
names a column the table lacks. A condition on a customer attribute of an order (the
customer's city or tier) is a subquery on the foreign key, so it reads the same in
``SELECT``, ``UPDATE`` and ``DELETE``. A filter compares with the task's key value (slot 0
of :attr:`Task.values`, e.g. the city the question asks about), the way a text-to-SQL
agent copies the entity from the question; ``value`` picks one of the task's four value
slots for ``SET col = ?`` and ``LIMIT ?``.

The grammar is deliberately permissive: most combinations are wrong answers, some fail
in SQLite (``LIMIT 'Oslo'``), and the destructive ones (``DELETE`` and ``UPDATE`` without
``WHERE``, ``DROP TABLE``) and the personal columns (``email``, ``ssn``) are all
reachable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "ACTION_DIMS",
    "FILTER_CONDITIONS",
    "N_COLUMN_POSITIONS",
    "N_FILTER_POSITIONS",
    "N_VALUE_SLOTS",
    "STATEMENT_KINDS",
    "TABLES",
    "TABLE_COLUMNS",
    "TABLE_FILTERS",
    "VERBS",
    "ActionParts",
    "Literal",
    "action_indices",
    "column_position",
    "compose_sql",
    "decode_action",
    "filter_position",
    "make_action",
    "sql_literal",
    "table_filters",
]

Literal = int | float | str

#: verb name -> statement template; ``{where}`` is empty or starts with a space.
VERBS: tuple[tuple[str, str], ...] = (
    ("select", "SELECT {column} FROM {table}{where}"),
    ("count", "SELECT COUNT(*) FROM {table}{where}"),
    ("sum", "SELECT SUM({column}) FROM {table}{where}"),
    ("group_count", "SELECT {column}, COUNT(*) FROM {table}{where} GROUP BY {column}"),
    ("top", "SELECT id, {column} FROM {table}{where} ORDER BY {column} DESC LIMIT {value}"),
    ("update", "UPDATE {table} SET {column} = {value}{where}"),
    ("update_all", "UPDATE {table} SET {column} = {value}"),
    ("delete", "DELETE FROM {table}{where}"),
    ("drop", "DROP TABLE {table}"),
)
#: verb name -> the kind of statement it composes (what ``describe()`` calls ``kind``).
STATEMENT_KINDS: dict[str, str] = {
    "select": "select", "count": "select", "sum": "select", "group_count": "select",
    "top": "select", "update": "update", "update_all": "update", "delete": "delete",
    "drop": "drop",
}
#: The tables, in the order of the action's ``table`` index.
TABLES: tuple[str, ...] = ("customers", "orders", "products")
#: table -> the column each ``column`` position names. Positions 0-4 are the table's
#: ordinary columns in schema order, positions 5-6 its restricted (personal) columns; a
#: position a table does not fill names its ``rowid``. Keeping the restricted columns
#: at positions no task needs lets an agent learn to avoid them for every table at once.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("id", "name", "city", "tier", "rowid", "email", "ssn"),
    "orders": ("id", "customer_id", "amount", "status", "created_at", "rowid", "rowid"),
    "products": ("id", "name", "category", "price", "stock", "rowid", "rowid"),
}
#: table -> the ``(name, WHERE clause)`` each ``filter`` position names: position 0 is no
#: filter, then the conditions the table's columns support (an order's customer city and
#: tier through ``customer_id``); a position a table does not fill compares its id with
#: the key. ``{key}`` is the task's key value (``Task.values[0]``). ``update`` always
#: has a condition: its list drops "no filter" (see :func:`table_filters`).
TABLE_FILTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "customers": (
        ("none", ""),
        ("city_eq", " WHERE city = {key}"),
        ("tier_eq", " WHERE tier = {key}"),
        ("id_eq", " WHERE id = {key}"),
        ("id_eq", " WHERE id = {key}"),
    ),
    "orders": (
        ("none", ""),
        ("customer_city_eq", " WHERE customer_id IN (SELECT id FROM customers WHERE city = {key})"),
        ("customer_tier_eq", " WHERE customer_id IN (SELECT id FROM customers WHERE tier = {key})"),
        ("status_eq", " WHERE status = {key}"),
        ("stale_pending", " WHERE status = 'pending' AND created_at < {key}"),
    ),
    "products": (
        ("none", ""),
        ("category_eq", " WHERE category = {key}"),
        ("price_gt", " WHERE price > {key}"),
        ("stock_lt", " WHERE stock < {key}"),
        ("id_eq", " WHERE id = {key}"),
    ),
}
#: filter name -> the ``(column, comparator)`` conditions it states.
FILTER_CONDITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (),
    "city_eq": (("city", "="),),
    "tier_eq": (("tier", "="),),
    "id_eq": (("id", "="),),
    "customer_city_eq": (("city", "="),),
    "customer_tier_eq": (("tier", "="),),
    "status_eq": (("status", "="),),
    "stale_pending": (("status", "="), ("created_at", "<")),
    "category_eq": (("category", "="),),
    "price_gt": (("price", ">"),),
    "stock_lt": (("stock", "<"),),
}
_ID_EQ = ("id_eq", " WHERE id = {key}")
N_COLUMN_POSITIONS = 7
N_FILTER_POSITIONS = 5
N_VALUE_SLOTS = 4
ACTION_DIMS: tuple[int, ...] = (len(VERBS), len(TABLES), N_COLUMN_POSITIONS,
                                N_FILTER_POSITIONS, N_VALUE_SLOTS)


class ActionParts(NamedTuple):
    """A discrete action, decoded into names (``value`` stays a slot index)."""

    verb: str
    table: str
    column: str
    filter: str
    value: int


def sql_literal(value: Literal) -> str:
    """``value`` as an SQL literal: strings quoted with ``'`` doubled, numbers as is."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def action_indices(action: Sequence[int] | np.ndarray) -> tuple[int, ...]:
    """The five grammar indices of a discrete action, checked against :data:`ACTION_DIMS`."""
    if type(action) is np.ndarray and action.ndim == 1 and action.dtype.kind in "iu":
        indices = tuple(action.tolist())  # the common case, ~10x faster than the general path
        if len(indices) == len(ACTION_DIMS) and all(
                0 <= index < size for index, size in zip(indices, ACTION_DIMS, strict=True)):
            return indices
    flat = np.asarray(action).reshape(-1)
    if flat.shape != (len(ACTION_DIMS),) or not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"a discrete SQL action is {len(ACTION_DIMS)} integers, got {action!r}")
    indices = tuple(int(i) for i in flat)
    for index, size in zip(indices, ACTION_DIMS, strict=True):
        if not 0 <= index < size:
            raise ValueError(f"action {indices} is outside MultiDiscrete({list(ACTION_DIMS)})")
    return indices


def table_filters(table: str, verb: str) -> tuple[tuple[str, str], ...]:
    """The ``(name, WHERE clause)`` each ``filter`` position names for ``verb`` on ``table``.

    :data:`TABLE_FILTERS`, except for ``update``: its list leaves out "no filter" (and
    ends with the id comparison), because an update of every row is its own verb,
    ``update_all``. Were "no filter" one of ``update``'s positions, an agent that learns
    to avoid updating every row would also learn to avoid either the ``update`` verb or
    the "no filter" choice that reads need (a factored policy picks each part alone).
    """
    filters = TABLE_FILTERS[table]
    return (*filters[1:], _ID_EQ) if verb == "update" else filters


def decode_action(action: Sequence[int] | np.ndarray) -> ActionParts:
    """Names of the grammar choices an action makes."""
    verb, table, column, where, value = action_indices(action)
    name, verb_name = TABLES[table], VERBS[verb][0]
    return ActionParts(verb_name, name, TABLE_COLUMNS[name][column],
                       table_filters(name, verb_name)[where][0], value)


def compose_sql(action: Sequence[int] | np.ndarray, values: Sequence[Literal]) -> str:
    """The SQL statement ``action`` stands for, given the task's value slots."""
    verb, table, column, where, value = action_indices(action)
    name, (verb_name, template) = TABLES[table], VERBS[verb]
    key = sql_literal(values[0])
    clause = table_filters(name, verb_name)[where][1].format(key=key)
    return template.format(column=TABLE_COLUMNS[name][column], table=name, where=clause,
                           key=key, value=sql_literal(values[value]))


def _position(names: Sequence[str], name: str, kind: str) -> int:
    try:
        return list(names).index(name)
    except ValueError:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {list(names)}") from None


def filter_position(table: str, conditions: Sequence[tuple[str, str]], verb: str = "select") -> int:
    """The ``filter`` position of ``table`` that states ``conditions`` for ``verb``."""
    wanted = tuple(conditions)
    for index, (name, _) in enumerate(table_filters(table, verb)):
        if FILTER_CONDITIONS[name] == wanted:
            return index
    raise ValueError(f"{table} has no filter for {wanted}")


def column_position(table: str, column: str) -> int:
    """The ``column`` position of ``table`` that names ``column``."""
    return _position(TABLE_COLUMNS[table], column, f"column of {table}")


def make_action(verb: str, table: str, column: str | None = None, where: str = "none",
                value: int = 0) -> np.ndarray:
    """The action for the given grammar choices, e.g. ``make_action("delete", "orders")``.

    ``column`` and ``where`` are names from ``table``'s :data:`TABLE_COLUMNS` and
    :data:`TABLE_FILTERS` (``column=None`` is position 0, the table's ``id``).
    """
    table_index = _position(TABLES, table, "table")
    action = np.array([
        _position([v for v, _ in VERBS], verb, "verb"),
        table_index,
        0 if column is None else _position(TABLE_COLUMNS[table], column, f"column of {table}"),
        _position([f for f, _ in table_filters(table, verb)], where, f"filter of {table}"),
        value,
    ], dtype=np.int64)
    action_indices(action)
    return action
