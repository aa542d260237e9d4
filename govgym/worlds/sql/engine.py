"""The seam between the SQL world and an engine guard, and the outcome of one statement.

The world runs every agent statement through :meth:`SQLWorld._execute`. A guard (built
by a governance layer, not here) is any object with ``install(conn)``; it may also have
``before(sql)``, ``after()`` and an ``instructions`` counter. See :class:`EngineGuard`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "SAVEPOINT",
    "VM_TICK",
    "EngineGuard",
    "Execution",
    "guard_denies",
    "guard_instructions",
    "is_denial",
    "statement_kind",
]

#: Name of the savepoint that wraps each agent statement.
SAVEPOINT = "govgym_step"
#: The world's own progress handler fires every ``VM_TICK`` SQLite VM instructions;
#: ``vm_instructions`` is the number of calls times ``VM_TICK`` (an approximation that
#: rounds down to a multiple of ``VM_TICK``).
VM_TICK = 100
# "is prohibited": SQLite's words for a column read an authorizer refused
# ("access to customers.email is prohibited")
_DENIAL_MARKERS = ("not authorized", "interrupted", "is prohibited")


@runtime_checkable
class EngineGuard(Protocol):
    """What the world expects of an engine guard.

    ``install(conn)`` is called on every new connection: at each ``reset``, when the
    guard is set (mid-episode too), and when the world undoes a statement that left the
    database unreadable (``PRAGMA writable_schema``; the new connection holds the state
    before it, and that statement's ``settled(True)`` was called already). It may set an
    authorizer, a progress handler and limits on ``conn``. ``SQLEngineGuard`` takes
    every ``install`` as a new episode, so its row count starts again from 0 (it refuses
    ``PRAGMA`` outright, so only the first two reach it). Optional members, used if present:

    * ``before(sql)`` / ``after()``: called right before and right after the statement
      (``after`` also when it failed), inside the statement's savepoint. A
      ``sqlite3.Error`` raised by ``before`` fails the statement like an engine error
      would. If ``after`` returns a message (a non-empty string), the guard refuses the
      statement after the fact: the world rolls it back and reports it as denied with
      that message (e.g. a row-change cap checked with ``conn.total_changes``).
    * ``settled(kept)``: called after the statement's savepoint ends; ``kept`` is False
      when the world rolled the statement back (it failed, or ``after`` refused it), so a
      guard that counts changes across statements (an episode's row-change cap) can take
      them back out.
    * ``denies(error)``: whether a failed statement's error message is this guard's
      refusal although it carries none of the authorizer's or interrupt's words (a size
      limit the guard set: "string or blob too big"); the world then reports the
      statement as denied, not as an error.
    * ``instructions``: a counter of VM instructions the guard's own progress handler
      saw. If present, the guard owns the progress handler, and the world reports the
      counter's growth during the statement as ``vm_instructions``. If absent, the world
      installs its own counting handler *before* ``install``; a guard that replaces it
      without exposing ``instructions`` makes ``vm_instructions`` read 0.

    The world's own statements on the connection (``SAVEPOINT``/``RELEASE``/``ROLLBACK
    TO``, and ``PRAGMA database_list`` after an ``ATTACH``) run outside the
    ``before``/``after`` window; an authorizer that is active all the time must allow
    ``SQLITE_SAVEPOINT``.
    """

    def install(self, conn: sqlite3.Connection) -> None: ...


@dataclass(frozen=True)
class Execution:
    """The outcome of one statement on the engine."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    error: str | None = None
    denied: bool = False
    truncated: bool = False
    instructions: int = 0


def is_denial(message: str) -> bool:
    """Whether an engine error is a guard's refusal (authorizer or progress interrupt)."""
    lowered = message.lower()
    return any(marker in lowered for marker in _DENIAL_MARKERS)


def guard_denies(guard: object | None, error: str) -> bool:
    """Whether ``error`` is a refusal: an authorizer's or interrupt's words, or what the
    guard's optional ``denies`` says is its own (a limit it set)."""
    if is_denial(error):
        return True
    denies = getattr(guard, "denies", None)
    return bool(denies(error)) if denies is not None else False


#: authorizer codes -> the statement kind they make (in order: the first kind found wins)
_KIND_CODES: tuple[tuple[str, frozenset[int]], ...] = tuple(
    (kind, frozenset(getattr(sqlite3, f"SQLITE_{name}") for name in names)) for kind, names in (
        ("drop", ("DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE",
                  "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
                  "DROP_VTABLE")),
        ("create", ("CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE",
                    "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW",
                    "CREATE_VTABLE")),
        ("alter", ("ALTER_TABLE",)),
        ("delete", ("DELETE",)),
        ("insert", ("INSERT",)),  # an upsert reports INSERT and UPDATE: it inserts
        ("update", ("UPDATE",)),
        ("select", ("SELECT",)),
    ))
_ROW_CHANGES = frozenset({sqlite3.SQLITE_DELETE, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE})
#: the schema's own tables: creating or dropping an object writes them too
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master", "sqlite_schema",
                            "sqlite_temp_schema"})


def statement_kind(conn: sqlite3.Connection, sql: str, schema_writable: bool = False) -> str:
    """The kind of statement SQLite compiles ``sql`` to on ``conn``, without running it.

    ``select``, ``insert``, ``update``, ``delete``, ``drop``, ``create``, ``alter`` (also
    a write to ``sqlite_master`` itself when ``schema_writable``: ``conn`` has
    ``PRAGMA writable_schema`` on); ``other`` for
    a statement of none of these (``PRAGMA``, ``ATTACH``, ``VACUUM``, transaction
    control); ``unknown`` if it does not compile on ``conn`` (a syntax error, more than
    one statement, a table ``conn`` lacks). Read from SQLite's authorizer calls for the
    statement itself, so comments, ``WITH`` prefixes and spacing do not change it. It is
    the statement's own kind: the calls of a trigger it fires or a view it reads are left
    out, so an ``INSERT`` whose trigger deletes rows is an ``insert``, and rows that an
    ``OR REPLACE`` conflict removes do not make a ``delete`` (a limit on rows changed is
    the ``sql`` rule's row caps, not a count of statements). Replaces any
    authorizer ``conn`` had: meant for a connection of its own, with
    ``cached_statements=0`` so that a repeated text is compiled (and seen) again.
    """
    seen: set[int] = set()

    def record(code: int, arg1: str | None, _arg2: str | None, _db: str | None,
               source: str | None) -> int:
        if source is None:
            if (arg1 or "").lower() not in _SCHEMA_TABLES:
                seen.add(code)
            elif schema_writable and code in _ROW_CHANGES:  # an edit of the schema table
                # itself; creating or dropping an object writes it too, but those kinds
                # come first (and so does a virtual table's first use on a connection)
                seen.add(sqlite3.SQLITE_ALTER_TABLE)
        return sqlite3.SQLITE_OK

    conn.set_authorizer(record)
    try:
        conn.execute("EXPLAIN " + sql).close()
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError):
        return "unknown"
    finally:
        conn.set_authorizer(None)
    for kind, codes in _KIND_CODES:
        if not seen.isdisjoint(codes):
            return kind
    return "other"


def guard_instructions(guard: object | None) -> int | None:
    """The guard's instruction counter, or ``None`` if it does not keep one."""
    value = getattr(guard, "instructions", None)
    return None if value is None else int(value)
