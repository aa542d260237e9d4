"""Shared helpers for the benchmark scripts: machine info, timing statistics, output.

Nothing here is specific to one benchmark. The scripts import it as ``_common`` (they
are run as files, ``python benchmarks/overhead.py``, so their folder is on ``sys.path``).
Outputs never contain machine-specific absolute paths or the host name.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_OUT",
    "REPO_ROOT",
    "base_parser",
    "environment",
    "environment_markdown",
    "fmt_ns",
    "markdown_table",
    "quick_banner",
    "rotated",
    "stats",
    "write_results",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PACKAGES = ("govgym", "gymnasium", "numpy")


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny repeat counts: checks that the script runs, measures nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for the JSON and markdown results "
                             "(default: benchmarks/results)")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    return parser


def _processor() -> str:
    name = platform.processor()
    if name and name not in {"x86_64", "aarch64", "arm64", "i386"}:
        return name
    try:  # Linux leaves platform.processor() empty or generic; the model name is here
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _versions(extra: Sequence[str] = ()) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in (*PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """Machine, interpreter, package versions (govgym, gymnasium, numpy and
    ``extra_packages``), source revision and date of this run."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "govgym", "policies")
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": _processor(),
            "cpu_count": os.cpu_count(),
            # other work on the machine at the start of the run: read the spread with it
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "packages": _versions(extra_packages),
        "source": {
            "commit": commit,
            # the benchmark measures the working tree, which may hold uncommitted edits
            "govgym_uncommitted_changes": None if dirty is None else bool(dirty),
        },
    }


def stats(samples: Sequence[float]) -> dict[str, float | int]:
    """Median (the headline number) and the spread of repeated measurements."""
    ordered = sorted(samples)
    n = len(ordered)
    if n >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
        "n": n,
    }


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """``items`` rotated by ``shift``: repeat ``r`` runs the variants starting at ``r``,
    so slow drift (thermal, other load) and position effects hit every variant alike."""
    k = shift % len(items)
    return list(items[k:]) + list(items[:k])


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:,.2f} us"
    return f"{ns:,.0f} ns"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_markdown(env: dict[str, Any]) -> str:
    m, py, pk, src = env["machine"], env["python"], env["packages"], env["source"]
    versions = ", ".join(f"{k} {v}" for k, v in pk.items())
    dirty = src.get("govgym_uncommitted_changes")
    revision = f"{src.get('commit')}" + (" + uncommitted changes in govgym/" if dirty else "")
    return "\n".join([
        f"- date (UTC): {env['date']}",
        f"- machine: {m['platform']}; {m['processor']}; {m['cpu_count']} CPUs; "
        f"1-min load average at start {m.get('load_average_1m')}",
        f"- python: {py['implementation']} {py['version']}",
        f"- packages: {versions}",
        f"- source revision: {revision}",
    ])


def quick_banner(quick: bool) -> str | None:
    if not quick:
        return None
    return ("**Quick mode** (smoke test): the repeat counts are far too small for these "
            "numbers to mean anything.")


def publish(out: Path, name: str, data: dict[str, Any], markdown: str) -> None:
    """:func:`write_results`, then print the markdown and where both files went."""
    json_path, md_path = write_results(out, name, data, markdown)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path.name} and {md_path.name} to {out}")


def write_results(out: Path, name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``out``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path
