"""Read an audit log back, verify its hash chain, and summarise it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from govgym.audit.recorder import _NON_FINITE, GENESIS, line_body, starts_like_a_record

__all__ = ["AuditLog", "read", "summarize"]

_TAIL = re.compile(r',"hash":"([0-9a-f]{64})"}$')


@dataclass
class Session:
    """The decisions one recorder wrote, ended by its close record.

    ``closed`` is False for decisions that no close record ends: their recorder ended
    without closing (a crash, a killed vector-env worker) or is still writing, and the
    decisions after its last flush may be missing. Unclosed decisions of several such
    recorders are told apart where the run id changes. ``first_line`` and ``last_line``
    are 1-based lines of the file (the close record's, for a closed session)."""

    run: Any
    first_line: int
    last_line: int
    decisions: int = 0
    closed: bool = False
    closed_by: str | None = None

    def describe(self) -> str:
        where = (f"line {self.first_line}" if self.first_line == self.last_line
                 else f"lines {self.first_line}-{self.last_line}")
        if self.closed:
            return f"run {self.run!r} ({where}): {self.decisions} decision(s), closed"
        return (f"run {self.run!r} ({where}): {self.decisions} decision(s), NOT CLOSED: its "
                "recorder ended without close() (a crash, a killed worker) or is still "
                "writing; decisions after its last flush may be missing")


@dataclass
class AuditLog:
    """A read audit log.

    ``records`` holds its decisions (one per governed step, in order) and ``sessions``
    the recorders that wrote them (see :class:`Session`; the close record that ends a
    session is in the chain, and in :attr:`last_hash`, but not in ``records``);
    ``unclosed`` lists the sessions without their close record, whose last decisions
    may be missing.

    ``ok`` is True when every complete record chains to the one before it.
    ``first_broken`` is the 1-based line of the first record that does not (``None``
    when the chain holds) and ``problem`` says why. ``torn`` lists lines that were cut
    off by a crash mid-write: reported, but not a broken chain, as long as the chain
    resumes unbroken after them (a torn last line is the usual case; a recorder opened
    on the file afterwards goes on from the last complete record). A line can only be
    torn if it is what a crash leaves: the start of the record that came next (its
    sequence number, when written, is the next one), or the NUL bytes a power loss can
    leave where the end of the file was not yet written (a line's trailing NULs are no
    part of it; a whole record before them counts). Any other unreadable line after
    the first record, an empty one too, breaks the chain: text inserted into a log is
    tampering. ``lines`` holds the
    1-based line of each record in ``records``. ``not_a_log`` is True for a file with
    content but no record, nor the start of one (binary data, some other text): not an
    audit log, so ``ok`` is False and ``first_broken`` is its first such line; an empty
    file is an empty log.
    """

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = True
    first_broken: int | None = None
    problem: str | None = None
    torn: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    not_a_log: bool = False
    sessions: list[Session] = field(default_factory=list)

    @property
    def state(self) -> str:
        """In a few words: ``"intact"``, ``"intact, 1 session(s) NOT CLOSED"`` or
        ``"BROKEN at line 7"``."""
        if not self.ok:
            return f"BROKEN at line {self.first_broken}"
        unclosed = len(self.unclosed)
        return f"intact, {unclosed} session(s) NOT CLOSED" if unclosed else "intact"

    @property
    def unclosed(self) -> list[Session]:
        """The sessions that lack their close record (their last decisions may be missing)."""
        return [session for session in self.sessions if not session.closed]

    def invalid_records(self) -> list[tuple[int, str]]:
        """``(line, problem)`` of each record :func:`summarize` cannot count (a record
        with an intact chain need not have the fields a summary reads)."""
        found = (_summary_problem(record) for record in self.records)
        return [(line, problem) for line, problem in zip(self.lines, found, strict=True) if problem]

    @property
    def last_hash(self) -> str:
        """The hash of the last verified record, a session's close record included
        (``GENESIS`` for a log without one): what ``Recorder.last_hash`` said when the log
        was written, unless records were lost from its end. See :meth:`records_after`."""
        return self._chain[-1][0] if self._chain else GENESIS

    def records_after(self, last_hash: str) -> int | None:
        """How many verified decisions follow the record whose hash is ``last_hash`` (0
        when the log still ends there, or only its session's close record follows;
        ``GENESIS`` is the start); ``None`` when no record has that hash: the records up
        to it were cut off the log or rewritten."""
        if last_hash == GENESIS:
            return len(self.records)
        after = 0
        for digest, decision in reversed(self._chain):
            if digest == last_hash:
                return after
            after += decision
        return None

    @property
    def torn_tail(self) -> bool:
        return bool(self.torn) and self.torn[-1] == self._line_count

    _line_count: int = 0
    #: (hash, is a decision) of every verified record, close records too
    _chain: list[tuple[str, bool]] = field(default_factory=list, repr=False)


def _break(log: AuditLog, line: int, problem: str) -> AuditLog:
    log.ok = False
    log.first_broken = line
    log.problem = problem
    return log


_TORN_SEQ = re.compile(rb'\{"seq":(-?\d+)[,}]')


def _not_a_crash(raw: bytes, expected_seq: int | None) -> str | None:
    """Why ``raw`` (a line that is neither JSON nor a record) cannot be what a crash
    left of the next record; ``None`` when it can be. A crash leaves a prefix of the
    record being written: it starts like a record and, when its sequence number was
    written, that is the number the next record would have had."""
    if not starts_like_a_record(raw):
        return ("a line that is neither a record nor what a crash leaves of one "
                "(text inserted into the log)")
    seq = _TORN_SEQ.match(raw)
    if seq and expected_seq is not None and int(seq.group(1)) != expected_seq:
        return (f"a cut-off record with sequence number {int(seq.group(1))}, expected "
                f"{expected_seq}: not the record a crash would have been writing")
    return None


def _no_records(log: AuditLog, raw_lines: list[bytes]) -> AuditLog:
    """``log`` unless it holds a line that is not the start of a record (a recorder that
    crashed in its first write leaves only such a start): with no record, the file is
    not an audit log; with records, the line was inserted and breaks the chain."""
    junk = [n for n in log.torn if not starts_like_a_record(raw_lines[n - 1])]
    if not junk:
        return log
    if log.records:  # text before the first record: inserted, as anywhere else
        kept = sum(1 for line in log.lines if line < junk[0])
        del log.records[kept:], log.lines[kept:]
        log.torn = [n for n in log.torn if n < junk[0]]
        return _break(log, junk[0], _not_a_crash(raw_lines[junk[0] - 1], None) or "")
    log.torn = []
    log.not_a_log = True
    return _break(log, junk[0], "not an audit log: the file holds no audit records "
                                "(this line is neither a record nor the start of one)")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def read(path: str | os.PathLike[str]) -> AuditLog:
    """Read ``path``, verifying each record's hash and its link to the one before, and
    that each close record ends decisions of its own run.

    Reading stops at the first broken record; the records before it are returned.
    """
    return _sessions(_read_chain(Path(path)))


def _sessions(log: AuditLog) -> AuditLog:
    """``log`` (every verified record in ``records``) split into its decisions and its
    sessions. A close record counts its session's decisions: the ones before those,
    back to the previous close record, were written by recorders that did not close.
    A close record that claims more decisions than precede it, or decisions of another
    run, breaks the chain (no recorder writes one)."""
    chain, chain_lines = log.records, log.lines
    log.records, log.lines = [], []
    pending: list[tuple[dict[str, Any], int]] = []  # decisions since the last close record
    for record, line in zip(chain, chain_lines, strict=True):
        event = record.get("event")
        if event is None:
            pending.append((record, line))
        elif event == "close":
            count, run = record.get("decisions"), record.get("run")
            problem = None
            if type(count) is not int or not 1 <= count <= len(pending):
                problem = (f"a close record counting {_show(count)} decision(s), after "
                           f"{len(pending)} not yet closed")
            elif any(r.get("run") != run for r, _ in pending[-count:]):
                problem = f"a close record of run {_show(run)} after decisions of another run"
            if problem is not None:
                _unclosed(log, pending)
                return _break(log, line, problem)
            first = pending[-count][1]
            inside = [torn for torn in log.torn if first < torn < line]
            if inside:  # a crash ends its recorder's session: this line was put there
                _unclosed(log, [d for d in pending if d[1] < inside[0]])
                log.torn = [torn for torn in log.torn if torn < inside[0]]
                return _break(log, inside[0], "a cut-off record inside a session that its close "
                                              "record ends (a crash would have ended the session "
                                              "there: the line was inserted)")
            _unclosed(log, pending[:-count])
            by = record.get("by")
            log.sessions.append(Session(run, first, line, count, closed=True,
                                        closed_by=by if isinstance(by, str) else None))
            _decisions(log, pending[-count:])
            pending = []
        else:
            _unclosed(log, pending)
            return _break(log, line, f"a record with an unknown event {_show(event)}")
        log._chain.append((record["hash"], event is None))
    _unclosed(log, pending)
    return log


def _decisions(log: AuditLog, pending: list[tuple[dict[str, Any], int]]) -> None:
    for record, line in pending:
        log.records.append(record)
        log.lines.append(line)


def _unclosed(log: AuditLog, pending: list[tuple[dict[str, Any], int]]) -> None:
    """Decisions no close record ends, as sessions (one per run id, where it changes)."""
    start = 0
    for index in range(1, len(pending) + 1):
        if index == len(pending) or pending[index][0].get("run") != pending[start][0].get("run"):
            part = pending[start:index]
            log.sessions.append(Session(part[0][0].get("run"), part[0][1], part[-1][1], len(part)))
            start = index
    _decisions(log, pending)


def _read_chain(path: Path) -> AuditLog:
    """Read ``path``, verifying each record's hash and its link to the one before; every
    verified record in ``records``."""
    log = AuditLog(path)
    prev = GENESIS
    expected_seq: int | None = None
    # bytes, decoded line by line: a crash can cut a line inside a UTF-8 character
    raw_lines = log.path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    log._line_count = len(raw_lines)
    for number, raw in enumerate(raw_lines, start=1):
        raw = line_body(raw)  # without a CRLF copy's \r and a power loss's NUL bytes
        if not raw:
            if raw_lines[number - 1].endswith(b"\0"):  # zeros only: where a power loss
                log.torn.append(number)  # took the last record(s), if it took any
            elif log.records:  # the recorder writes no empty line, nor does a crash
                return _break(log, number, "an empty line after a record (the recorder "
                                           "writes none: inserted)")
            continue
        # a line that is not JSON keeps its text: one that still ends in a record's hash
        # (a byte-order mark before it, an edit that broke the JSON) is no crash's doing
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "replace")
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        except RecursionError:  # nesting deeper than this Python parses
            if _TAIL.search(line):
                return _break(log, number, "a record nested too deeply to parse (deeper "
                                           f"than Python's recursion limit, {sys.getrecursionlimit()})")
            record = None  # no record's end: what a crash leaves, or junk, as below
        match = _TAIL.search(line)
        if record is None and match is None:  # what a crash mid-write leaves, or junk
            problem = _not_a_crash(raw, expected_seq)
            if problem is None or not log.records:  # junk before any record: _no_records
                log.torn.append(number)
                continue
            return _break(log, number, problem)
        if not isinstance(record, dict) or match is None:  # no crash leaves a whole line like this
            return _break(log, number, "a complete line that is not a hash-chained record "
                                       "(a record rewritten without its hash, or inserted)")
        body = line[: match.start()]
        own = hashlib.sha256(body.encode()).hexdigest()
        if own != match.group(1) or record.get("hash") != own:
            return _break(log, number, "record content does not match its hash")
        if record.get("prev") != prev:
            return _break(log, number, "record does not chain to the record before it "
                                       "(a record was removed, reordered or inserted)")
        seq = record.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            return _break(log, number, "record has no integer sequence number "
                                       f"(seq: {_show(seq) if 'seq' in record else 'missing'})")
        if expected_seq is not None and seq != expected_seq:
            return _break(log, number, f"sequence number {seq}, expected {expected_seq}")
        expected_seq = seq + 1
        prev = own
        log.records.append(record)
        log.lines.append(number)
    return _no_records(log, raw_lines)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:  # an int beyond any float
        return False
    return True


#: How the recorder writes a float JSON has no number for (``"NaN"``, ...).
_NON_FINITE_TEXT = frozenset(_NON_FINITE.values())


def _is_cost(value: Any) -> bool:
    """A number, or a non-finite one as the recorder writes it (``"NaN"``, ...)."""
    return _is_number(value) or (type(value) is str and value in _NON_FINITE_TEXT)


def _episodes(records: list[dict[str, Any]]) -> int:
    """How many episodes ``records`` hold. One recorder writes its records in order and
    holds the file alone, so an episode's records are consecutive: a new episode starts
    where (run, episode) changes, or where an agent's step does not go up (a second
    run given the same run id, starting again at episode 0)."""
    count, current, last_step = 0, None, {}
    for r in records:
        key, agent, step = (r.get("run"), r.get("episode")), r.get("agent"), r.get("step")
        numbered = type(step) is int
        if key != current or (numbered and agent in last_step and step <= last_step[agent]):
            count, current, last_step = count + 1, key, {}
        if numbered:
            last_step[agent] = step
    return count


def _summary_problem(record: dict[str, Any]) -> str | None:
    """Why :func:`summarize` cannot count ``record``; ``None`` when it can."""
    if "verdict" not in record:
        return "record has no verdict"
    if not isinstance(record["verdict"], str):
        return f"verdict is not a string (verdict: {_show(record['verdict'])})"
    if not _is_cost(record.get("cost", 0.0)):
        return f"cost is not a number (cost: {_show(record['cost'])})"
    for key in ("run", "episode", "agent"):
        if isinstance(record.get(key), list | dict):
            return f"{key} is not a single value ({key}: {_show(record[key])})"
    violations = record.get("violations", [])
    if not isinstance(violations, list):
        return f"violations is not a list (violations: {_show(violations)})"
    for index, v in enumerate(violations):
        if not (isinstance(v, dict) and isinstance(v.get("rule"), str)
                and isinstance(v.get("severity"), str)):
            return f"violations.{index} has no rule and severity (strings): {_show(v)}"
    return None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by verdict, rule and severity, with rates per 1,000 decisions; the number
    of episodes; the total cost (NaN when a record's cost was NaN).

    Raises ``ValueError`` for a record without the fields counted (see
    :meth:`AuditLog.invalid_records`).
    """
    for index, record in enumerate(records):
        problem = _summary_problem(record)
        if problem is not None:
            raise ValueError(f"record {index} (seq {_show(record.get('seq'))}): {problem}")
    steps = len(records)
    by_verdict = Counter(r["verdict"] for r in records)
    by_rule: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    cost = 0.0
    for r in records:
        cost += float(r.get("cost", 0.0))
        for v in r.get("violations", ()):
            by_rule[v["rule"]] += 1
            by_severity[v["severity"]] += 1

    def per_1000(n: int) -> float:
        return round(1000.0 * n / steps, 3) if steps else 0.0

    return {
        "decisions": steps,
        "episodes": _episodes(records),
        "total_cost": cost,
        "verdicts": dict(by_verdict),
        "violations_by_rule": {k: {"count": n, "per_1000": per_1000(n)} for k, n in by_rule.most_common()},
        "violations_by_severity": {k: {"count": n, "per_1000": per_1000(n)}
                                   for k, n in by_severity.most_common()},
    }
