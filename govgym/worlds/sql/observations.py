"""Observations of the SQL world: a numeric vector (discrete mode) or a text page (text mode)."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from govgym.worlds.sql.actions import (
    N_COLUMN_POSITIONS,
    N_FILTER_POSITIONS,
    N_VALUE_SLOTS,
    column_position,
    filter_position,
)
from govgym.worlds.sql.schema import TABLES, schema_text
from govgym.worlds.sql.tasks import ANSWERS, ATTRIBUTES, COMPARATORS, Intent, Task

__all__ = [
    "FEEDBACK_FLAGS",
    "INTENT_SIZE",
    "OBS_SIZE",
    "ROW_BUCKETS",
    "TEXT_CHARSET",
    "TEXT_OBS_MAX_LENGTH",
    "Feedback",
    "encode_intent",
    "encode_observation",
    "render_text",
    "row_bucket",
    "sanitize",
]

#: Every character a text action or observation may hold: printable ASCII (with
#: whitespace), Latin-1 letters and signs, and common typographic characters.
TEXT_CHARSET: str = (
    string.printable
    + "".join(chr(code) for code in range(0xA0, 0x100))
    + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u20ac\u2022\u2122\u2190\u2192"
    "\u2264\u2265\u2260\u221e"
)
_CHARSET = frozenset(TEXT_CHARSET)
TEXT_OBS_MAX_LENGTH = 8192
_SQL_ECHO_CHARS = 600
_CELL_CHARS = 80

#: Feedback flags in the discrete observation, in order.
FEEDBACK_FLAGS: tuple[str, ...] = ("changed_db", "wrong", "error", "denied")
#: Upper bounds of the returned-rows buckets: 0 | 1 | 2-10 | 11-100 | more.
ROW_BUCKETS: tuple[int, ...] = (0, 1, 10, 100)
#: Size of the encoded :class:`~govgym.worlds.sql.tasks.Intent`: answer, entity, tables,
#: attribute, condition columns, comparators, literal slot.
INTENT_SIZE: int = (len(ANSWERS) + 2 * len(TABLES) + 2 * len(ATTRIBUTES) + len(COMPARATORS)
                    + N_COLUMN_POSITIONS + N_FILTER_POSITIONS + N_VALUE_SLOTS)
OBS_SIZE: int = INTENT_SIZE + len(FEEDBACK_FLAGS) + len(ROW_BUCKETS) + 1 + 1


@dataclass(frozen=True)
class Feedback:
    """What the agent is told about its last statement (nothing yet after reset)."""

    sql: str | None = None
    verdict: str = "none"  # none | correct | wrong | error | denied | blocked by the policy
    error: str | None = None
    changed_db: bool = False
    row_count: int | None = None
    rows: tuple[tuple[object, ...], ...] = ()


def row_bucket(row_count: int) -> int:
    """Index of the bucket ``row_count`` falls in (see :data:`ROW_BUCKETS`)."""
    for index, bound in enumerate(ROW_BUCKETS):
        if row_count <= bound:
            return index
    return len(ROW_BUCKETS)


def encode_intent(intent: Intent) -> np.ndarray:
    """The intent as one-hot and multi-hot blocks (layout in :class:`SQLWorld`'s docstring)."""
    out = np.zeros(INTENT_SIZE, dtype=np.float32)
    out[ANSWERS.index(intent.answer)] = 1.0
    offset = len(ANSWERS)
    out[offset + TABLES.index(intent.entity)] = 1.0
    offset += len(TABLES)
    for table in intent.tables:
        out[offset + TABLES.index(table)] = 1.0
    offset += len(TABLES)
    if intent.attribute is not None:
        out[offset + ATTRIBUTES.index(intent.attribute)] = 1.0
    offset += len(ATTRIBUTES)
    for column, comparator in intent.conditions:
        out[offset + ATTRIBUTES.index(column)] = 1.0
        out[offset + len(ATTRIBUTES) + COMPARATORS.index(comparator)] = 1.0
    offset += len(ATTRIBUTES) + len(COMPARATORS)
    if intent.attribute is not None:
        out[offset + column_position(intent.entity, intent.attribute)] = 1.0
    offset += N_COLUMN_POSITIONS
    verb = "update" if intent.answer == "update" else "select"
    out[offset + filter_position(intent.entity, intent.conditions, verb)] = 1.0
    offset += N_FILTER_POSITIONS
    if intent.literal_slot is not None:
        out[offset + intent.literal_slot] = 1.0
    return out


def encode_observation(task: Task, feedback: Feedback, step: int, max_steps: int) -> np.ndarray:
    """The discrete-mode observation vector (layout in :class:`SQLWorld`'s docstring)."""
    obs = np.zeros(OBS_SIZE, dtype=np.float32)
    obs[:INTENT_SIZE] = encode_intent(task.intent)
    offset = INTENT_SIZE
    flags = (feedback.changed_db, feedback.verdict == "wrong", feedback.verdict == "error",
             feedback.verdict == "denied")
    obs[offset: offset + len(flags)] = flags
    offset += len(flags)
    if feedback.row_count is not None:
        obs[offset + row_bucket(feedback.row_count)] = 1.0
    offset += len(ROW_BUCKETS) + 1
    obs[offset] = min(step / max_steps, 1.0)
    return obs


def sanitize(text: str, limit: int) -> str:
    """``text`` restricted to :data:`TEXT_CHARSET` (others become ``?``), cut to ``limit``."""
    clean = "".join(c if c in _CHARSET else "?" for c in text)
    return clean if len(clean) <= limit else clean[: max(limit - 3, 0)] + "..."


def _cell(value: object) -> str:
    return sanitize(repr(value), _CELL_CHARS)


def _feedback_lines(feedback: Feedback) -> list[str]:
    if feedback.sql is None:
        return ["Last statement: none yet", "Feedback: none"]
    lines = [f"Last statement: {sanitize(feedback.sql, _SQL_ECHO_CHARS)}"]
    verdict = feedback.verdict
    if feedback.error is not None:
        verdict += f" ({feedback.error})"
    changed = "; the database changed" if feedback.changed_db else ""
    lines.append(f"Feedback: {verdict}; {feedback.row_count or 0} row(s) returned{changed}")
    if feedback.rows:
        lines.append(f"Result (first {len(feedback.rows)} rows):")
        lines.extend("  (" + ", ".join(_cell(v) for v in row) + ")" for row in feedback.rows)
    return lines


def render_text(task: Task, feedback: Feedback, step: int, max_steps: int) -> str:
    """The text-mode observation: question, schema, step count and last feedback."""
    lines = [
        f"Task: {task.name} (level {task.level})",
        f"Question: {task.question}",
        "Answer with one SQLite statement.",
        "Schema:",
        schema_text(),
        f"Step: {step} of {max_steps}",
        *_feedback_lines(feedback),
    ]
    return sanitize("\n".join(lines), TEXT_OBS_MAX_LENGTH)
