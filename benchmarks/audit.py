"""Cost of the flight recorder per record, and how fast the reader verifies a log.

Two record shapes, as ``GovernedEnv`` writes them for CartPole (proposal ``[1]``, no agent,
no ``extra``):

- ``clean``: verdict ``allow``, no violations, cost 0
- ``one_violation``: verdict ``warn``, one ``state_bounds`` violation (with ``stage`` and
  ``executed``), cost 1, reward delta -0.5

Three timings per shape, each over ``records`` calls to ``Recorder.append``:

- ``append_only``: ``flush_every`` larger than ``records``, so nothing is written in the
  loop: ``append`` serialises and hashes each record and buffers its line; the
  ``flush()`` that follows is timed on its own (``flush``: writing the buffered lines,
  per record)
- ``total``: the default ``flush_every`` (1,024), so flushes happen inside the loop, plus
  the final ``flush()``: a record's cost with the writes amortised over 1,024 records
  (serialising, hashing and writing all inside the timed region)
- ``per_episode``: as ``total``, with a ``flush()`` after every 22 records, as
  ``GovernedEnv`` flushes at every episode end and a CartPole episode under random
  actions is about 22 steps long (``overhead.py`` measures it): what a record costs in
  such a run. Shorter episodes (the SQL world's are at most 10 steps) cost more
- ``sha256``: ``hashlib.sha256(line).hexdigest()`` alone for every line of a finished log
  of the shape: the floor that a SHA-256 per record puts under any recorder of this
  format in CPython (OpenSSL's per-call setup dominates at these line lengths)
- ``read``: ``govgym.audit.read`` of a finished log of ``records`` records (parse every
  line, recompute every hash, check the chain); the file was just written, so it is read
  from the page cache

The recorder writes to a temporary folder and never calls ``fsync`` (neither does the
benchmark). Every (shape, timing) pair runs once per repeat, in an order rotated by one
per repeat; the headline is the median over repeats.

Run: ``python benchmarks/audit.py`` (about half a minute; ``--quick`` for a smoke test).
"""

from __future__ import annotations

import gc
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    base_parser,
    environment,
    environment_markdown,
    fmt_ns,
    markdown_table,
    publish,
    quick_banner,
    rotated,
    stats,
)

from govgym.audit import Recorder, read

TARGET_NS = 2_000.0
DEFAULT_FLUSH_EVERY = 1024

VIOLATION = {
    "rule": "envelope", "code": "out_of_bounds", "severity": "high",
    "message": "pole_angle=0.1312 outside [-0.12, 0.12]", "cost": 1.0,
    "stage": "post", "executed": True,
}
# shape -> (verdict, violations, cost, reward delta)
SHAPES: dict[str, tuple[str, list[dict[str, Any]], float, float]] = {
    "clean": ("allow", [], 0.0, 0.0),
    "one_violation": ("warn", [VIOLATION], 1.0, -0.5),
}
MODES = ("append_only", "total", "per_episode", "sha256", "read")
EPISODE_RECORDS = 22  # records between flushes in `per_episode`: CartPole's mean episode

FULL = {"repeats": 15, "records": 20_000}
QUICK = {"repeats": 2, "records": 300}


def _append_all(recorder: Recorder, shape: str, records: int) -> int:
    verdict, violations, cost, delta = SHAPES[shape]
    append = recorder.append
    gc.collect()
    start = time.perf_counter_ns()
    for step in range(records):
        append(0, step, [1], verdict, violations, cost, delta, extra=None)
    return time.perf_counter_ns() - start


def time_per_episode(path: Path, shape: str, records: int) -> float:
    """ns/record for appending with a flush after every ``EPISODE_RECORDS`` records."""
    verdict, violations, cost, delta = SHAPES[shape]
    recorder = Recorder(path, run_id="bench", flush_every=DEFAULT_FLUSH_EVERY)
    append, flush = recorder.append, recorder.flush
    gc.collect()
    start = time.perf_counter_ns()
    for step in range(records):
        append(0, step, [1], verdict, violations, cost, delta, extra=None)
        if step % EPISODE_RECORDS == EPISODE_RECORDS - 1:
            flush()
    flush()
    elapsed = time.perf_counter_ns() - start
    recorder.close()
    return elapsed / records


def time_append_only(path: Path, shape: str, records: int) -> tuple[float, float]:
    """(append ns/record, flush ns/record) with every record buffered before one flush."""
    recorder = Recorder(path, run_id="bench", flush_every=records + 1)
    appended = _append_all(recorder, shape, records)
    start = time.perf_counter_ns()
    recorder.flush()
    flushed = time.perf_counter_ns() - start
    recorder.close()
    return appended / records, flushed / records


def time_total(path: Path, shape: str, records: int) -> float:
    """ns/record for appending with the default ``flush_every``, final flush included."""
    recorder = Recorder(path, run_id="bench", flush_every=DEFAULT_FLUSH_EVERY)
    appended = _append_all(recorder, shape, records)
    start = time.perf_counter_ns()
    recorder.flush()
    flushed = time.perf_counter_ns() - start
    recorder.close()
    return (appended + flushed) / records


def time_read(path: Path, records: int) -> float:
    """ns/record for reading and verifying a log of ``records`` records."""
    gc.collect()
    start = time.perf_counter_ns()
    log = read(path)
    elapsed = time.perf_counter_ns() - start
    if not log.ok or len(log.records) != records:
        raise RuntimeError(f"benchmark log did not verify: {log.problem}")
    return elapsed / records


def time_sha256(lines: list[bytes]) -> float:
    """ns/record for a SHA-256 (hex) of each line alone."""
    sha256 = hashlib.sha256
    gc.collect()
    start = time.perf_counter_ns()
    for line in lines:
        sha256(line).hexdigest()
    return (time.perf_counter_ns() - start) / len(lines)


def harness_ns(records: int) -> float:
    """The append loop around a call that does nothing: included in append timings."""

    class Null:
        def append(self, *args: Any, **kwargs: Any) -> None:
            return None

    return _append_all(Null(), "clean", records) / records  # type: ignore[arg-type]


def run(params: dict[str, int], tmp: Path) -> dict[str, Any]:
    records = params["records"]
    logs: dict[str, Path] = {}
    for shape in SHAPES:  # the logs the reader verifies, written once
        logs[shape] = tmp / f"read-{shape}.jsonl"
        with Recorder(logs[shape], run_id="bench") as recorder:
            verdict, violations, cost, delta = SHAPES[shape]
            for step in range(records):
                recorder.append(0, step, [1], verdict, violations, cost, delta)
    lines = {shape: log.read_bytes().splitlines() for shape, log in logs.items()}
    tasks = [(shape, mode) for shape in SHAPES for mode in MODES]
    samples: dict[tuple[str, str], list[float]] = {t: [] for t in tasks}
    flush_samples: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    for repeat in range(params["repeats"]):
        for shape, mode in rotated(tasks, repeat):
            path = tmp / f"{shape}-{mode}.jsonl"
            path.unlink(missing_ok=True)
            if mode == "append_only":
                append_ns, flush_ns = time_append_only(path, shape, records)
                samples[shape, mode].append(append_ns)
                flush_samples[shape].append(flush_ns)
            elif mode == "total":
                samples[shape, mode].append(time_total(path, shape, records))
            elif mode == "per_episode":
                samples[shape, mode].append(time_per_episode(path, shape, records))
            elif mode == "sha256":
                samples[shape, mode].append(time_sha256(lines[shape]))
            else:
                samples[shape, mode].append(time_read(logs[shape], records))
    shapes: dict[str, Any] = {}
    for shape in SHAPES:
        read_stats = stats(samples[shape, "read"])
        size = logs[shape].stat().st_size
        shapes[shape] = {
            "append_only_ns_per_record": stats(samples[shape, "append_only"]),
            "flush_ns_per_record": stats(flush_samples[shape]),
            "total_ns_per_record": stats(samples[shape, "total"]),
            "per_episode_ns_per_record": stats(samples[shape, "per_episode"]),
            "sha256_ns_per_record": stats(samples[shape, "sha256"]),
            "read_ns_per_record": read_stats,
            "read_records_per_s": 1e9 / read_stats["median"],
            "read_mb_per_s": size / records * 1e9 / read_stats["median"] / 1e6,
            "bytes_per_record": size / records,
        }
    return {"shapes": shapes, "harness_ns_per_record": harness_ns(records)}


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for shape, s in result["shapes"].items():
        for key, how in (("total_ns_per_record", f"flush every {DEFAULT_FLUSH_EVERY:,} records"),
                         ("per_episode_ns_per_record",
                          f"flush every episode of {EPISODE_RECORDS} records")):
            value = s[key]["median"]
            out.append({"target": f"<= 2 us per record appended, {how} ({shape})",
                        "shape": shape, "timing": key, "measured": value, "limit": TARGET_NS,
                        "unit": "ns", "met": value <= TARGET_NS})
    return out


def to_markdown(data: dict[str, Any]) -> str:
    params, result = data["parameters"], data["result"]
    rows = []
    for shape, s in result["shapes"].items():
        rows.append([
            f"`{shape}`",
            fmt_ns(s["append_only_ns_per_record"]["median"]),
            fmt_ns(s["flush_ns_per_record"]["median"]),
            fmt_ns(s["total_ns_per_record"]["median"]),
            f"{fmt_ns(s['total_ns_per_record']['q1'])} - {fmt_ns(s['total_ns_per_record']['q3'])}",
            fmt_ns(s["per_episode_ns_per_record"]["median"]),
            fmt_ns(s["sha256_ns_per_record"]["median"]),
            f"{s['bytes_per_record']:.0f}",
        ])
    read_rows = [[f"`{shape}`", f"{s['read_records_per_s']:,.0f}",
                  fmt_ns(s["read_ns_per_record"]["median"]), f"{s['read_mb_per_s']:.1f}"]
                 for shape, s in result["shapes"].items()]
    target_rows = [[t["target"], fmt_ns(t["measured"]), "met" if t["met"] else "**MISSED**"]
                   for t in data["targets"]]
    parts = [
        "# govgym audit recorder: cost per record",
        quick_banner(data["quick"]),
        environment_markdown(data["environment"]),
        f"Parameters: {params['repeats']} repeats x {params['records']:,} records per timing, "
        f"(shape, timing) pairs interleaved in rotated order; median over repeats. "
        f"`append only` serialises, hashes and buffers every record (flush_every > records); "
        f"`flush` is the one flush after it (the write), per record; `total` uses "
        f"flush_every={DEFAULT_FLUSH_EVERY} and includes the final flush; `per episode` "
        f"also flushes after every {EPISODE_RECORDS} records, as GovernedEnv does at each "
        f"episode end (CartPole's mean episode under random actions). `SHA-256 alone` is "
        f"`hashlib.sha256(line).hexdigest()` of each line of such a log, nothing else: the "
        f"part of `total` that any per-record SHA-256 chain pays in CPython.",
        "## Writing",
        markdown_table(["record", "append only (serialise + hash)", "flush (write)",
                        "total (median)", "total IQR", "per episode (median)", "SHA-256 alone",
                        "bytes / record"], rows),
        f"Timing-loop cost included in append timings: "
        f"{fmt_ns(result['harness_ns_per_record'])}/record.",
        "## Reading and verifying the chain",
        markdown_table(["record", "records / s", "per record", "MB / s"], read_rows),
        "## Targets",
        markdown_table(["target", "measured", "result"], target_rows),
    ]
    return "\n\n".join(part for part in parts if part)


def main(argv: list[str] | None = None) -> int:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    params = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        params["repeats"] = args.repeats
    env_info = environment()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(params, Path(tmp))
    data: dict[str, Any] = {
        "benchmark": "audit",
        "quick": args.quick,
        "environment": env_info,
        "parameters": {**params, "flush_every": DEFAULT_FLUSH_EVERY,
                       "episode_records": EPISODE_RECORDS, "gc_enabled": True,
                       "fsync": False},
        "result": result,
        "wall_time_s": time.perf_counter() - started,
    }
    data["targets"] = verdicts(result)
    publish(args.out, "audit", data, to_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
