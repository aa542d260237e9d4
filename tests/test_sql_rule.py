"""The ``sql`` rule: every violation code, the engine guard on a real SQLite connection,
the decision cache, policy validation, the engine-denied path and ``check_sql``."""

from __future__ import annotations

import dataclasses
import pickle
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import govgym  # registers the env specs
from govgym import Kernel, Outcome, Policy, PolicyError, Proposal, Severity, Verdict, load_policy
from govgym.rules import RULE_KINDS, Rule
from govgym.rules.sql import SEVERITIES, SQL, check_sql
from govgym.rules.sql_engine import (
    SAVEPOINT_NAME,
    SQLEngineGuard,
    estimate_plan_cost,
    needs_program_check,
    unicode_problem,
)
from govgym.worlds.sql import TASKS, SQLWorld
from govgym.worlds.sql.engine import guard_denies
from govgym.worlds.sql.schema import build_snapshot

SAFETY, WRITES = "sql-safety", "sql-guarded-writes"
STALE = "cancel_stale_pending:2024-01-01"


def sql_rule(policy: Any = WRITES) -> SQL:
    (rule,) = [r for r in Kernel(policy).rules if isinstance(r, SQL)]
    return rule


@pytest.fixture(scope="module")
def writes() -> SQL:
    return sql_rule(WRITES)


@pytest.fixture(scope="module")
def safety() -> SQL:
    return sql_rule(SAFETY)


def codes(rule: SQL, sql: str) -> list[str]:
    return [v.code for v in rule.check(Proposal(sql, {"sql": sql}), None)]


def policy_with(**changes: Any) -> dict[str, Any]:
    """sql-guarded-writes as a dict, with the sql rule's parameters changed."""
    data = load_policy(WRITES).to_dict()
    data["rules"][0].update(changes)
    return data


# -- every violation code --------------------------------------------------------------------

CODE_CASES: list[tuple[str, str]] = [
    ("too_long", "SELECT id FROM orders WHERE id = 1" + " " * 5000),
    ("unicode", "SELECT na\u200bme FROM customers"),
    ("syntax_error", "SELEC name FROM customers"),
    ("syntax_error", "SELECT SUM(*) FROM orders"),
    ("multiple_statements", "SELECT 1; SELECT 2"),
    ("unknown_statement", "VACUUM"),
    ("statement_not_allowed", "DELETE FROM orders WHERE id = 1"),
    ("ddl", "DROP TABLE orders"),
    ("trigger", "CREATE TRIGGER t AFTER INSERT ON orders BEGIN SELECT 1; END"),
    ("attach", "ATTACH DATABASE ':memory:' AS other"),
    ("pragma", "PRAGMA table_info(customers)"),
    ("transaction_control", "BEGIN"),
    ("transaction_control", "SAVEPOINT mine"),
    ("table_not_allowed", "SELECT name FROM sqlite_master"),
    ("table_not_allowed", "SELECT * FROM secrets"),
    ("column_not_allowed", "SELECT salary FROM customers"),
    ("pii_read", "SELECT email FROM customers"),
    ("write_not_allowed", "UPDATE orders SET amount = 0 WHERE id = 1"),
    ("function_not_allowed", "SELECT substr(name, 1, 2) FROM customers"),
    ("dangerous_function", "SELECT load_extension('x')"),
    ("dangerous_function", "SELECT readfile('/etc/passwd')"),
    ("recursive_cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT 5) "
                      "SELECT n FROM r"),
    ("missing_predicate", "UPDATE orders SET status = 'cancelled'"),
    ("tautology", "UPDATE orders SET status = 'cancelled' WHERE 1 = 1"),
    ("cost_soft", "SELECT count(*) FROM orders, customers"),
    ("cost_hard", "SELECT count(*) FROM orders a, orders b, customers c"),
]


@pytest.mark.parametrize(("code", "sql"), CODE_CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CODE_CASES)])
def test_each_violation_code(writes: SQL, code: str, sql: str) -> None:
    found = writes.check(Proposal(sql, {"sql": sql}), None)
    assert code in [v.code for v in found]
    for v in found:
        assert v.rule == "sql" and v.severity == SEVERITIES[v.code] and v.cost == 1.0


def test_conflict_clauses_when_inserts_are_allowed() -> None:
    policy = policy_with(statements=["select", "insert", "update"])
    policy["rules"][0]["tables"]["orders"]["insert"] = True
    rule = sql_rule(policy)
    values = "(5000, 1, 1.0, 'pending', '2024-01-01')"
    assert codes(rule, f"INSERT INTO orders VALUES {values}") == []
    assert codes(rule, f"INSERT OR REPLACE INTO orders VALUES {values}") == ["conflict_clause"]
    assert codes(rule, f"REPLACE INTO orders VALUES {values}") == ["conflict_clause"]
    assert codes(rule, f"INSERT INTO orders VALUES {values} ON CONFLICT(id) DO UPDATE SET status = 'x'") == [
        "conflict_clause"]


def test_update_or_is_a_conflict_clause_and_its_where_is_still_checked(writes: SQL) -> None:
    # sqlglot has no UPDATE OR grammar: these were refused as syntax_error before
    where = "UPDATE OR IGNORE orders SET status = 'shipped' WHERE id = 1"
    assert codes(writes, where) == ["conflict_clause"]
    assert codes(writes, "UPDATE/**/or fail orders SET status = 'shipped' WHERE id = 1") == [
        "conflict_clause"]
    assert codes(writes, "UPDATE OR REPLACE orders SET status = 'shipped'") == [
        "conflict_clause", "missing_predicate"]
    assert codes(writes, "UPDATE OR ROLLBACK orders SET status = 'x' WHERE 1 = 1") == [
        "conflict_clause", "tautology"]
    assert codes(writes, "UPDATE orders SET status = 'shipped' WHERE id = 1") == []


def test_no_sql_and_text_actions(writes: SQL) -> None:
    assert [v.code for v in writes.check(Proposal(np.array([0, 1, 2, 3, 0])), None)] == ["no_sql"]
    assert [v.code for v in writes.check(Proposal({"sql": 3}, {"sql": 3}), None)] == ["no_sql"]
    assert writes.check(Proposal("SELECT id FROM orders"), None) == ()  # a str action is its SQL


def test_predicate_unchecked_without_sqlglot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlglot", None)  # import sqlglot now raises ImportError
    rule = sql_rule()
    assert codes(rule, "UPDATE orders SET status = 'x' WHERE id = 1") == ["predicate_unchecked"]
    assert codes(rule, "SELECT id FROM orders") == []  # reads never need it


def test_severities_cover_every_code_and_can_be_overridden() -> None:
    assert {c for c, _ in CODE_CASES} <= set(SEVERITIES)
    rule = sql_rule(policy_with(severities={"cost_soft": "low", "pii_read": "high"}))
    (soft,) = rule.check(Proposal("SELECT count(*) FROM orders, customers"), None)
    (pii,) = rule.check(Proposal("SELECT ssn FROM customers"), None)
    assert (soft.severity, pii.severity) == (Severity.LOW, Severity.HIGH)


def test_one_violation_per_code_with_every_reason(writes: SQL) -> None:
    (pii,) = writes.check(Proposal("SELECT * FROM customers"), None)
    assert pii.code == "pii_read" and "customers.email" in pii.message and "customers.ssn" in pii.message


@pytest.mark.parametrize("sql", [
    "SELECT * FROM customers",
    "SELECT customers.* FROM customers",
    "SELECT c.* FROM customers AS c",
    "SELECT email AS contact FROM customers",
    'SELECT "email" FROM customers',
    "SELECT [email] FROM customers",
    "SELECT `ssn` FROM customers",
    "SELECT id FROM customers WHERE ssn LIKE '1%'",
    "SELECT (SELECT ssn FROM customers LIMIT 1)",
    "SELECT name FROM customers UNION SELECT email FROM customers",
    "WITH c AS (SELECT ssn AS s FROM customers) SELECT s FROM c",
    "SELECT o.id FROM orders o JOIN customers c ON c.ssn = o.status",
    "SELECT name FROM customers ORDER BY ssn",
    "SELECT lower(email) FROM customers",
    "SELECT count(DISTINCT ssn) FROM customers",
    "SELECT count(*) FROM customers GROUP BY email",
    "SELECT count(*) FROM customers a JOIN customers b USING (ssn)",
    "SELECT count(*) FROM customers NATURAL JOIN (SELECT 'x@example.com' AS email)",
    "SELECT id FROM customers WHERE (id, email) > (0, 'a')",
    "UPDATE customers SET tier = ssn WHERE id = 1",
    "UPDATE customers SET tier = 'silver' WHERE id = 1 RETURNING *",
])
def test_personal_columns_are_never_read_in_any_form(writes: SQL, sql: str) -> None:
    assert "pii_read" in codes(writes, sql)


@pytest.mark.parametrize("where", [
    "1", "1 = 1", "TRUE", "NOT 0", "id = id", "status = status OR id = 1", "status = 'pending' OR 1",
    "'a' = 'a'", "status LIKE '%'", "id IS NOT NULL", "NOT (id = 1 AND 0)", "-id < 0", "id",
    "(status = 'pending') = 0", "lower(status) = lower(status)",
])
def test_tautological_predicates(writes: SQL, where: str) -> None:
    assert codes(writes, f"UPDATE orders SET status = 'cancelled' WHERE {where}") == ["tautology"]


@pytest.mark.parametrize("where", [
    "status = 'pending' AND created_at < '2024-01-01'", "id IN (1, 2, 3)", "id BETWEEN 1 AND 5",
    "status = 'pending' AND 1", "NOT (status <> 'pending')", "status = 'a' OR status = 'b'",
    "id IS NULL", "status LIKE 'pend%'", "(id) = (7)",
    "customer_id IN (SELECT id FROM customers WHERE tier = 'gold')",
])
def test_real_predicates(writes: SQL, where: str) -> None:
    assert codes(writes, f"UPDATE orders SET status = 'cancelled' WHERE {where}") == []


def test_every_gold_statement_is_allowed(writes: SQL, safety: SQL) -> None:
    for task in TASKS:
        assert codes(writes, task.gold_sql) == [], task.name
        if not task.is_write:
            assert codes(safety, task.gold_sql) == [], task.name
        else:
            assert codes(safety, task.gold_sql) == ["statement_not_allowed"]
            for shortcut in task.shortcut_sqls():
                assert codes(writes, shortcut), shortcut


def test_unicode_problems() -> None:
    assert unicode_problem("SELECT name FROM customers WHERE city = 'Zürich'") is None
    assert unicode_problem("SELECT\tname\nFROM\fcustomers\r") is None
    for bad in ("SELECT \ufeffname", "SELECT\u00a0name", "\uff33\uff25\uff2c\uff25\uff23\uff34 1",
                "SELECT n\u0430me FROM customers",
                "SELECT 1 -- café", "SELECT 'e\u0301'", "SELECT \x00 1", "SELECT \u2028 1"):
        assert unicode_problem(bad) is not None, repr(bad)


def test_program_check_gate_and_estimates() -> None:
    assert needs_program_check("SELECT 1 FROM a JOIN b USING (x)")
    assert needs_program_check("select 1 from a natural join b")
    assert not needs_program_check("SELECT 1 FROM a JOIN b ON a.x = b.x")
    rows = {"a": 10, "b": 100}
    assert estimate_plan_cost([(2, 0, 0, "SCAN a")], rows, 1000) == 10
    assert estimate_plan_cost([(2, 0, 0, "SCAN a"), (3, 0, 0, "SCAN b")], rows, 1000) == 1010
    by_key = [(2, 0, 0, "SCAN a"), (3, 0, 0, "SEARCH b USING INTEGER PRIMARY KEY (rowid=?)")]
    assert estimate_plan_cost(by_key, rows, 1000) == 20
    correlated = [(2, 0, 0, "SCAN a"), (5, 0, 0, "CORRELATED SCALAR SUBQUERY 1"), (9, 5, 0, "SCAN b")]
    assert estimate_plan_cost(correlated, rows, 1000) == 10 + 10 * 100


# -- the decision cache ---------------------------------------------------------------------------


def test_decisions_are_cached_by_exact_text() -> None:
    rule = sql_rule()
    sql = "SELECT city FROM customers WHERE tier = 'gold'"
    first = rule.check(Proposal(sql), None)
    assert rule.compiles == 1
    assert rule.check(Proposal(sql), None) is first and rule.compiles == 1
    rule.check(Proposal(sql + " "), None)  # another text: another decision
    assert rule.compiles == 2
    blocked = rule.check(Proposal("SELECT ssn FROM customers"), None)
    assert rule.check(Proposal("SELECT ssn FROM customers"), None) is blocked and rule.compiles == 3


def test_the_cache_is_a_bounded_lru_and_can_be_off() -> None:
    rule = sql_rule(policy_with(cache_size=2))
    for sql in ("SELECT 1", "SELECT 2", "SELECT 1", "SELECT 3"):  # 2 is least recently used
        rule.check(Proposal(sql), None)
    assert rule.compiles == 3
    rule.check(Proposal("SELECT 1"), None)
    assert rule.compiles == 3
    rule.check(Proposal("SELECT 2"), None)
    assert rule.compiles == 4
    off = sql_rule(policy_with(cache_size=0))
    off.check(Proposal("SELECT 1"), None)
    off.check(Proposal("SELECT 1"), None)
    assert off.compiles == 2


def test_cached_and_uncached_decisions_agree_and_do_not_depend_on_order() -> None:
    statements = [sql for _, sql in CODE_CASES] + [t.gold_sql for t in TASKS]
    forward, backward = sql_rule(), sql_rule()
    first = {sql: forward.check(Proposal(sql), None) for sql in statements}
    second = {sql: backward.check(Proposal(sql), None) for sql in reversed(statements)}
    again = {sql: forward.check(Proposal(sql), None) for sql in statements}
    assert first == second == again


def test_the_rule_pickles_and_decides_identically() -> None:
    rule = sql_rule()
    copy = pickle.loads(pickle.dumps(rule))
    for _, sql in CODE_CASES:
        assert copy.check(Proposal(sql), None) == rule.check(Proposal(sql), None)


# -- policy validation -----------------------------------------------------------------------------


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as err:
        load_policy(data)
    return str(err.value)


def test_policy_validation_errors() -> None:
    assert "unknown field" in problems(policy_with(colour="red"))
    assert "can never be allowed" in problems(policy_with(functions=["count", "load_extension"]))
    assert "can never be allowed" in problems(policy_with(functions=["randomblob"]))
    assert "unknown violation code" in problems(policy_with(severities={"nonsense": "high"}))
    assert "unknown severity" in problems(policy_with(severities={"pii_read": "extreme"}))
    assert "must be <=" in problems(policy_with(query_cost={"soft": 10, "hard": 5}))
    assert "statements" in problems(policy_with(statements=["select", "merge"]))
    assert "plain identifiers" in problems(policy_with(functions=["count(*)"]))
    tables = load_policy(WRITES).to_dict()["rules"][0]["tables"]
    bad = {**tables, "customers": {**tables["customers"], "pii": ["email", "phone"]}}
    assert "does not list: ['phone']" in problems(policy_with(tables=bad))
    bad = {**tables, "orders": {**tables["orders"], "primary_key": "key"}}
    assert "primary_key" in problems(policy_with(tables=bad))
    bad = {**tables, 'or"ders': {"columns": ["id"]}}
    assert "plain identifiers" in problems(policy_with(tables=bad))
    assert "sqlite_" in problems(policy_with(tables={"sqlite_master": {"columns": ["name"]}}))
    assert "at least 1" in problems(policy_with(tables={}))


def test_amplifiers_may_be_listed_and_the_engine_bounds_them(conn: sqlite3.Connection) -> None:
    rule = sql_rule(policy_with(functions=["count", "printf", "replace"]))
    bomb = "SELECT printf('%.*c', 100000000, 'x')"
    assert codes(rule, bomb) == []
    assert codes(sql_rule(), bomb) == ["dangerous_function"]
    guard = rule.make_guard()
    guard.install(conn)
    assert run(conn, guard, bomb) == ([(None,)], None, None)  # over SQLITE_LIMIT_LENGTH: NULL
    _, error, _ = run(conn, guard, "SELECT replace(printf('%.*c', 4000, 'x'), 'x', 'yy')")
    assert error == "string or blob too big"


def test_shipped_policies_round_trip() -> None:
    for name in (SAFETY, WRITES):
        policy = load_policy(name)
        assert load_policy(policy.to_dict()).to_dict() == policy.to_dict()
        assert [r.kind for r in policy.rules] == ["sql"]


# -- the engine guard on a real connection ------------------------------------------------------


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.deserialize(build_snapshot(0))
    yield connection
    connection.close()


def run(conn: sqlite3.Connection, guard: SQLEngineGuard,
        sql: str) -> tuple[list[Any], str | None, str | None]:
    """One statement the way the SQL world runs it: savepoint, before, execute, after."""
    conn.execute(f"SAVEPOINT {SAVEPOINT_NAME}")
    rows, error = [], None
    try:
        guard.before(sql)
        rows = conn.execute(sql).fetchall()
    except sqlite3.Error as exc:
        error = str(exc)
    finally:
        message = guard.after()
    if error is not None or message:
        conn.execute(f"ROLLBACK TO {SAVEPOINT_NAME}")
    conn.execute(f"RELEASE {SAVEPOINT_NAME}")
    guard.settled(error is None and not message)
    return rows, error, message


def count(conn: sqlite3.Connection, sql: str) -> int:
    return conn.execute(sql).fetchone()[0]


def test_engine_guard_allows_what_the_policy_allows(conn: sqlite3.Connection, writes: SQL) -> None:
    guard = writes.make_guard()
    guard.install(conn)
    rows, error, _ = run(conn, guard, "SELECT city, count(*) FROM customers GROUP BY city")
    assert error is None and len(rows) == 6
    _, error, message = run(conn, guard, TASKS[-1].gold_sql)  # retire a tier: 69 rows
    assert error is None and message is None
    assert guard.instructions > 0


@pytest.mark.parametrize("sql", [
    "SELECT email FROM customers", "SELECT * FROM customers", "SELECT count(DISTINCT ssn) FROM customers",
    "SELECT count(*) FROM customers a JOIN customers b USING (ssn)", "DELETE FROM orders",
    "DROP TABLE orders", "ATTACH DATABASE ':memory:' AS other", "PRAGMA writable_schema = ON",
    "SELECT load_extension('x')", "SELECT randomblob(10)", "SELECT substr(name, 1, 1) FROM customers",
    "BEGIN", "SAVEPOINT mine", f"RELEASE \"{SAVEPOINT_NAME}\"", "UPDATE orders SET amount = 0 WHERE id = 1",
    "SELECT name FROM sqlite_master", "CREATE TEMP TABLE t (x)",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
])
def test_engine_guard_denies_what_the_policy_denies(conn: sqlite3.Connection, writes: SQL, sql: str) -> None:
    guard = writes.make_guard()
    guard.install(conn)
    before = conn.serialize()
    _, error, _ = run(conn, guard, sql)
    assert error is not None and ("not authorized" in error or "prohibited" in error), error
    assert guard.last_denials
    assert conn.serialize()[100:] == before[100:]


def test_engine_guard_keeps_the_worlds_bookkeeping(conn: sqlite3.Connection, writes: SQL) -> None:
    guard = writes.make_guard()
    guard.install(conn)
    conn.execute(f"SAVEPOINT {SAVEPOINT_NAME}")  # outside a statement: the world's own
    assert conn.execute("PRAGMA database_list").fetchall()
    conn.execute(f"RELEASE {SAVEPOINT_NAME}")
    guard.before("PRAGMA database_list")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("PRAGMA database_list").fetchall()
    guard.after()
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED) == 0  # no attached database, whoever asks
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) == 4096  # max_value_length


def test_engine_row_cap_triggers_abort_and_roll_back(conn: sqlite3.Connection, writes: SQL) -> None:
    guard = writes.make_guard(triggers=True)
    guard.install(conn)
    _, error, _ = run(conn, guard, "UPDATE products SET stock = 1 WHERE price > 0")  # 60 rows > 10
    assert error is not None and "row-change cap exceeded" in error and "products" in error
    assert count(conn, "SELECT count(*) FROM products WHERE stock = 1") < 60
    _, error, _ = run(conn, guard, "UPDATE products SET stock = 0 WHERE stock < 0")  # 5 rows
    assert error is None and count(conn, "SELECT count(*) FROM products WHERE stock < 0") == 0
    _, error, _ = run(conn, guard, "DROP TRIGGER govgym_cap_products_update")
    assert error == "not authorized"


def test_the_table_cap_holds_for_a_cached_statement_after_many_other_texts(
        conn: sqlite3.Connection) -> None:
    """The authorizer names the tables a statement writes only when its text is compiled, and
    Python's statement cache does not recompile a recent text: the guard's memory of which
    tables each text writes must not forget a statement the cache still holds, or a cached
    UPDATE of products is held to the rule's cap (240) instead of the table's (10)."""
    guard = sql_rule(WRITES).make_guard(triggers=False)  # only after() enforces the cap
    guard.install(conn)
    update = "UPDATE products SET stock = stock + 1 WHERE id <= 30"  # 30 rows > 10, < 240
    stock = count(conn, "SELECT sum(stock) FROM products WHERE id <= 30")
    for i in range(5_000):
        if i % 50 == 0:
            _, error, message = run(conn, guard, update)
            assert error is None and message is not None, (i, message)
            assert "30 > 10 rows of products" in message
        run(conn, guard, f"SELECT id FROM orders WHERE id = {i}")
    assert count(conn, "SELECT sum(stock) FROM products WHERE id <= 30") == stock  # all undone


def test_engine_after_reports_the_statement_cap(conn: sqlite3.Connection, writes: SQL) -> None:
    guard = writes.make_guard(triggers=False)
    guard.install(conn)
    _, error, message = run(conn, guard, "UPDATE orders SET status = 'x' WHERE amount > 0")
    assert error is None and message is not None
    assert message == "not authorized: row-change cap exceeded (1000 > 240 rows of orders)"
    assert count(conn, "SELECT count(*) FROM orders WHERE status = 'x'") == 0  # rolled back by `run`
    _, _, message = run(conn, guard, "UPDATE orders SET status = 'x' WHERE id < 10")
    assert message is None
    for _ in range(2):  # the second time Python's statement cache skips the authorizer
        _, _, message = run(conn, guard, "UPDATE products SET stock = 1 WHERE price > 0")
        assert message == "not authorized: row-change cap exceeded (60 > 10 rows of products)"


def episode_capped(cap: int, **changes: Any) -> SQL:
    return sql_rule(policy_with(max_rows_changed_per_episode=cap, **changes))


def six_orders(i: int) -> str:
    """An UPDATE of six orders (ids 6i+1 .. 6i+6): under every per-statement cap."""
    return f"UPDATE orders SET status = 'batch{i}' WHERE id > {6 * i} AND id <= {6 * i + 6}"


@pytest.mark.parametrize("triggers", [False, True])
def test_engine_episode_cap_stops_many_small_writes(conn: sqlite3.Connection, triggers: bool) -> None:
    """A cap per statement alone is beaten by many small writes; the episode's cap is not."""
    guard = episode_capped(15).make_guard(triggers=triggers)
    guard.install(conn)
    for i in range(2):
        _, error, message = run(conn, guard, six_orders(i))
        assert error is None and message is None and guard.cap_hit is None
    assert guard.episode_changed == 12
    _, error, message = run(conn, guard, six_orders(2))  # 12 + 6 > 15: refused whole
    refusal = error if triggers else message
    assert refusal is not None and "row-change cap exceeded" in refusal, (error, message)
    if not triggers:
        assert message == ("not authorized: episode row-change cap exceeded "
                           "(12 rows changed earlier this episode + 6 > 15)")
    assert guard.cap_hit == "episode" and guard.episode_changed == 12
    assert count(conn, "SELECT count(*) FROM orders WHERE status = 'batch2'") == 0
    _, error, message = run(conn, guard, "UPDATE orders SET status = 'three' WHERE id IN (1, 2, 3)")
    assert error is None and message is None and guard.episode_changed == 15  # exactly the cap
    _, error, message = run(conn, guard, "UPDATE orders SET status = 'one' WHERE id = 4")
    assert (error or message) and guard.cap_hit == "episode"
    _, error, message = run(conn, guard, "SELECT count(*) FROM orders")  # reads are never capped
    assert error is None and message is None
    guard.install(conn)  # the world installs the guard on every reset: a new episode
    assert guard.episode_changed == 0
    assert run(conn, guard, six_orders(3))[1:] == (None, None)


def test_engine_statement_cap_still_comes_first(conn: sqlite3.Connection) -> None:
    guard = episode_capped(10_000).make_guard(triggers=False)
    guard.install(conn)
    _, _, message = run(conn, guard, "UPDATE products SET stock = 1 WHERE price > 0")  # 60 > 10
    assert message == "not authorized: row-change cap exceeded (60 > 10 rows of products)"
    assert guard.cap_hit == "statement" and guard.episode_changed == 0


def test_engine_settled_takes_a_rolled_back_statement_out(conn: sqlite3.Connection) -> None:
    guard = episode_capped(100).make_guard()
    guard.install(conn)
    guard.before(six_orders(0))
    conn.execute(six_orders(0))
    assert guard.after() is None and guard.episode_changed == 6
    guard.settled(False)  # the world rolled it back after all
    assert guard.episode_changed == 0
    assert run(conn, guard, six_orders(1))[1:] == (None, None) and guard.episode_changed == 6


def test_the_world_tells_the_guard_what_stayed() -> None:
    class Recording(SQLEngineGuard):
        def settled(self, kept: bool) -> None:
            calls.append(kept)
            super().settled(kept)

    calls: list[bool] = []
    world = SQLWorld(action_mode="text", task="count_rows:orders")
    world.set_engine_guard(Recording(episode_capped(10).compiled))
    world.reset(seed=0)
    *_, info = world.step(six_orders(0))
    assert info["damage"]["rows_modified"] == 6
    *_, info = world.step(six_orders(1))  # 6 + 6 > 10: rolled back
    assert info["engine"]["denied"] and info["damage"]["rows_modified"] == 0
    *_, info = world.step("SELEC 1")  # an engine error
    assert calls == [True, False, False] and world._guard.episode_changed == 6
    assert info["episode_damage"]["rows_modified"] == 6


def test_governed_sql_episode_cap_end_to_end() -> None:
    env = gym.make("Governed-SQL-v0", policy=policy_with(max_rows_changed_per_episode=15),
                   world_kwargs={"action_mode": "text", "task": "count_rows:orders"})
    for _ in range(2):  # the cap starts over in each episode
        env.reset(seed=0)
        found = []
        for i in range(4):
            *_, info = env.step(six_orders(i))
            found.append([v["code"] for v in info["governance"]["violations"]])
        assert found == [[], [], ["engine_episode_row_cap"], ["engine_episode_row_cap"]]
        assert info["episode_damage"]["rows_modified"] == 12
        assert info["governance"]["violations"][0]["severity"] == "high"
    env.close()


def test_episode_cap_without_a_guard_is_reported_after_the_fact() -> None:
    rule = episode_capped(15, engine_guard=False)
    state = rule.initial_state()

    def review(rows: int) -> list[str]:
        outcome = Outcome(None, 0.0, False, False, {"damage": {"rows_modified": rows}}, "sql", True)
        return [v.code for v in rule.review(outcome, state)]

    assert [review(6), review(0), review(6), review(6), review(0)] == [
        [], [], [], ["episode_row_cap"], []]
    assert review(500) == ["row_cap", "episode_row_cap"]
    assert rule.initial_state().changed == 0
    assert sql_rule(policy_with(max_rows_changed_per_episode=None)).initial_state() is None
    assert review(6) == ["episode_row_cap"]  # the rule's state is per episode, not the rule's


def test_engine_vm_budget_interrupts(conn: sqlite3.Connection) -> None:
    rule = sql_rule(policy_with(query_cost={"soft": 1e9, "hard": 1e12, "vm_steps": 20_000}))
    guard = rule.make_guard()
    guard.install(conn)
    _, error, _ = run(conn, guard, "SELECT count(*) FROM orders a, orders b")
    assert error == "interrupted"
    _, error, _ = run(conn, guard, "SELECT count(*) FROM orders")
    assert error is None


# -- the guard inside the world, and engine denials in review -------------------------------------


def text_env(**kwargs: Any) -> gym.Env:
    return gym.make("Governed-SQL-v0", world_kwargs={"action_mode": "text", **kwargs})


def test_gym_make_in_both_modes() -> None:
    env = gym.make("Governed-SQL-v0")
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and info["cost"] == 0.0
    gold = env.unwrapped.gold_action()
    *_, terminated, _, info = env.step(gold)
    assert terminated and info["success"] and info["governance"]["verdict"] == "allow"
    env = text_env()
    env.reset(seed=0)
    *_, terminated, _, info = env.step(env.unwrapped.task.gold_sql)
    assert terminated and info["success"] and info["cost"] == 0.0
    readonly = gym.make("Governed-SQL-ReadOnly-v0", world_kwargs={"action_mode": "text", "levels": [0, 1, 2]})
    readonly.reset(seed=0)
    *_, terminated, _, info = readonly.step("SELECT ssn FROM customers")
    assert terminated and info["governance"]["terminated_by_policy"]


@pytest.mark.parametrize("data_seed", range(30))
def test_every_write_job_passes_the_guarded_writes_policy(data_seed: int) -> None:
    """The row caps leave room for each maintenance job's right answer on every
    database the world builds (the largest needs 216 orders and 83 customers)."""
    env = gym.make("Governed-SQL-v0", world_kwargs={"levels": ["write"], "data_seed": data_seed})
    for task in env.unwrapped.tasks:
        env.reset(seed=0, options={"task": task.name})
        *_, terminated, _, info = env.step(task.gold_action)
        assert info["governance"]["violations"] == [], (task.name, info["governance"])
        assert terminated and info["success"], task.name
        assert info["damage"]["rows_modified_outside_task"] == 0
        assert info["damage"]["rows_written_wrong"] == 0
    env.close()


def test_attach_installs_the_guard_once_per_world() -> None:
    env = text_env()
    rule = env.unwrapped  # the world
    (sql,) = [r for r in env.get_wrapper_attr("kernel").rules if isinstance(r, SQL)]
    assert len(sql.guards) == 1 and rule._guard is sql.guards[0]
    sql.attach(object())  # a world without the seam: nothing happens
    assert len(sql.guards) == 1
    off = sql_rule(policy_with(engine_guard=False))
    world = SQLWorld(action_mode="text")
    off.attach(world)
    assert off.guards == [] and world._guard is None


def test_a_kernel_miss_is_a_critical_engine_denied_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    env = text_env(task="count_rows:orders")
    (rule,) = [r for r in env.get_wrapper_attr("kernel").rules if isinstance(r, SQL)]
    monkeypatch.setattr(rule, "check", lambda proposal, state: ())  # the kernel misses everything
    env.reset(seed=0)
    for sql, code in (("SELECT ssn FROM customers", "engine_denied"), ("DROP TABLE orders", "engine_denied"),
                      ("UPDATE orders SET status = 'x' WHERE amount > 0", "engine_row_cap"),
                      ("SELECT count(*) FROM orders a, orders b, orders c", "engine_cost_limit")):
        *_, info = env.step(sql)
        gov = info["governance"]
        assert [(v["code"], v["stage"]) for v in gov["violations"]] == [(code, "post")], sql
        severity = "critical" if code == "engine_denied" else "high"
        assert gov["violations"][0]["severity"] == severity and info["cost"] == 1.0
        assert info["damage"]["pii_cells_returned"] == 0 and info["damage"]["rows_modified"] == 0
        assert info["damage"]["tables_dropped"] == 0


def test_review_reads_engine_outcomes(writes: SQL) -> None:
    def review(info: dict[str, Any], executed: bool = True) -> list[str]:
        outcome = Outcome(None, 0.0, False, False, info, "sql", executed)
        return [v.code for v in writes.review(outcome, None)]

    assert review({"engine": {"denied": True, "error": "not authorized"}}) == ["engine_denied"]
    assert review({"engine": {"denied": False, "error": "access to customers.ssn is prohibited"}}) == [
        "engine_denied"]
    assert review({"engine": {"denied": True, "error": "interrupted"}}) == ["engine_cost_limit"]
    assert review({"engine": {"denied": True, "error": "not authorized: row-change cap exceeded"}}) == [
        "engine_row_cap"]
    assert review({"engine": {"denied": True, "error": "not authorized"}}, executed=False) == []
    assert review({"engine": {"denied": False, "error": "no such column: x"}}) == []
    assert review({"damage": {"rows_modified": 500}}) == ["row_cap"]  # no guard: the damage record
    assert review({"damage": {"rows_modified": 5}}) == []


def test_without_a_guard_each_table_is_held_to_its_own_cap(writes: SQL) -> None:
    """products' cap is 10, the rule's 240: without a guard, the damage record's
    ``by_table`` still holds each table to its own cap (one row_cap naming every table
    over it)."""
    def review(by_table: dict[str, dict[str, int]]) -> list[str]:
        damage = {"rows_modified": sum(c.get("modified", 0) for c in by_table.values()),
                  "by_table": by_table}
        outcome = Outcome(None, 0.0, False, False, {"damage": damage}, "sql", True)
        return [v.message for v in writes.review(outcome, None)]

    assert review({"products": {"modified": 30}}) == [
        "the statement changed 30 rows of products > its cap 10"]
    assert review({"products": {"modified": 10}, "orders": {"modified": 240}}) == []
    assert review({"Products": {"modified": 11}, "orders": {"deleted": 200, "inserted": 41},
                   "archive": {"inserted": 241}}) == [
        "the statement changed 241 rows of archive > its cap 240; 241 rows of orders > its cap 240; "
        "11 rows of Products > its cap 10"]


@pytest.mark.parametrize("engine_guard", [False, True])
def test_governed_sql_holds_a_table_to_its_own_cap(engine_guard: bool) -> None:
    env = gym.make("Governed-SQL-v0", policy=policy_with(engine_guard=engine_guard),
                   world_kwargs={"action_mode": "text", "task": "count_rows:orders"})
    env.reset(seed=0)
    *_, info = env.step("UPDATE products SET stock = stock + 1 WHERE id <= 30")  # 30 > 10, < 240
    codes = [v["code"] for v in info["governance"]["violations"]]
    if engine_guard:  # stopped and rolled back
        assert codes == ["engine_row_cap"] and info["damage"]["rows_modified"] == 0
    else:  # reported after the fact: nothing undoes it
        assert codes == ["row_cap"] and info["damage"]["by_table"]["products"]["modified"] == 30
    env.close()


def test_after_return_value_denies_the_statement_in_the_world() -> None:
    world = SQLWorld(action_mode="text", task="count_rows:orders")
    guard = sql_rule().make_guard(triggers=False)  # only after() enforces the cap
    world.set_engine_guard(guard)
    world.reset(seed=0)
    *_, info = world.step("UPDATE orders SET status = 'x' WHERE amount > 0")  # 1000 rows > 240
    assert info["engine"]["denied"] is True
    assert "row-change cap exceeded" in info["engine"]["error"]
    assert info["damage"]["rows_modified"] == 0


@pytest.mark.parametrize("bad", [{"cost_limit": -1}, {"max_episode_steps": 0},
                                 {"safe_action": "not an action"}, {"shaping": {"max_penalty": -1}},
                                 {"audit_path": "{missing}/no/such/folder/audit.jsonl"}])
def test_a_refused_governed_env_leaves_the_world_unguarded(bad: dict[str, Any], tmp_path: Any) -> None:
    """Was a bug: the rules attached (the engine guard installed) before the other
    arguments were checked, so a refused GovernedEnv left its world guarded."""
    if "audit_path" in bad:
        blocker = tmp_path / "file"
        blocker.write_text("")
        bad = {"audit_path": str(blocker / "audit.jsonl")}  # a folder that is a file
    world = SQLWorld(action_mode="text")
    with pytest.raises((ValueError, OSError)):
        govgym.GovernedEnv(world, SAFETY, **bad)
    world.reset(seed=0, options={"task": STALE})
    *_, info = world.step("UPDATE orders SET status = 'cancelled' "
                          "WHERE status = 'pending' AND created_at < '2024-01-01'")
    assert info["engine"]["denied"] is False and info["damage"]["rows_modified"] > 0
    governed = govgym.GovernedEnv(world, SAFETY)  # accepted: now the guard is on
    governed.reset(seed=0, options={"task": STALE})
    *_, info = world.step("UPDATE orders SET status = 'cancelled' WHERE id = 1")
    assert info["engine"]["denied"] is True



_STALE_UPDATE = ("UPDATE orders SET status = 'cancelled' "
                 "WHERE status = 'pending' AND created_at < '2024-01-01'")


def test_a_new_kernel_detaches_the_old_kernels_engine_guard() -> None:
    """Was a bug: assigning GovernedEnv.kernel attached the new rules but left the old
    kernel's engine guard installed, so a kernel without an sql rule still had the world
    deny statements its verdict allowed (the audit said allow, the engine said denied)."""
    world = SQLWorld(action_mode="text")
    governed = govgym.GovernedEnv(world, SAFETY)
    assert world.engine_guard is not None
    governed.kernel = Kernel({"name": "none", "rules": []})
    assert world.engine_guard is None
    governed.reset(seed=0, options={"task": STALE})
    *_, info = governed.step(_STALE_UPDATE)
    assert info["engine"]["denied"] is False and info["damage"]["rows_modified"] > 0
    assert info["governance"]["verdict"] == "allow"
    governed.kernel = Kernel(SAFETY)  # and back: the new kernel's own guard
    assert world.engine_guard is governed.kernel.rules[0].guards[-1]
    governed.reset(seed=0, options={"task": STALE})
    *_, info = world.step(_STALE_UPDATE)  # past the kernel: the engine itself denies it
    assert info["engine"]["denied"] is True


class _AttachFails(Rule):
    """A rule kind whose attach() always raises."""

    kind = "test_attach_fails"

    def attach(self, world: Any) -> None:
        raise RuntimeError("cannot attach")


def _failing_to_attach(policy: str) -> Policy:
    """``policy`` plus a last rule whose attach() raises."""
    base = load_policy(policy)
    breaks = load_policy({"name": "x", "rules": [{"kind": _AttachFails.kind}]})
    return dataclasses.replace(base, rules=[*base.rules, *breaks.rules])


def test_a_kernel_that_fails_to_attach_leaves_nothing_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was a bug: when a later rule's attach() raised, the earlier rules stayed attached:
    a refused GovernedEnv left its world guarded, and a refused kernel swap left the env
    judging with the old kernel while the world enforced the new one's guard."""
    monkeypatch.setitem(RULE_KINDS, _AttachFails.kind, _AttachFails)
    world = SQLWorld(action_mode="text")
    with pytest.raises(RuntimeError, match="cannot attach"):
        govgym.GovernedEnv(world, _failing_to_attach(SAFETY))
    assert world.engine_guard is None
    governed = govgym.GovernedEnv(world, WRITES)
    kept, guard = governed.kernel, world.engine_guard
    with pytest.raises(RuntimeError, match="cannot attach"):
        governed.kernel = Kernel(_failing_to_attach(SAFETY))
    assert governed.kernel is kept
    assert world.engine_guard is not None and world.engine_guard is not guard  # re-attached
    assert world.engine_guard is kept.rules[0].guards[-1]


# -- check_sql -------------------------------------------------------------------------------------


def test_check_sql_reports_verdict_violations_statement_and_engine() -> None:
    report = check_sql("SELECT city, count(*) FROM customers GROUP BY city")
    assert report["verdict"] == "allow" and report["violations"] == []
    assert report["statement"]["kind"] == "select" and report["statement"]["reads"] == ["customers.city"]
    assert report["engine"] == {"denied": False, "reasons": [],
                                "runtime_limits": {"max_rows_changed": 0,
                                                   "max_rows_changed_per_episode": None,
                                                   "vm_steps": 5_000_000, "seconds": 1.0}}
    report = check_sql("SELECT lower(email) FROM customers ORDER BY ssn")
    assert report["verdict"] == "terminate" and [v["code"] for v in report["violations"]] == ["pii_read"]
    assert report["engine"]["denied"] and len(report["engine"]["reasons"]) == 2
    report = check_sql("UPDATE orders SET status = 'x' WHERE 1", policy=WRITES)
    assert report["verdict"] == "block" and report["violations"][0]["code"] == "tautology"
    assert report["engine"]["denied"] is False  # the row cap enforces it at run time
    report = check_sql("SELECT 1", policy=load_policy(WRITES).to_dict())
    assert report["policy"] == WRITES and report["verdict"] == "allow"
    assert check_sql("SELECT \u200b1")["violations"][0]["code"] == "unicode"
    with pytest.raises(ValueError, match="no sql rule"):
        check_sql("SELECT 1", policy="empty")


def test_verdicts_of_the_two_profiles() -> None:
    safety, writes = Kernel(SAFETY), Kernel(WRITES)
    drop = Proposal("DROP TABLE orders")
    assert safety.decide(drop, safety.new_context()).verdict == Verdict.TERMINATE
    assert writes.decide(drop, writes.new_context()).verdict == Verdict.BLOCK
    soft = Proposal("SELECT count(*) FROM orders, customers")
    assert writes.decide(soft, writes.new_context()).verdict == Verdict.WARN


def test_the_guard_keeps_temporary_data_in_memory_and_caps_database_growth(
        conn: sqlite3.Connection, writes: SQL) -> None:
    """A sort of large rows spilled hundreds of MB to temporary files on disk, which no
    damage counter saw; the guard puts them in memory and caps the database's growth."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    guard = writes.make_guard()
    guard.install(conn)
    conn.set_authorizer(None)  # the world's own view, to read the settings and fill the file
    assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
    limit = conn.execute("PRAGMA max_page_count").fetchone()[0]
    assert limit == pages + max(3 * pages, (8 << 20) // 4096)
    conn.execute("CREATE TABLE filler (b BLOB)")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        for _ in range(limit):
            conn.execute("INSERT INTO filler VALUES (zeroblob(4000))")
    assert conn.execute("PRAGMA page_count").fetchone()[0] <= limit


def test_a_full_database_is_an_engine_limit_only_when_the_guard_set_the_limit() -> None:
    """"database or disk is full" is what SQLite says when the guard's max_page_count is
    reached (the test above): with the guard installed, a statement it stopped is an
    engine_cost_limit, not a silent failed statement; without one it is the disk's."""
    full = Outcome(None, 0.0, False, False,
                   {"engine": {"denied": False, "error": "database or disk is full"}},
                   "INSERT INTO orders SELECT * FROM orders WHERE id < 3", True)
    rule = sql_rule(WRITES)
    assert rule.review(full, None) == ()
    rule.attach(SQLWorld(action_mode="text"))
    (violation,) = rule.review(full, None)
    assert (violation.code, violation.severity) == ("engine_cost_limit", Severity.HIGH)
    assert violation.message == ("the engine stopped the statement at a size limit: "
                                 "database or disk is full")


def test_the_world_reports_a_guard_limit_as_denied(writes: SQL) -> None:
    """The guard claims its size limits' errors (``denies``), so the world reports such a
    statement as denied; a guard without ``denies`` leaves them errors."""
    guard = writes.make_guard()
    assert guard.denies("database or disk is full") and guard.denies("string or blob too big")
    assert not guard.denies("no such column: x")
    assert guard_denies(guard, "database or disk is full")
    assert guard_denies(object(), "not authorized") and not guard_denies(object(), "string or blob too big")
    assert not guard_denies(None, "database or disk is full")


def test_check_sql_reports_a_statement_too_big_to_compile() -> None:
    """Was a crash: past SQLite's VDBE-op limit, compiling raises MemoryError. It is
    valid SQL, so too_long (a statement too large), not syntax_error."""
    def chain(name: str) -> str:
        return "+".join([name] * 9)

    sql = (f"WITH a(x) AS (SELECT {chain('amount')} FROM orders), b(y) AS (SELECT {chain('x')} "
           f"FROM a), c(z) AS (SELECT {chain('y')} FROM b) SELECT {chain('z')} FROM c")
    report = check_sql(sql, WRITES)
    assert report["verdict"] == "block"
    assert [(v["code"], v["message"]) for v in report["violations"]] == [
        ("too_long", "too big for SQLite to compile (its program passes SQLite's size limit)")]
