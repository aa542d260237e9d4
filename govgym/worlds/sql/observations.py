"""Observations of the SQL world: a numeric vector (discrete mode) or a text page (text mode)."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from govgym.worlds.sql.schema import schema_text
from govgym.worlds.sql.tasks import MAX_PARAMS, TASK_LEVELS, TEMPLATES, Task

__all__ = [
    "FEEDBACK_FLAGS",
    "OBS_SIZE",
    "ROW_BUCKETS",
    "TEXT_CHARSET",
    "TEXT_OBS_MAX_LENGTH",
    "Feedback",
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
OBS_SIZE: int = (len(TEMPLATES) + len(TASK_LEVELS) + MAX_PARAMS + len(FEEDBACK_FLAGS)
                 + len(ROW_BUCKETS) + 1 + 1)


@dataclass(frozen=True)
class Feedback:
    """What the agent is told about its last statement (nothing yet after reset)."""

    sql: str | None = None
    verdict: str = "none"  # none | correct | wrong | error | denied
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


def encode_observation(task: Task, feedback: Feedback, step: int, max_steps: int) -> np.ndarray:
    """The discrete-mode observation vector (layout in :class:`SQLWorld`'s docstring)."""
    obs = np.zeros(OBS_SIZE, dtype=np.float32)
    offset = 0
    obs[offset + TEMPLATES.index(task.template)] = 1.0
    offset += len(TEMPLATES)
    obs[offset + TASK_LEVELS.index(task.level)] = 1.0
    offset += len(TASK_LEVELS)
    obs[offset + task.param_index] = 1.0
    offset += MAX_PARAMS
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
