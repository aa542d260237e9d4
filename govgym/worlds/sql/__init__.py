"""The SQL world: an ungoverned Gymnasium environment on a real SQLite database.

See :class:`SQLWorld` for the documentation page.
"""

from govgym.worlds.sql.actions import ACTION_DIMS, compose_sql, decode_action, make_action
from govgym.worlds.sql.damage import DAMAGE_COUNTS, count_pii_cells, zero_damage
from govgym.worlds.sql.engine import EngineGuard, Execution, is_denial
from govgym.worlds.sql.tasks import TASK_LEVELS, TASKS, TEMPLATES, Task, find_tasks, results_match
from govgym.worlds.sql.world import ACTION_MODES, SQLWorld

__all__ = [
    "ACTION_DIMS",
    "ACTION_MODES",
    "DAMAGE_COUNTS",
    "TASKS",
    "TASK_LEVELS",
    "TEMPLATES",
    "EngineGuard",
    "Execution",
    "SQLWorld",
    "Task",
    "compose_sql",
    "count_pii_cells",
    "decode_action",
    "find_tasks",
    "is_denial",
    "make_action",
    "results_match",
    "zero_damage",
]
