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

    ``install(conn)`` is called once after every restore (each ``reset``) and once when
    the guard is set; it may set an authorizer, a progress handler and limits on
    ``conn``. Optional members, used if present:

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


def guard_instructions(guard: object | None) -> int | None:
    """The guard's instruction counter, or ``None`` if it does not keep one."""
    value = getattr(guard, "instructions", None)
    return None if value is None else int(value)
