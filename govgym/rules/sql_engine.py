"""The SQLite side of the ``sql`` rule: a policy compiled into engine terms, the engine
guard it installs on a world's connection, and the shadow-schema classifier.

Both halves judge a statement with SQLite's own parser, so there is no parser
differential between what is checked and what runs:

- :class:`ShadowClassifier` (the kernel's pre-step check) keeps a private, empty,
  in-memory database whose schema is the policy's tables with *all* their columns. It
  compiles ``EXPLAIN QUERY PLAN <statement>`` (compiled, never run) under a *recording*
  authorizer, which reports every table and column the statement reads (including
  through ``*``, aliases, quoted names, subqueries, CTEs, ``UNION``, ``ORDER BY`` and
  function arguments), every function it calls and what kind of statement it is. A
  statement that does not compile, names an unknown table or column, or holds more than
  one statement fails there. The plan rows give a cost estimate.
- :class:`SQLEngineGuard` (defense in depth, the world's
  :class:`~govgym.worlds.sql.engine.EngineGuard` seam) installs on the world's real
  connection an authorizer compiled from the same policy, a progress handler as the VM
  budget, tight ``sqlite3`` limits, and a row-change cap checked after each statement.

One gap of SQLite's authorizer is closed by reading the compiled program instead: the
columns that ``USING (...)`` and ``NATURAL JOIN`` compare are *not* reported to the
authorizer (``customers a JOIN customers b USING (ssn)`` reports no read at all). For a
statement whose text holds ``using`` or ``natural``, both halves list the ``Column``
opcodes of ``EXPLAIN <statement>`` (:func:`program_reads`) and refuse PII reads found
there.

Known limits of the engine half (the kernel catches them): SQLite does not consult the
authorizer for ``VACUUM`` and ``REINDEX`` (``VACUUM [INTO]`` fails anyway inside the
world's per-statement savepoint), and an agent statement whose exact text the world
itself ran earlier on the same connection (``SAVEPOINT govgym_step``, ``RELEASE
govgym_step``) is reused from Python's statement cache without a new authorization.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DANGEROUS_FUNCTIONS",
    "DEFAULT_FUNCTIONS",
    "ENGINE_LIMITS",
    "GUARD_LIMIT_MARKERS",
    "NEVER_FUNCTIONS",
    "SAVEPOINT_NAME",
    "Classification",
    "CompiledPolicy",
    "SQLEngineGuard",
    "ShadowClassifier",
    "TablePolicy",
    "code_name",
    "estimate_plan_cost",
    "needs_program_check",
    "program_reads",
    "table_layout",
    "unicode_problem",
]

#: The savepoint the SQL world wraps every agent statement in; its own, always allowed.
SAVEPOINT_NAME = "govgym_step"

#: Functions a policy allows when it lists none: aggregates, arithmetic, case and date
#: helpers. String-splitting functions (substr, instr, trim, replace) are left out on
#: purpose: in the SQL world an email is ``first.last@example.com``, so splitting
#: ``name`` would rebuild personal data without reading a personal column.
DEFAULT_FUNCTIONS: tuple[str, ...] = (
    "count", "sum", "avg", "min", "max", "total", "abs", "round", "lower", "upper", "length",
    "coalesce", "ifnull", "nullif", "like", "date", "time", "datetime", "julianday", "strftime",
)

#: Functions no policy may list: they reach files, extensions or raw database pages, or
#: build arbitrarily large blobs from a small statement.
NEVER_FUNCTIONS: frozenset[str] = frozenset({
    "load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "sqlite_dbpage", "zipfile",
    "sqlar_compress", "sqlar_uncompress", "fts5", "randomblob", "zeroblob",
})

#: Functions refused as critical (``dangerous_function``) unless a policy lists them: the
#: above, value amplifiers (``printf('%.*c', 1e9, 'x')``, ``replace`` and ``char`` bombs)
#: and engine internals.
DANGEROUS_FUNCTIONS: frozenset[str] = NEVER_FUNCTIONS | {
    "printf", "format", "char", "replace", "sqlite_offset", "sqlite_compileoption_get",
    "sqlite_compileoption_used", "sqlite_source_id",
}

#: ``sqlite3`` limits the guard sets on the world's connection (and the shadow uses, so
#: that a statement over a limit fails in the kernel too). Attaching is impossible.
ENGINE_LIMITS: Mapping[int, int] = {
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LENGTH: 4096,  # the sql rule's max_value_length
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 16_384,
    sqlite3.SQLITE_LIMIT_COLUMN: 200,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 8,
    sqlite3.SQLITE_LIMIT_VDBE_OP: 20_000,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 16,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 200,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 16,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 2,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
}

_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
_SELECT, _READ = sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ
_INSERT, _UPDATE, _DELETE = sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE
_FUNCTION, _RECURSIVE = sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE
_SAVEPOINT, _PRAGMA = sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_PRAGMA
_DML = {_INSERT: "insert", _UPDATE: "update", _DELETE: "delete"}
_ROWID_NAMES = frozenset({"rowid", "oid", "_rowid_"})
_SYSTEM_PREFIXES = ("sqlite_", "pragma_", "json_", "fts", "dbstat", "generate_series")
#: SQLite's errors for the size limits the guard sets (value length, database growth)
GUARD_LIMIT_MARKERS = ("string or blob too big", "database or disk is full")
_TRIGGER_PREFIX = "govgym_cap_"
#: Text that can change rows holds one of these keywords (SQLite keywords are ASCII).
_ROW_CHANGING_WORDS = ("insert", "update", "delete", "replace")
_ROW_FUNCTION = "govgym_row_changed"
#: what the triggers' counter returns once the episode's cap is broken: above any table's cap
_OVER_EVERY_CAP = 2**63 - 1
_UNKNOWN = object()


def _codes(*names: str) -> frozenset[int]:
    return frozenset(getattr(sqlite3, f"SQLITE_{n}") for n in names if hasattr(sqlite3, f"SQLITE_{n}"))


_NOT_ALIASES = frozenset({
    "where", "join", "left", "right", "full", "inner", "outer", "cross", "natural", "on", "using",
    "group", "order", "limit", "union", "intersect", "except", "set", "window", "having", "indexed",
    "not", "values", "returning", "as",
})
_DDL_CODES = _codes(
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER",
    "DROP_VIEW", "ALTER_TABLE", "CREATE_VTABLE", "DROP_VTABLE", "ANALYZE", "REINDEX",
)
_TRIGGER_CODES = _codes("CREATE_TRIGGER", "CREATE_TEMP_TRIGGER", "DROP_TRIGGER", "DROP_TEMP_TRIGGER")
_ATTACH_CODES = _codes("ATTACH", "DETACH")
_TRANSACTION_CODES = _codes("TRANSACTION", "SAVEPOINT")
#: Codes the policy never allows to an agent. The shadow's recorder refuses them too:
#: some pragmas act while they are compiled, and the shadow must stay pristine.
NEVER_CODES: frozenset[int] = _DDL_CODES | _ATTACH_CODES | _TRANSACTION_CODES | {_PRAGMA}
_SHADOW_CHECKED = NEVER_CODES | set(_DML)

_ACTION_NAMES = (
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER",
    "DROP_VIEW", "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH",
    "ALTER_TABLE", "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT",
    "RECURSIVE",
)
_CODE_NAMES = {getattr(sqlite3, f"SQLITE_{n}"): n.lower() for n in _ACTION_NAMES
               if hasattr(sqlite3, f"SQLITE_{n}")}


def code_name(code: int) -> str:
    """``SQLITE_DROP_TABLE`` -> ``"drop_table"``."""
    return _CODE_NAMES.get(code, str(code))


# -- the policy in engine terms -----------------------------------------------------------------


@dataclass(frozen=True)
class TablePolicy:
    """One allow-listed table; names are lower-case (SQLite compares them so)."""

    name: str
    columns: tuple[str, ...]
    pii: frozenset[str] = frozenset()
    update: frozenset[str] = frozenset()
    insert: bool = False
    delete: bool = False
    primary_key: str | None = None
    rows: int = 1000
    max_rows_changed: int = 100

    @property
    def readable(self) -> frozenset[str]:
        return frozenset(self.columns) - self.pii | _ROWID_NAMES


@dataclass(frozen=True)
class CompiledPolicy:
    """What the ``sql`` rule's parameters mean to SQLite. Built by the rule; plain data."""

    tables: Mapping[str, TablePolicy]
    statements: frozenset[str] = frozenset({"select"})
    functions: frozenset[str] = frozenset(DEFAULT_FUNCTIONS)
    recursive: bool = False
    max_rows_changed: int = 100
    #: rows all statements of an episode may change together (``None``: no cap)
    max_rows_changed_per_episode: int | None = None
    vm_steps: int = 5_000_000
    seconds: float = 1.0
    limits: Mapping[int, int] = field(default_factory=lambda: dict(ENGINE_LIMITS))
    readable: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "readable", {n: t.readable for n, t in self.tables.items()})

    def shadow_ddl(self) -> list[str]:
        """``CREATE TABLE`` statements for the shadow schema (every column, no data)."""
        statements = []
        for table in self.tables.values():
            columns = ", ".join(
                f'"{c}" INTEGER PRIMARY KEY' if c == table.primary_key else f'"{c}"'
                for c in table.columns)
            statements.append(f'CREATE TABLE "{table.name}" ({columns})')
        return statements

    def read_denial(self, table: str | None, column: str | None, db: str | None,
                    other_tables: frozenset[str] = frozenset()) -> str | None:
        """Why reading ``table.column`` is refused, or ``None`` when it is allowed.

        A table-level read (column ``""``: SQLite reads no column, as in ``count(*)``) of
        a name outside the policy is a CTE or subquery unless it names an SQLite
        internal table, a pragma or JSON table function, or one of ``other_tables``
        (real tables the policy leaves out).
        """
        name = (table or "").lower()
        col = (column or "").lower()
        readable = self.readable.get(name)
        if readable is None or db not in (None, "main"):
            if not col and db is None and not (name.startswith(_SYSTEM_PREFIXES) or name in other_tables):
                return None
            where = f"{db}.{table}" if db not in (None, "main") else table
            return f"table {where} is not in the policy's allow-list"
        if not col or col in readable:
            return None
        if col in self.tables[name].pii:
            return f"reads personal data {name}.{col}"
        return f"column {name}.{col} is not in the policy's allow-list"

    def write_denial(self, code: int, table: str | None, column: str | None) -> str | None:
        """Why the write ``code`` on ``table(.column)`` is refused, or ``None``."""
        kind = _DML[code]
        name = (table or "").lower()
        spec = self.tables.get(name)
        if kind not in self.statements:
            return f"{kind.upper()} statements are not allowed by this policy"
        if spec is None:
            return f"writes to table {table}, which is not in the policy's allow-list"
        if code == _UPDATE:
            col = (column or "").lower()
            if col not in spec.update:
                return f"column {name}.{col} may not be updated"
        elif code == _INSERT and not spec.insert:
            return f"rows may not be inserted into {name}"
        elif code == _DELETE and not spec.delete:
            return f"rows may not be deleted from {name}"
        return None

    def function_denial(self, name: str | None) -> str | None:
        fn = (name or "").lower()
        if fn in self.functions:
            return None
        if fn in DANGEROUS_FUNCTIONS:
            return f"dangerous function {fn}()"
        return f"function {fn}() is not in the policy's allow-list"

    def engine_denial(self, code: int, arg1: str | None, arg2: str | None, db: str | None,
                      source: str | None, in_statement: bool = True,
                      other_tables: frozenset[str] = frozenset()) -> str | None:
        """The engine authorizer's answer: why an action is refused, or ``None``.

        Outside an agent statement (``in_statement=False``) the world's own bookkeeping
        also passes: its savepoint and ``PRAGMA database_list``.
        """
        if code == _SELECT:
            return None
        if code == _READ:
            return self.read_denial(arg1, arg2, db, other_tables)
        if code in _DML:
            return self.write_denial(code, arg1, arg2)
        if code == _FUNCTION:
            if arg2 == _ROW_FUNCTION and (source or "").startswith(_TRIGGER_PREFIX):
                return None
            return self.function_denial(arg2)
        if code == _RECURSIVE:
            return None if self.recursive else "recursive CTEs are not allowed by this policy"
        if not in_statement:
            if code == _SAVEPOINT and arg2 == SAVEPOINT_NAME:
                return None
            if code == _PRAGMA and (arg1 or "").lower() == "database_list" and arg2 is None:
                return None
        return f"{code_name(code).upper()} is not allowed"


# -- reading the compiled program ---------------------------------------------------------------

def needs_program_check(sql: str) -> bool:
    """Whether ``sql`` may compare columns the authorizer is not told about.

    SQLite keywords are ASCII and case-insensitive, so any ``USING``/``NATURAL`` keyword
    leaves this substring in the lower-cased text; a false positive only costs one
    extra compile.
    """
    lowered = sql.lower()
    return "using" in lowered or "natural" in lowered


Layout = Mapping[int, tuple[str, tuple[str, ...]]]


def table_layout(conn: sqlite3.Connection, tables: Iterable[str]) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Root page -> (table, columns in storage order) for ``tables`` of ``main``."""
    wanted = {t.lower() for t in tables}
    layout: dict[int, tuple[str, tuple[str, ...]]] = {}
    for name, rootpage in conn.execute("SELECT name, rootpage FROM main.sqlite_master WHERE type = 'table'"):
        if str(name).lower() in wanted and rootpage:
            quoted = '"' + str(name).replace('"', '""') + '"'
            columns = tuple(str(row[1]).lower() for row in conn.execute(f"PRAGMA main.table_info({quoted})"))
            layout[int(rootpage)] = (str(name).lower(), columns)
    return layout


def program_reads(conn: sqlite3.Connection, sql: str, layout: Layout) -> set[tuple[str, str]]:
    """Every (table, column) the compiled program of ``sql`` reads with a ``Column`` opcode.

    Cursors are mapped to tables through ``OpenRead``/``OpenWrite`` root pages (database
    0 only) and ``OpenDup``. The program is listed by ``EXPLAIN``, never run.
    """
    cursors: dict[int, tuple[str, tuple[str, ...]]] = {}
    reads: set[tuple[str, str]] = set()
    for row in conn.execute("EXPLAIN " + sql).fetchall():
        if len(row) != 8:  # not a program listing (the text was itself "QUERY PLAN ...")
            return reads
        _addr, opcode, p1, p2, p3, *_ = row
        if opcode in ("OpenRead", "OpenWrite"):
            target = layout.get(p2) if p3 == 0 else None
            if target is not None:
                cursors[p1] = target
            else:
                cursors.pop(p1, None)
        elif opcode == "OpenDup" and p2 in cursors:
            cursors[p1] = cursors[p2]
        elif opcode == "Column" and p1 in cursors:
            table, columns = cursors[p1]
            if 0 <= p2 < len(columns):
                reads.add((table, columns[p2]))
    return reads


# -- unicode ------------------------------------------------------------------------------------

_SQL_WHITESPACE = frozenset(" \t\n\r\f\v")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Zs"})


def unicode_problem(sql: str) -> str | None:
    """Why ``sql`` is refused as text, or ``None``.

    Refused: control and format characters (zero-width space, joiners, bidi marks, BOM:
    Unicode categories Cc/Cf) other than SQL whitespace, private-use, unassigned,
    separator and non-ASCII space characters; text that NFKC normalization would change
    (fullwidth letters, ligatures, compatibility forms); and any non-ASCII character
    outside a single-quoted string literal (homoglyph identifiers and keywords).
    The check never rewrites the text: what is judged is exactly what would run.
    """
    if sql.isascii():
        match = _ASCII_CONTROL.search(sql)
        return None if match is None else f"control character U+{ord(match.group()):04X}"
    for ch in sql:
        if ch in _SQL_WHITESPACE:
            continue
        category = unicodedata.category(ch)
        if category in _INVISIBLE_CATEGORIES:
            return f"invisible, control or non-ASCII space character U+{ord(ch):04X} ({category})"
    if unicodedata.normalize("NFKC", sql) != sql:
        return "text is not NFKC-normalized (compatibility or fullwidth characters)"
    if not _STRING_LITERAL.sub("", sql).isascii():
        return "non-ASCII characters outside string literals (homoglyphs?)"
    return None


# -- cost estimate ------------------------------------------------------------------------------

_HUGE = 1e18


def estimate_plan_cost(plan: Sequence[tuple[Any, ...]], rows_of: Mapping[str, int],
                       default_rows: int) -> float:
    """Rows visited, estimated from ``EXPLAIN QUERY PLAN`` rows ``(id, parent, _, detail)``.

    Loops listed one after another under one parent are nested (a join): their row
    counts multiply. ``SCAN t`` visits every row of ``t`` (``rows_of`` by table name; an
    alias or another name counts ``default_rows``); ``SEARCH`` by rowid visits one row,
    by an index with ``=`` a few, by a range a quarter of the table; a materialized
    subquery or CTE counts the rows its own loops produce; a correlated subquery runs
    once per row of the loops around it; a recursive step runs ``default_rows`` times
    (the engine's VM budget is its real bound). Only an estimate: it exists to stop
    cross joins before they run.

    >>> plan = [(2, 0, 0, "SCAN a"), (4, 0, 0, "SCAN b")]
    >>> estimate_plan_cost(plan, {"a": 100, "b": 1000}, 1000)
    100100.0
    """
    flat = _flat_estimate(plan, rows_of, default_rows)
    if flat is not None:
        return flat
    children: dict[int, list[tuple[int, str]]] = {}
    for row in plan:
        children.setdefault(int(row[1]), []).append((int(row[0]), str(row[3])))
    produced: dict[str, float] = {}

    def loop_rows(detail: str) -> float:
        words = detail.split()
        name = words[1].lower() if len(words) > 1 else ""
        if detail.startswith("SCAN CONSTANT ROW"):
            return 1.0
        if detail.startswith("SEARCH") and "AUTOMATIC" not in detail:
            if "(rowid=?)" in detail:
                return 1.0
            table_rows = produced.get(name, rows_of.get(name, default_rows))
            return 10.0 if "=?" in detail else max(table_rows / 4.0, 1.0)
        if detail.startswith("SEARCH"):
            return 10.0
        if name in produced:
            return max(produced[name], 1.0)
        return float(rows_of.get(name, default_rows))

    def walk(parent: int, outer: float) -> tuple[float, float]:
        cost, loops, rows = 0.0, 0.0, 0.0
        for node, detail in children.get(parent, ()):
            if detail.startswith(("SCAN ", "SEARCH ")):
                loops = min(max(loops, 1.0) * loop_rows(detail), _HUGE)
                cost += outer * loops
                if "AUTOMATIC" in detail:  # the automatic index is built once
                    cost += rows_of.get(detail.split()[1].lower(), default_rows)
                cost += walk(node, outer * loops)[0]
            elif detail.startswith(("MATERIALIZE ", "CO-ROUTINE ")):
                name = detail.split()[1].lower()
                produced[name] = 1.0  # a recursive step scans its own queue one row at a time
                inner_cost, inner_rows = walk(node, 1.0)
                cost += inner_cost
                produced[name] = inner_rows
            elif detail.startswith("CORRELATED"):
                cost += walk(node, outer * max(loops, 1.0))[0]
            elif detail.startswith("RECURSIVE STEP"):
                cost += walk(node, outer * default_rows)[0]
                rows += default_rows
            elif detail.startswith(("SCALAR SUBQUERY", "LIST SUBQUERY", "USE TEMP")):
                cost += walk(node, outer)[0]
            else:  # SETUP, compound parts (rows add up), multi-index OR
                inner_cost, inner_rows = walk(node, outer)
                cost += inner_cost
                rows += inner_rows
        return min(cost, _HUGE), min(max(loops + rows, 1.0), _HUGE)

    return walk(0, 1.0)[0]


def _flat_estimate(plan: Sequence[tuple[Any, ...]], rows_of: Mapping[str, int],
                   default_rows: int) -> float | None:
    """The common case fast: one loop nest of plain scans and rowid searches."""
    cost, loops = 0.0, 1.0
    for row in plan:
        detail = row[3]
        if row[1] != 0:
            return None
        if detail.startswith("SCAN "):
            name = detail[5:].split(" ", 1)[0].lower()
            if name == "constant" or "VIRTUAL TABLE" in detail:
                return None
            loops *= rows_of.get(name, default_rows)
        elif detail.startswith("SEARCH ") and detail.endswith("USING INTEGER PRIMARY KEY (rowid=?)"):
            pass
        elif not detail.startswith("USE TEMP B-TREE"):
            return None
        cost += loops
    return min(cost, _HUGE)


# -- the shadow classifier ----------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    """What the shadow learnt about one statement.

    ``findings`` are ``(code, message)`` pairs in the order found; ``kind`` is
    ``select``/``insert``/``update``/``delete`` or ``None`` (did not compile or is of no
    kind the authorizer reports, such as ``VACUUM``).
    """

    kind: str | None = None
    reads: frozenset[tuple[str, str]] = frozenset()
    writes: frozenset[tuple[str, str]] = frozenset()
    functions: frozenset[str] = frozenset()
    estimate: float = 0.0
    findings: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reads": sorted(f"{t}.{c}" if c else t for t, c in self.reads),
            "writes": sorted(f"{t}.{c}" if c else t for t, c in self.writes),
            "functions": sorted(self.functions),
            "estimate": self.estimate,
        }


_ERROR_CODES = (
    ("no such table", "table_not_allowed"),
    ("no such column", "column_not_allowed"),
    ("no such function", "function_not_allowed"),
)


#: what compiling a statement reports when SQLite runs out of room for its program
_TOO_BIG_TO_COMPILE = "MemoryError: too big for SQLite to compile"


def _error_finding(message: str) -> tuple[str, str]:
    if message == _TOO_BIG_TO_COMPILE:  # valid SQL, but too large a program: not a syntax error
        return "too_long", "too big for SQLite to compile (its program passes SQLite's size limit)"
    lowered = message.lower()
    if "one statement at a time" in lowered:
        return "multiple_statements", "more than one statement"
    for marker, code in _ERROR_CODES:
        if marker in lowered:
            if code == "function_not_allowed":
                name = lowered.rsplit(":", 1)[-1].strip()
                if name in DANGEROUS_FUNCTIONS:
                    return "dangerous_function", f"dangerous function {name}()"
            return code, message
    return "syntax_error", f"does not compile: {message}"


def _refused_in_shadow(code: int, arg1: str | None) -> bool:
    """Actions the shadow's recorder refuses: those never allowed (some act while they
    are compiled, such as pragmas), and an UPDATE of SQLite's schema table, which a
    table-valued function (``pragma_table_info``) does to register itself: allowing it
    would make the shadow's answers depend on what it compiled before. (DDL's own
    INSERT/DELETE on ``sqlite_master`` pass, so that the DDL code itself is seen.)"""
    return code in NEVER_CODES or (code == _UPDATE and (arg1 or "").lower().startswith("sqlite_"))


def _never_finding(code: int, arg1: str | None, arg2: str | None) -> tuple[str, str]:
    name = code_name(code).upper()
    if code in _DML:
        return "table_not_allowed", f"{name} on SQLite's internal table {arg1}"
    if code in _TRIGGER_CODES:
        return "trigger", f"{name} {arg1 or ''}".strip()
    if code in _DDL_CODES:
        return "ddl", f"{name} {arg1 or ''}".strip()
    if code in _ATTACH_CODES:
        return "attach", f"{name} {arg1 or ''}".strip()
    if code == _PRAGMA:
        return "pragma", f"PRAGMA {arg1 or ''}".strip()
    return "transaction_control", f"{name} {arg1 or ''} {arg2 or ''}".strip()


class ShadowClassifier:
    """Classify statements by compiling them against an empty copy of the policy's schema.

    Thread-safe (one lock around the shadow connection); pure: the verdict on a text
    never depends on anything but the text and the policy.
    """

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        # cached_statements=0: a cached statement is not compiled again, so the
        # recording authorizer would see nothing on a repeat
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False,
                                     cached_statements=0)
        for statement in policy.shadow_ddl():
            self._conn.execute(statement)
        for limit, value in policy.limits.items():
            self._conn.setlimit(limit, value)
        self._layout = table_layout(self._conn, policy.tables)
        self._rows_of = {t.name: t.rows for t in policy.tables.values()}
        self._default_rows = max(self._rows_of.values(), default=1000)
        self._log: list[tuple[Any, ...]] = []
        self._refused: list[tuple[Any, ...]] = []
        self._read_memo: dict[tuple[Any, ...], tuple[tuple[str, str], tuple[str, str] | None]] = {}
        names = "|".join(sorted(re.escape(t) for t in policy.tables))
        self._alias = re.compile(rf"\b({names})\s+(?:as\s+)?([a-z_][a-z0-9_]*)")
        self._conn.set_authorizer(self._record)

    def _record(self, code: int, arg1: str | None, arg2: str | None, db: str | None,
                source: str | None) -> int:
        self._log.append((code, arg1, arg2, db, source))
        if code in _SHADOW_CHECKED and _refused_in_shadow(code, arg1):
            self._refused.append((code, arg1, arg2))
            return _DENY
        return _OK

    def _compile(self, sql: str) -> tuple[list[tuple[Any, ...]], str | None, list[tuple[Any, ...]],
                                          list[tuple[Any, ...]]]:
        """Plan rows, error (if any), the recorded authorizer calls and the refused ones."""
        with self._lock:
            self._log, self._refused = [], []
            try:
                plan = self._conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                error = None
            except MemoryError:  # CPython's sqlite3 maps SQLITE_NOMEM (past the VDBE-op limit) to it
                plan, error = [], _TOO_BIG_TO_COMPILE
            except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
                plan, error = [], str(exc) or type(exc).__name__
            return plan, error, self._log, self._refused

    def program_reads(self, sql: str) -> set[tuple[str, str]]:
        with self._lock:
            return program_reads(self._conn, sql, self._layout)

    def classify(self, sql: str) -> Classification:
        plan, error, log, refused = self._compile(sql)
        if not refused and error is None:
            return self._judge_log(sql, plan, log)
        findings = [_never_finding(code, a1, a2) for code, a1, a2 in refused]
        if error is not None and not (refused and "not authorized" in error.lower()):
            findings.append(_error_finding(error))
        return Classification(findings=tuple(dict.fromkeys(findings)))

    def _read_entry(self, table: str | None, column: str | None, db: str | None
                    ) -> tuple[tuple[str, str], tuple[str, str] | None]:
        hit = self._read_memo.get((table, column, db))
        if hit is None:
            denial = self.policy.read_denial(table, column, db)
            finding = None if denial is None else (_read_code(denial), denial)
            hit = (((table or "").lower(), (column or "").lower()), finding)
            if len(self._read_memo) < 4096:
                self._read_memo[(table, column, db)] = hit
        return hit

    def _judge_log(self, sql: str, plan: list[tuple[Any, ...]], log: list[tuple[Any, ...]]
                   ) -> Classification:
        policy = self.policy
        findings: list[tuple[str, str]] = []
        reads: set[tuple[str, str]] = set()
        writes: set[tuple[str, str]] = set()
        functions: set[str] = set()
        kinds: set[str] = set()
        selects = False
        for code, arg1, arg2, db, _source in log:
            if code == _READ:
                key, finding = self._read_entry(arg1, arg2, db)
                reads.add(key)
                if finding is not None:
                    findings.append(finding)
            elif code == _SELECT:
                selects = True
            elif code == _FUNCTION:
                name = (arg2 or "").lower()
                functions.add(name)
                if name not in policy.functions:
                    findings.append(("dangerous_function" if name in DANGEROUS_FUNCTIONS
                                     else "function_not_allowed", str(policy.function_denial(name))))
            elif code in _DML:
                kinds.add(_DML[code])
                writes.add(((arg1 or "").lower(), (arg2 or "").lower()))
                denial = policy.write_denial(code, arg1, arg2)
                if denial is not None:
                    findings.append(("statement_not_allowed" if "statements are not" in denial
                                     else "write_not_allowed", denial))
            elif code == _RECURSIVE and not policy.recursive:
                findings.append(("recursive_cte", "recursive CTEs are not allowed by this policy"))
        kind = _kind_of(kinds, selects)
        if kind is None:
            first = sql.strip().split(None, 1)[0].upper() if sql.strip() else "(empty)"
            findings.append(("unknown_statement", f"statement of no allowed kind ({first[:20]})"))
        if needs_program_check(sql) and not any(c == "pii_read" for c, _ in findings):
            hidden = {(t, c) for t, c in self.program_reads(sql) if c in policy.tables[t].pii}
            for table, column in sorted(hidden):
                reads.add((table, column))
                findings.append(("pii_read", f"reads personal data {table}.{column} (USING/NATURAL join)"))
        estimate = self._estimate(sql, plan) if plan else 0.0
        return Classification(kind, frozenset(reads), frozenset(writes), frozenset(functions),
                              estimate, tuple(dict.fromkeys(findings)))

    def _estimate(self, sql: str, plan: list[tuple[Any, ...]]) -> float:
        rows_of = self._rows_of
        names = {str(row[3]).split(" ", 2)[1].lower() for row in plan
                 if str(row[3]).startswith(("SCAN ", "SEARCH "))}
        if not names <= rows_of.keys():  # aliases: "SCAN o" for "orders AS o"
            rows_of = {**rows_of, **{alias: self._rows_of[table]
                                     for table, alias in self._alias.findall(sql.lower())
                                     if alias not in _NOT_ALIASES}}
        return estimate_plan_cost(plan, rows_of, self._default_rows)

    def engine_denials(self, sql: str) -> list[str]:
        """What the engine authorizer would refuse in ``sql`` (every reason, in order)."""
        reasons: list[str] = []
        _plan, error, log, _refused = self._compile(sql)
        for code, arg1, arg2, db, source in log:
            denial = self.policy.engine_denial(code, arg1, arg2, db, source, in_statement=True)
            if denial is not None:
                reasons.append(denial)
        if error is None and needs_program_check(sql):
            for table, column in sorted(self.program_reads(sql)):
                if column in self.policy.tables[table].pii:
                    reasons.append(f"reads personal data {table}.{column} (USING/NATURAL join)")
        return list(dict.fromkeys(reasons))

    def close(self) -> None:
        self._conn.close()


def _read_code(denial: str) -> str:
    if denial.startswith("reads personal data"):
        return "pii_read"
    if denial.startswith("table"):
        return "table_not_allowed"
    return "column_not_allowed"


def _kind_of(kinds: set[str], selects: bool) -> str | None:
    for kind in ("delete", "insert", "update"):  # an upsert reports INSERT and UPDATE
        if kind in kinds:
            return kind
    return "select" if selects else None


# -- the engine guard ---------------------------------------------------------------------------


class SQLEngineGuard:
    """The policy enforced inside SQLite on a world's connection (the world's guard seam).

    ``install(conn)`` (called by the world after every restore) sets the ``sqlite3``
    limits of the policy (no ``ATTACH`` at all), takes over the progress handler (the VM
    budget; ``instructions`` counts the VM steps it saw, in units of ``tick``: 1,000 by
    default, so the world's ``vm_instructions`` is rounded down to a multiple of it) and
    sets an authorizer compiled from the policy: reads of allow-listed, non-personal
    columns; writes the policy permits; allow-listed functions; everything else refused.
    Its answers are memoized per (action, names, window). Between ``before(sql)`` and
    ``after()`` (the agent's statement) nothing else passes; outside it, the world's own
    savepoint and ``PRAGMA database_list`` also do.

    The row-change cap (each table's ``max_rows_changed``): ``after()`` returns a
    ``"not authorized: row-change cap exceeded ..."`` message when ``conn.total_changes``
    grew by more than the cap of the table the statement writes (learnt from the
    authorizer when the statement was compiled); the world then rolls the statement back
    and reports it as denied. With ``triggers=True`` the guard also creates temporary
    ``BEFORE INSERT/UPDATE/DELETE`` triggers that abort the statement inside SQLite as soon
    as it changes one row too many (``RAISE(ABORT, 'not authorized: ...')``): enforcement
    that does not depend on the world honouring ``after()``, for about 0.2 ms per episode
    with writes (the triggers exist only for the writes the policy permits, are created by
    ``before`` for the first statement whose text can change rows, and live in the
    ``temp`` schema, outside the world's database image).

    The episode's row-change cap (``max_rows_changed_per_episode``, if set): the guard
    counts the rows changed by the statements that stayed since ``install`` (each reset)
    in ``episode_changed``; ``after()`` refuses a statement that would take the count past
    the cap (``"not authorized: episode row-change cap exceeded ..."``), and the triggers,
    if on, abort it at the first row too many. A world that calls the optional
    ``settled(kept)`` after the statement's savepoint ends (the SQL world does) takes a
    failed statement's rows back out of the count; without it they stay counted (the
    safe side). ``cap_hit`` says which cap stopped the last statement: ``"statement"``,
    ``"episode"`` or ``None``.
    """

    def __init__(self, policy: CompiledPolicy, *, triggers: bool = False, tick: int = 1000) -> None:
        self.policy = policy
        self.triggers = triggers
        self.tick = tick
        self.instructions = 0
        self.installed = 0
        self.last_denials: list[str] = []
        self._conn: sqlite3.Connection | None = None
        self._schema: tuple[Any, ...] | None = None
        self._layout: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._other_tables: frozenset[str] = frozenset()
        self._trigger_sql: tuple[str, ...] = ()
        self._deadline = math.inf
        self._time_deadline = math.inf
        #: what stopped the last interrupted statement: ``"steps"`` or ``"time"``
        self.interrupted_by: str | None = None
        self._in_statement = False
        self._own_work = False
        self._changes_before = 0
        self._changed: dict[str, int] = {}
        self._statement_rows = 0  # rows the triggers saw in this statement, all tables
        #: rows changed this episode by statements that stayed (see the class docstring)
        self.episode_changed = 0
        self._counted = 0  # the last statement's share of episode_changed
        self.cap_hit: str | None = None
        # tables each statement text writes: the authorizer sees them only when the text is
        # compiled, and Python's statement cache compiles a repeated text once per connection
        # (until the authorizer is set again, which expires every prepared statement)
        self._written_by: dict[str, set[str]] = {}
        self._writing: set[str] = set()
        self._answers: dict[tuple[Any, ...], str | None] = {}

    def install(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._in_statement = False
        self._deadline = self._time_deadline = math.inf
        self.episode_changed = self._counted = 0  # a fresh connection: a new episode
        self.cap_hit = None
        self._own_work = True  # in case this guard's authorizer is already on ``conn``
        try:
            for limit, value in self.policy.limits.items():
                conn.setlimit(limit, value)
            # sorts and temporary tables in memory, not in files on disk; the database may
            # grow by 4x or 8 MiB, whichever is more, per connection (one per episode)
            conn.execute("PRAGMA temp_store = MEMORY")
            pages, page_size = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                                for name in ("page_count", "page_size"))
            growth = max(3 * pages, (8 << 20) // max(int(page_size), 512))
            conn.execute(f"PRAGMA max_page_count = {int(pages) + growth}")
            self._learn_schema(conn)
        finally:
            self._own_work = False
        if self._trigger_sql:
            conn.create_function(_ROW_FUNCTION, 1, self._row_changed)
        conn.set_progress_handler(self._tick, self.tick)
        conn.set_authorizer(self._authorize)
        self.installed += 1

    def _learn_schema(self, conn: sqlite3.Connection) -> None:
        """Table layout, other tables and trigger texts; recomputed only if the schema differs
        from the last connection's (the world restores the same snapshot every reset)."""
        schema = tuple(conn.execute("SELECT type, name, rootpage, sql FROM main.sqlite_master"))
        if schema == self._schema:
            return
        self._schema = schema
        self._answers = {}
        self._layout = table_layout(conn, self.policy.tables)
        names = {str(row[1]).lower() for row in schema}
        self._other_tables = frozenset(names - set(self.policy.tables))
        present = {str(row[1]).lower() for row in schema if row[0] == "table"}
        self._trigger_sql = tuple(self._trigger_statements(present)) if self.triggers else ()

    def _trigger_statements(self, present: set[str]) -> list[str]:
        statements = []
        for table in self.policy.tables.values():
            if table.name not in present:  # after() still caps the statement
                continue
            permitted = {"UPDATE": bool(table.update), "INSERT": table.insert, "DELETE": table.delete}
            episode_cap = self.policy.max_rows_changed_per_episode
            message = (f"not authorized: row-change cap exceeded (more than {table.max_rows_changed} "
                       f"rows of {table.name}" + ("" if episode_cap is None else
                       f" in one statement, or more than {episode_cap} rows in the episode") + ")")
            for op, allowed in permitted.items():
                if allowed and op.lower() in self.policy.statements:
                    statements.append(
                        f'CREATE TEMP TRIGGER IF NOT EXISTS "{_TRIGGER_PREFIX}{table.name}_{op.lower()}" '
                        f'BEFORE {op} ON main."{table.name}" '
                        f"WHEN {_ROW_FUNCTION}('{table.name}') > {int(table.max_rows_changed)} "
                        f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        return statements

    def _ensure_triggers(self, conn: sqlite3.Connection) -> None:
        """Create the cap triggers if they are missing (a rolled-back statement takes
        triggers created inside its savepoint with it)."""
        self._own_work = True
        try:
            live = conn.execute("SELECT count(*) FROM temp.sqlite_master WHERE type = 'trigger' "
                                f"AND substr(name, 1, {len(_TRIGGER_PREFIX)}) = '{_TRIGGER_PREFIX}'"
                                ).fetchone()[0]
            if live < len(self._trigger_sql):
                for statement in self._trigger_sql:
                    conn.execute(statement)
        finally:
            self._own_work = False

    def _row_changed(self, table: str) -> int:
        """The triggers' counter: this statement's rows of ``table`` so far, this one
        included; past every cap (``_OVER_EVERY_CAP``) once the episode's cap is broken."""
        count = self._changed.get(table, 0) + 1
        self._changed[table] = count
        self._statement_rows += 1
        episode_cap = self.policy.max_rows_changed_per_episode
        if episode_cap is not None and self.episode_changed + self._statement_rows > episode_cap:
            self.cap_hit = "episode"
            return _OVER_EVERY_CAP
        if count > self.policy.tables[table].max_rows_changed:
            self.cap_hit = "statement"
        return count

    def _tick(self) -> int:
        self.instructions += self.tick
        if self.instructions > self._deadline:
            self.interrupted_by = "steps"
            return 1
        if time.monotonic() > self._time_deadline:  # one VM step can be slow (LIKE, ||)
            self.interrupted_by = "time"
            return 1
        return 0

    def _authorize(self, code: int, arg1: str | None, arg2: str | None, db: str | None,
                   source: str | None) -> int:
        if self._own_work:
            return _OK
        key = (code, arg1, arg2, db, source, self._in_statement)
        denial: Any = self._answers.get(key, _UNKNOWN)
        if denial is _UNKNOWN:
            denial = self.policy.engine_denial(code, arg1, arg2, db, source, self._in_statement,
                                               self._other_tables)
            if len(self._answers) < 65_536:  # the answer depends only on the key and the schema
                self._answers[key] = denial
        if denial is None:
            if code in _DML and self._in_statement:
                self._writing.add((arg1 or "").lower())
            return _OK
        if self._in_statement:
            self.last_denials.append(denial)
        return _DENY

    def before(self, sql: str) -> None:
        """The agent's statement starts: arm the budget, count changes, check the program."""
        conn = self._conn
        self._in_statement = True
        self.last_denials = []
        self.interrupted_by = None
        self.cap_hit = None
        self._changed.clear()
        self._statement_rows = self._counted = 0
        writing = self._written_by.get(sql)
        if writing is None:
            if len(self._written_by) > 4096:
                # forget every text at once; setting the authorizer again expires each
                # statement Python still caches, so the next run of a forgotten text is
                # compiled (and its tables named) again, whatever the cache's size
                self._written_by.clear()
                if conn is not None:
                    conn.set_authorizer(self._authorize)
            writing = self._written_by[sql] = set()
        self._writing = writing
        if conn is None:
            self._deadline = self.instructions + self.policy.vm_steps
            self._time_deadline = time.monotonic() + self.policy.seconds
            return
        lowered = sql.lower()
        if self._trigger_sql and any(word in lowered for word in _ROW_CHANGING_WORDS):
            self._ensure_triggers(conn)
        self._changes_before = conn.total_changes
        self._deadline = self.instructions + self.policy.vm_steps
        self._time_deadline = time.monotonic() + self.policy.seconds
        if "using" in lowered or "natural" in lowered:  # see needs_program_check
            self._check_program(conn, sql)

    def _check_program(self, conn: sqlite3.Connection, sql: str) -> None:
        try:
            reads = program_reads(conn, sql, self._layout)
        except (sqlite3.Error, sqlite3.Warning) as exc:
            if "not authorized" in str(exc).lower():
                raise
            return  # the statement itself will fail the same way
        for table, column in sorted(reads):
            if column in self.policy.tables[table].pii:
                message = f"not authorized: reads personal data {table}.{column} (USING/NATURAL join)"
                self.last_denials.append(message)
                raise sqlite3.DatabaseError(message)

    def after(self) -> str | None:
        """The statement ended. A message (``"not authorized: ..."``) if it broke the cap."""
        self._in_statement = False
        self._deadline = self._time_deadline = math.inf
        if self._conn is None:
            return None
        changed = self._conn.total_changes - self._changes_before
        if not changed:
            return None
        caps = [(t.max_rows_changed, t.name) for name in self._writing
                if (t := self.policy.tables.get(name)) is not None]
        cap, table = min(caps) if caps else (self.policy.max_rows_changed, "any table")
        if changed > cap:
            self.cap_hit = "statement"
            message = f"not authorized: row-change cap exceeded ({changed} > {cap} rows of {table})"
            self.last_denials.append(message)
            return message
        episode_cap = self.policy.max_rows_changed_per_episode
        if episode_cap is not None and self.episode_changed + changed > episode_cap:
            self.cap_hit = "episode"
            message = (f"not authorized: episode row-change cap exceeded ({self.episode_changed} "
                       f"rows changed earlier this episode + {changed} > {episode_cap})")
            self.last_denials.append(message)
            return message
        self.episode_changed += changed
        self._counted = changed
        return None

    def denies(self, error: str) -> bool:
        """Whether a statement's error is one of this guard's size limits ("string or
        blob too big", "database or disk is full"): a refusal, though not in the
        authorizer's words."""
        lowered = error.lower()
        return any(marker in lowered for marker in GUARD_LIMIT_MARKERS)

    def settled(self, kept: bool) -> None:
        """The statement's savepoint ended: ``kept`` is False if the world rolled the
        statement back (it failed, or ``after()`` refused it), so its rows never counted."""
        if not kept:
            self.episode_changed -= self._counted
        self._counted = 0
