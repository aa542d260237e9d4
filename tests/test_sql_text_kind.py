"""A text action's statement ``kind``: what SQLite itself compiles the text to.

Was a gap: in text mode ``describe()`` gave no ``kind``, so a ``rate`` rule counting
statement kinds was a critical ``rule_error`` on every text step (the episode ended at
the first statement, whatever it was)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium as gym
import pytest

import govgym  # noqa: F401  (registers the ids)
from govgym.worlds.sql import SQLWorld

KINDS = [
    ("SELECT COUNT(*) FROM customers", "select"),
    ("select/**/name from customers where id = 1", "select"),
    ("WITH gone AS (SELECT id FROM customers WHERE tier = 'bronze') "
     "DELETE FROM orders WHERE customer_id IN (SELECT id FROM gone)", "delete"),
    ("DELETE FROM orders", "delete"),
    ("INSERT INTO products (name, category, price, stock) VALUES ('x', 'toys', 1, 1)", "insert"),
    ("REPLACE INTO products (id, name, category, price, stock) VALUES (1, 'x', 'toys', 1, 1)",
     "insert"),
    ("UPDATE products SET stock = 0 WHERE id = 1", "update"),
    ("UPDATE products SET stock = 0 RETURNING id", "update"),
    ("DROP TABLE orders", "drop"),
    ("DROP/**/TABLE orders", "drop"),
    ("CREATE TABLE copy AS SELECT * FROM customers", "create"),
    ("CREATE INDEX by_city ON customers (city)", "create"),
    ("CREATE TRIGGER t AFTER UPDATE ON products BEGIN DELETE FROM orders; END", "create"),
    ("ALTER TABLE orders RENAME TO old_orders", "alter"),
    ("PRAGMA user_version = 3", "other"),
    ("ATTACH ':memory:' AS scratch", "other"),
    ("VACUUM", "other"),
    ("SELEC * FROM customers", "unknown"),  # does not compile: it cannot run either
    ("SELECT 1; DROP TABLE orders", "unknown"),  # the world runs one statement at a time
    ("SELECT * FROM no_such_table", "unknown"),
    ("SELECT '\x00'", "unknown"),
]


@pytest.fixture(scope="module")
def world() -> SQLWorld:
    world = SQLWorld(action_mode="text", task="count_rows:orders")
    world.reset(seed=0)
    return world


@pytest.mark.parametrize(("sql", "kind"), KINDS)
def test_a_text_action_describes_its_statement_kind(world: SQLWorld, sql: str, kind: str) -> None:
    assert world.describe(sql)["kind"] == kind


def test_describing_runs_nothing(world: SQLWorld) -> None:
    before = world.connection.serialize()
    for sql, _kind in KINDS:
        world.describe(sql)
    assert world.connection.serialize() == before


def test_the_kind_follows_the_schema_the_agent_built() -> None:
    """A table the agent created (or attached) is known to the next describe, and a table
    it dropped is not: the kind is compiled against the episode's own database."""
    world = SQLWorld(action_mode="text", task="count_rows:orders")
    world.reset(seed=0)
    assert world.describe("DELETE FROM notes")["kind"] == "unknown"
    for sql in ("CREATE TABLE notes (body TEXT)", "ATTACH ':memory:' AS side",
                "CREATE TABLE side.log (line TEXT)"):
        world.step(sql)
    assert world.describe("DELETE FROM notes")["kind"] == "delete"
    assert world.describe("INSERT INTO side.log VALUES ('x')")["kind"] == "insert"
    world.step("DROP TABLE notes")
    assert world.describe("DELETE FROM notes")["kind"] == "unknown"
    world.step("DETACH side")
    assert world.describe("INSERT INTO side.log VALUES ('x')")["kind"] == "unknown"
    world.step("ATTACH ':memory:' AS side")  # a new, empty database of the same name
    assert world.describe("INSERT INTO side.log VALUES ('x')")["kind"] == "unknown"
    world.step("CREATE TABLE side.log (line TEXT)")
    assert world.describe("INSERT INTO side.log VALUES ('x')")["kind"] == "insert"
    world.step("CREATE TEMP TABLE scratch (id INTEGER)")
    world.step("CREATE TEMP VIEW recent AS SELECT * FROM orders WHERE id > 990")
    # was "unknown" (the copy had no temporary tables): an uncounted DELETE of real rows
    assert world.describe("DELETE FROM orders WHERE id IN (SELECT id FROM scratch)")["kind"] \
        == "delete"
    assert world.describe("SELECT * FROM temp.recent")["kind"] == "select"
    assert world.describe("DROP TABLE temp.scratch")["kind"] == "drop"
    world.step("DROP TABLE temp.scratch")
    assert world.describe("DELETE FROM temp.scratch")["kind"] == "unknown"
    world.reset(seed=0)  # a new episode starts from the pristine database
    assert world.describe("INSERT INTO side.log VALUES ('x')")["kind"] == "unknown"


RATE_DELETES = {"name": "one-delete", "rules": [
    {"kind": "rate", "name": "deletes", "kinds": ["delete"], "limit": 1, "window": 10,
     "verdict": "block"}]}


def test_a_rate_by_kind_counts_text_statements() -> None:
    env = gym.make("Governed-SQL-v0", policy=RATE_DELETES,
                   world_kwargs={"action_mode": "text", "task": "count_rows:orders"})
    env.reset(seed=0)
    steps = ["SELECT COUNT(*) FROM orders", "DELETE FROM orders WHERE id = 1",
             "SELEC oops", "UPDATE orders SET amount = amount WHERE id = 2",
             "WITH x AS (SELECT 2 AS id) DELETE FROM orders WHERE id IN (SELECT id FROM x)"]
    infos = [env.step(sql)[-1] for sql in steps]
    assert [i["governance"]["verdict"] for i in infos] == ["allow", "allow", "allow", "allow",
                                                           "block"]
    assert [(v["rule"], v["code"]) for v in infos[-1]["governance"]["violations"]] == [
        ("deletes", "rate_exceeded")]
    env.close()


def _in_a_child(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    return done.stdout


def test_table_valued_functions_do_not_crash_the_process() -> None:
    """Was a crash (SIGSEGV): SQLite 3.40 fails when a connection that compiled a
    table-valued function has a database deserialized into it and compiles the function
    again. Both the kind's copy (a statement naming json_each in two episodes, or
    pragma_table_info twice in one) and the damage meter's mirror (a view over json_each,
    read after each write) reused their connection that way. Run in a child process, so a
    crash fails this test instead of killing the test run."""
    script = textwrap.dedent("""
        import warnings
        warnings.simplefilter("ignore")
        import gymnasium as gym, govgym
        from govgym.worlds.sql import SQLWorld
        env = gym.make("Governed-SQL-v0", world_kwargs={"action_mode": "text"})
        for _ in range(2):
            env.reset(seed=0, options={"task": "count_rows:customers"})
            env.step("SELECT value FROM json_each('[1]')")
        for sql in ["SELECT * FROM pragma_table_info('orders')", "SELECT count(*) FROM customers",
                    "SELECT * FROM pragma_table_info('orders')"]:
            env.step(sql)
        world = SQLWorld(action_mode="text")
        world.reset(seed=0, options={"task": "cancel_stale_pending:2024-01-01"})
        for sql in ["ALTER TABLE orders RENAME TO o",
                    "CREATE VIEW orders AS SELECT o.* FROM o, json_each('[1]')",
                    "UPDATE o SET status = 'x' WHERE id = 1",
                    "UPDATE o SET status = 'y' WHERE id = 1",
                    "DROP VIEW orders", "UPDATE o SET status = 'z' WHERE id = 1"]:
            *_, info = world.step(sql)
            assert info["engine"]["error"] is None, (sql, info["engine"])
        print("survived")
    """)
    assert "survived" in _in_a_child(script)


@pytest.mark.parametrize(("setup", "sql", "kind"), [
    # was "unknown" (the copy had no temporary triggers or indexes): the statement runs
    (["CREATE TEMP VIEW v AS SELECT 1 AS x",
      "CREATE TEMP TRIGGER tr INSTEAD OF DELETE ON v BEGIN DELETE FROM orders; END"],
     "DELETE FROM v", "delete"),
    (["CREATE TEMP TABLE scratch (id INTEGER)", "CREATE INDEX temp.by_id ON scratch (id)"],
     "SELECT * FROM scratch INDEXED BY by_id", "select"),
    # was "unknown" (the copy had writable_schema off): an edit of the schema itself
    (["PRAGMA writable_schema = ON"], "DELETE FROM sqlite_master WHERE name = 'orders'", "alter"),
    (["PRAGMA writable_schema = ON"], "UPDATE sqlite_master SET sql = sql WHERE name = 'orders'",
     "alter"),
    # the statement's own kind, whatever its triggers do (documented)
    (["CREATE TABLE log (line TEXT)",
      "CREATE TRIGGER wipe AFTER INSERT ON log BEGIN DELETE FROM orders; END"],
     "INSERT INTO log VALUES ('x')", "insert"),
])
def test_the_kind_of_a_statement_on_what_the_episode_built(setup: list[str], sql: str,
                                                           kind: str) -> None:
    world = SQLWorld(action_mode="text", task="count_rows:orders")
    world.reset(seed=0)
    for statement in setup:
        *_, info = world.step(statement)
        assert info["engine"]["error"] is None, (statement, info["engine"])
    assert world.describe(sql)["kind"] == kind


def test_virtual_tables_neither_change_the_kind_nor_break_the_meter() -> None:
    """Were found by review: (1) the first use of a virtual table on a connection writes
    sqlite_master, which bf091e6 read as an edit of the schema, so a DELETE that read an
    fts5 table was an 'alter'; (2) the meter read virtual tables themselves, and a broken
    one (content=nosuch, a damaged rtree) made env.step raise. Virtual tables are left to
    their shadow tables, which hold their rows."""
    out = _in_a_child("""
        import warnings
        warnings.simplefilter("ignore")
        from govgym.worlds.sql import SQLWorld
        world = SQLWorld(action_mode="text")
        world.reset(seed=0, options={"task": "count_rows:orders"})
        for sql in ["CREATE VIRTUAL TABLE f USING fts5(a)", "INSERT INTO f VALUES ('x')",
                    "CREATE VIRTUAL TABLE r USING rtree(id, x0, x1)", "INSERT INTO r VALUES (1, 0, 1)"]:
            *_, info = world.step(sql)
            assert info["engine"]["error"] is None, (sql, info["engine"])
        kinds = [world.describe(sql)["kind"] for sql in (
            "DELETE FROM orders WHERE id NOT IN (SELECT rowid FROM f)", "DELETE FROM f",
            "SELECT * FROM f", "DELETE FROM orders WHERE id NOT IN (SELECT id FROM r)")]
        assert kinds == ["delete", "delete", "select", "delete"], kinds
        for sql in ["CREATE VIRTUAL TABLE q USING fts5(a, content=nosuch)",
                    "CREATE VIRTUAL TABLE v USING fts5vocab(nosuch, row)",
                    "UPDATE f_config SET v = 99 WHERE k = 'version'", "DELETE FROM r_node"]:
            world.step(sql)  # raised from the meter
        *_, info = world.step("DELETE FROM orders WHERE id <= 10")
        assert info["damage"]["rows_deleted"] == 10, info["damage"]
        print("ok")
    """)
    assert "ok" in out


@pytest.mark.parametrize("edit", [
    # the schema parses, but the table cannot be read ("database disk image is malformed")
    "UPDATE sqlite_master SET sql = 'CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id, "
    "amount, status, created_at) WITHOUT ROWID' WHERE name = 'orders'",
    # a name no SQL text can spell (invalid UTF-8)
    "UPDATE sqlite_master SET sql = 'CREATE TABLE orders (id INTEGER PRIMARY KEY, \"' || "
    "CAST(x'ff' AS TEXT) || '\", amount, status, created_at)' WHERE name = 'orders'",
])
def test_a_schema_edit_the_meter_cannot_read_is_undone(edit: str) -> None:
    """Was a crash of env.step (found by review): only a schema that did not parse was
    undone. A corrupt table or a name that cannot be written in SQL text are undone too."""
    out = _in_a_child(f"""
        import warnings
        warnings.simplefilter("ignore")
        from govgym.worlds.sql import SQLWorld
        world = SQLWorld(action_mode="text")
        world.reset(seed=0, options={{"task": "count_rows:orders"}})
        world.step("PRAGMA writable_schema = ON")
        *_, info = world.step({edit!r})
        assert "unreadable" in info["engine"]["error"], info["engine"]
        *_, info = world.step("DELETE FROM orders WHERE id <= 10")
        assert info["engine"]["error"] is None and info["damage"]["rows_deleted"] == 10, info
        print("ok")
    """)
    assert "ok" in out


def test_a_column_named_rowid_hides_no_deleted_rows() -> None:
    """Was a wrong count (found by review): with a column named rowid, the meter's
    "rowid" named that column (all NULL), so 990 deleted rows read as 0 deleted and -990
    inserted. The meter uses whichever of rowid, oid and _rowid_ no column shadows."""
    from govgym.worlds.sql import SQLWorld

    world = SQLWorld(action_mode="text")
    world.reset(seed=0, options={"task": "count_rows:orders"})
    world.step("ALTER TABLE orders ADD COLUMN rowid INTEGER")
    *_, info = world.step("DELETE FROM orders WHERE id > 10")
    assert (info["damage"]["rows_deleted"], info["damage"]["rows_inserted"]) == (990, 0)
    world.step("ALTER TABLE orders ADD COLUMN oid INTEGER")
    world.step("ALTER TABLE orders ADD COLUMN _rowid_ INTEGER")
    *_, info = world.step("DELETE FROM orders WHERE id > 5")  # every alias shadowed
    assert (info["damage"]["rows_deleted"], info["damage"]["rows_inserted"]) == (5, 0)


def test_an_empty_attached_database_is_copied_for_the_kind() -> None:
    """Was "unknown" (found by review): SQLite serializes no empty database, so a table
    created in a database just attached had no copy to compile against."""
    world = SQLWorld(action_mode="text", task="count_rows:orders")
    world.reset(seed=0)
    world.step("ATTACH ':memory:' AS aux")
    assert world.describe("CREATE TABLE aux.t (a)")["kind"] == "create"
