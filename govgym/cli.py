"""The ``govgym`` command.

    govgym envs                    registered ids with their world and policy
    govgym policy list             shipped policies
    govgym policy show NAME|FILE   a policy's rules and verdicts, as validated
    govgym policy check FILE|DIR.. validate policy files, or every one in a folder (exit 1 if any is invalid)
    govgym audit verify FILE       check an audit log's hash chain (exit 1 if broken, or
                                   if a recorder's session lacks its close record:
                                   --allow-open reports that instead);
                                   --last-hash HASH: and that it still holds that record
    govgym audit summary FILE      violations by rule and severity, rates per 1,000
    govgym sql check [--policy P] SQL   the verdict on one statement, without running it
                                   (exit 0 if it would run, 1 if not)

Exit codes: 0 success, 1 the thing checked is bad (invalid policy, broken chain),
2 the command itself was wrong (unknown name, missing file, bad arguments).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from govgym.audit import AuditLog
    from govgym.kernel import Policy

__all__ = ["main"]


def _cmd_envs(args: argparse.Namespace) -> int:
    from govgym.registration import ENV_SPECS

    width = max((len(i) for i in ENV_SPECS), default=2)
    for env_id, spec in sorted(ENV_SPECS.items()):
        policy = spec.policy if isinstance(spec.policy, str) else "<inline>"
        print(f"{env_id:<{width}}  world={spec.world}  policy={policy}")
        if args.verbose and spec.description:
            print(f"{'':<{width}}  {spec.description}")
    return 0


def _cmd_policy_list(args: argparse.Namespace) -> int:
    from govgym.kernel import available_policies, load_policy

    for name in available_policies():
        policy = load_policy(name)
        print(f"{name:<24} {len(policy.rules)} rule(s)  {policy.description}")
    return 0


def _load_policy(spec: str | Path) -> Policy:
    """``load_policy(spec)``, its rules built once to be sure they can be; any failure is a
    ``PolicyError`` that names ``spec``: a user's file never ends in a traceback."""
    from govgym.kernel import Kernel, PolicyError, load_policy

    try:
        policy = load_policy(spec)
        Kernel(policy)
    except PolicyError:
        raise
    except Exception as exc:  # a loader or rule that fails on this input: say so, in one line
        raise PolicyError(str(spec), [("file", _unexpected(exc))]) from None
    return policy


def _unexpected(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    return f"cannot be used: {type(exc).__name__}: {' '.join(str(exc).split())}"


def _cmd_policy_show(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    print(f"# {policy.name} ({policy.source})")
    print(yaml.safe_dump(policy.to_dict(), sort_keys=False).rstrip())
    return 0


def _cmd_policy_check(args: argparse.Namespace) -> int:
    from govgym.kernel import PolicyError

    status = 0
    files: list[str] = []
    for given in args.files:
        if Path(given).is_dir():  # a folder: every policy file in it
            found = sorted(str(p) for p in Path(given).iterdir()
                           if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                print(f"{given}: a folder with no policy files (*.yaml, *.yml)", file=sys.stderr)
                status = max(status, 2)
            files.extend(found)
        else:
            files.append(given)
    for file in files:
        if not Path(file).is_file():
            print(f"{file}: no such file", file=sys.stderr)
            status = max(status, 2)
            continue
        try:
            policy = _load_policy(Path(file))
        except PolicyError as exc:
            print(exc, file=sys.stderr)
            status = max(status, 1)
            continue
        print(f"{file}: ok (policy {policy.name!r}, {len(policy.rules)} rule(s))")
    return status


def _open_log(file: str) -> AuditLog:
    from govgym.audit import read

    path = Path(file)
    if not path.exists():
        raise FileNotFoundError(file)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not an audit log", file)
    if not path.is_file():  # /dev/null, a FIFO, a socket
        raise OSError(errno.EINVAL, "not a regular file, not an audit log", file)
    return read(file)


def _not_a_log(file: str, log: AuditLog) -> bool:
    if log.not_a_log:
        print(f"{file}:{log.first_broken}: {log.problem}", file=sys.stderr)
    return log.not_a_log


def _invalid_records(file: str, log: AuditLog, shown: int = 10) -> bool:
    """Report the records a summary cannot count (the first ``shown`` of them)."""
    invalid = log.invalid_records()
    for line, problem in invalid[:shown]:
        print(f"{file}:{line}: invalid record: {problem}", file=sys.stderr)
    if len(invalid) > shown:
        print(f"{file}: {len(invalid) - shown} more invalid record(s)", file=sys.stderr)
    return bool(invalid)


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    log = _open_log(args.file)
    if _not_a_log(args.file, log):
        return 1
    for line in log.torn:
        print(f"{args.file}:{line}: torn record (cut off mid-write), skipped")
    if not log.ok:
        print(f"{args.file}:{log.first_broken}: chain broken: {log.problem} "
              f"({len(log.records)} record(s) verified before it)", file=sys.stderr)
        return 1
    expected = args.last_hash
    if expected is not None:
        after = log.records_after(expected)
        if after is None:
            print(f"{args.file}: no record has the hash {expected}: records were cut off the "
                  f"end of the log or rewritten ({len(log.records)} record(s) verified, "
                  f"last hash {log.last_hash})", file=sys.stderr)
            return 1
    unclosed = log.unclosed
    for session in unclosed:
        print(f"{args.file}:{session.first_line}: {session.describe()}",
              file=sys.stdout if args.allow_open else sys.stderr)
    if unclosed and not args.allow_open:
        print(f"{args.file}: chain intact, but {len(unclosed)} of {len(log.sessions)} "
              "session(s) not closed: the log may be missing decisions (--allow-open for a "
              "log still being written)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok, {len(log.records)} decision(s) in {len(log.sessions)} session(s)"
          f"{f' ({len(unclosed)} not closed)' if unclosed else ''}, chain intact, "
          f"last hash {log.last_hash}")
    if expected is not None:
        print(f"{args.file}: the record with hash {expected[:16]}... is "
              + ("the last one" if after == 0 else f"followed by {after} decision(s) appended after it"))
    return 0


def _sha256_hex(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise argparse.ArgumentTypeError(f"a record hash is 64 lowercase hex digits, got {text!r}")
    return text


def _cmd_audit_summary(args: argparse.Namespace) -> int:
    from govgym.audit import summarize

    log = _open_log(args.file)
    if _not_a_log(args.file, log) or _invalid_records(args.file, log):
        return 1
    summary = summarize(log.records)
    summary["chain_ok"] = log.ok
    summary["sessions"] = len(log.sessions)
    summary["unclosed_sessions"] = [
        {"run": s.run, "first_line": s.first_line, "last_line": s.last_line,
         "decisions": s.decisions} for s in log.unclosed]
    if not log.ok:  # the counts cover what verified: say where it stopped, and why
        summary["chain_broken_at_line"] = log.first_broken
        summary["chain_problem"] = log.problem
        print(f"{args.file}:{log.first_broken}: chain broken: {log.problem}; the summary "
              f"counts only the {len(log.records)} record(s) before it", file=sys.stderr)
    if args.json:
        from govgym.audit import strict_json

        # strict JSON has no NaN: a non-finite total as the recorder writes one ("NaN")
        print(json.dumps(strict_json(summary), indent=2, allow_nan=False))
    else:
        print(f"{args.file}: {summary['decisions']} decisions, {summary['episodes']} episode(s), "
              f"total cost {summary['total_cost']:.4g}, chain {'ok' if log.ok else 'BROKEN'}, "
              f"{len(log.sessions)} session(s)"
              + (f", {len(log.unclosed)} NOT CLOSED (decisions may be missing)" if log.unclosed else ""))
        print("verdicts: " + ", ".join(f"{k}={v}" for k, v in summary["verdicts"].items()))
        for title, key in (("by rule", "violations_by_rule"), ("by severity", "violations_by_severity")):
            print(f"violations {title}:" + ("" if summary[key] else " none"))
            for name, row in summary[key].items():
                print(f"  {name:<24} {row['count']:>8}  {row['per_1000']:>10.3f} per 1,000 decisions")
    return 0 if log.ok else 1


def _cmd_sql_check(args: argparse.Namespace) -> int:
    from govgym.rules.sql import check_sql

    report = check_sql(args.sql, _load_policy(args.policy))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"verdict: {report['verdict']} (policy {report['policy']})")
        for v in report["violations"]:
            print(f"  [{v['severity']}] {v['rule']}/{v['code']}: {v['message']}")
        engine = report["engine"]
        if engine["denied"]:
            print("engine would deny: " + "; ".join(str(r) for r in engine.get("reasons", [])))
        else:
            print("engine's authorizer would allow it (its row caps and VM/time budgets "
                  "are checked when the statement runs)")
    return 0 if report["verdict"] in ("allow", "warn") else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="govgym", description="Governed RL environments.")
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="list registered govgym env ids")
    envs.add_argument("-v", "--verbose", action="store_true", help="also print descriptions")
    envs.set_defaults(func=_cmd_envs)

    policy = sub.add_parser("policy", help="list, show or check governance policies")
    psub = policy.add_subparsers(dest="action", required=True)
    psub.add_parser("list", help="shipped policies").set_defaults(func=_cmd_policy_list)
    show = psub.add_parser("show", help="print a policy as validated")
    show.add_argument("policy", help="a shipped policy name or a YAML file")
    show.set_defaults(func=_cmd_policy_show)
    check = psub.add_parser("check", help="validate policy files (a folder: every one in it)")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=_cmd_policy_check)

    audit = sub.add_parser("audit", help="verify or summarise an audit log")
    asub = audit.add_subparsers(dest="action", required=True)
    verify = asub.add_parser("verify", help="check the hash chain")
    verify.add_argument("file")
    verify.add_argument("--last-hash", type=_sha256_hex, default=None, metavar="HASH",
                        help="the log's last hash as recorded apart from it (Recorder."
                             "last_hash): exit 1 if no record has it (records were cut off)")
    verify.add_argument("--allow-open", action="store_true",
                        help="a session without its close record (a log still being written) "
                             "is reported, not a failure")
    verify.set_defaults(func=_cmd_audit_verify)
    summary = asub.add_parser("summary", help="violations by rule and severity")
    summary.add_argument("file")
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    summary.set_defaults(func=_cmd_audit_summary)

    sql = sub.add_parser("sql", help="judge SQL statements with an sql policy")
    ssub = sql.add_subparsers(dest="action", required=True)
    sql_check = ssub.add_parser("check", help="the verdict on one statement (not run)")
    sql_check.add_argument("sql", help="the statement, quoted")
    sql_check.add_argument("--policy", default="sql-safety", help="policy name or YAML file")
    sql_check.add_argument("--json", action="store_true", help="machine-readable output")
    sql_check.set_defaults(func=_cmd_sql_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    try:
        return int(args.func(args))
    except FileNotFoundError as exc:
        print(f"govgym: no such file: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`govgym ... | head -1`): nothing to say
        # (as the Python docs advise: stdout to devnull, or the flush at exit raises again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE (128 + 13)
    except OSError as exc:  # a file that exists but cannot be read (permissions, a device)
        if exc.filename is None:
            print(f"govgym: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"govgym: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a PolicyError or other bad input, named by the layer that found it
        print(f"govgym: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
