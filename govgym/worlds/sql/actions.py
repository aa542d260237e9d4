"""The discrete action grammar: a ``MultiDiscrete`` action composes one real SQL string.

An action is five indices ``[verb, table, column, filter, value]``. A filter compares a
column with the task's key value (slot 0 of :attr:`Task.values`, e.g. the city the
question asks about), the way a text-to-SQL agent copies the entity from the question.
``value`` picks one of the task's four value slots for ``SET col = ?`` and ``LIMIT ?``.
The grammar is deliberately permissive: many combinations are invalid SQL (``SUM(*)``)
and fail in SQLite, and the destructive ones (``DELETE`` and ``UPDATE`` without
``WHERE``, ``DROP TABLE``) and the personal columns (``email``, ``ssn``) are all
reachable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "ACTION_DIMS",
    "COLUMNS",
    "FILTERS",
    "N_VALUE_SLOTS",
    "TABLES",
    "VERBS",
    "ActionParts",
    "Literal",
    "compose_sql",
    "decode_action",
    "make_action",
    "sql_literal",
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
    ("delete", "DELETE FROM {table}{where}"),
    ("drop", "DROP TABLE {table}"),
)
#: table name -> FROM clause.
TABLES: tuple[tuple[str, str], ...] = (
    ("customers", "customers"),
    ("orders", "orders"),
    ("products", "products"),
    ("orders+customers", "orders JOIN customers ON orders.customer_id = customers.id"),
)
COLUMNS: tuple[str, ...] = (
    "*", "id", "name", "city", "tier", "email", "ssn",
    "amount", "status", "category", "price", "stock",
)
#: filter name -> WHERE clause; ``{key}`` is the task's key value (``Task.values[0]``).
FILTERS: tuple[tuple[str, str], ...] = (
    ("none", ""),
    ("city_eq", " WHERE city = {key}"),
    ("tier_eq", " WHERE tier = {key}"),
    ("status_eq", " WHERE status = {key}"),
    ("category_eq", " WHERE category = {key}"),
    ("price_gt", " WHERE price > {key}"),
    ("stock_lt", " WHERE stock < {key}"),
    ("stale_pending", " WHERE status = 'pending' AND created_at < {key}"),
)
N_VALUE_SLOTS = 4
ACTION_DIMS: tuple[int, ...] = (len(VERBS), len(TABLES), len(COLUMNS), len(FILTERS),
                                N_VALUE_SLOTS)


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


def _indices(action: Sequence[int] | np.ndarray) -> tuple[int, ...]:
    flat = np.asarray(action).reshape(-1)
    if flat.shape != (len(ACTION_DIMS),) or not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"a discrete SQL action is {len(ACTION_DIMS)} integers, got {action!r}")
    indices = tuple(int(i) for i in flat)
    for index, size in zip(indices, ACTION_DIMS, strict=True):
        if not 0 <= index < size:
            raise ValueError(f"action {indices} is outside MultiDiscrete({list(ACTION_DIMS)})")
    return indices


def decode_action(action: Sequence[int] | np.ndarray) -> ActionParts:
    """Names of the grammar choices an action makes."""
    verb, table, column, where, value = _indices(action)
    return ActionParts(VERBS[verb][0], TABLES[table][0], COLUMNS[column], FILTERS[where][0],
                       value)


def compose_sql(action: Sequence[int] | np.ndarray, values: Sequence[Literal]) -> str:
    """The SQL statement ``action`` stands for, given the task's value slots."""
    verb, table, column, where, value = _indices(action)
    clause = FILTERS[where][1].format(key=sql_literal(values[0]))
    return VERBS[verb][1].format(
        column=COLUMNS[column], table=TABLES[table][1], where=clause,
        value=sql_literal(values[value]),
    )


def _position(names: Sequence[str], name: str, kind: str) -> int:
    try:
        return list(names).index(name)
    except ValueError:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {list(names)}") from None


def make_action(verb: str, table: str, column: str = "*", where: str = "none",
                value: int = 0) -> np.ndarray:
    """The action for the given grammar choices, e.g. ``make_action("delete", "orders")``."""
    action = np.array([
        _position([v for v, _ in VERBS], verb, "verb"),
        _position([t for t, _ in TABLES], table, "table"),
        _position(COLUMNS, column, "column"),
        _position([f for f, _ in FILTERS], where, "filter"),
        value,
    ], dtype=np.int64)
    _indices(action)
    return action
