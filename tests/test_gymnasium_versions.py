"""The core suite on the oldest supported Gymnasium (1.0.0) and on Ray's pin (1.2.2).

``make test`` installs those releases under ``.venv/compat/``; each run puts one first
on ``PYTHONPATH`` and runs the Gymnasium-facing tests against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / ".venv" / "compat"
SUITE = ["tests/test_wrapper.py", "tests/test_audit.py", "tests/test_compat_gymnasium.py"]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.0.0", "1.2.2"])
def test_suite_on_older_gymnasium(version: str) -> None:
    target = COMPAT / f"gymnasium-{version}"
    assert target.is_dir(), f"{target} is missing: `make test` installs it"
    env = {**os.environ, "PYTHONPATH": str(target)}
    check = subprocess.run([sys.executable, "-c", "import gymnasium; print(gymnasium.__version__)"],
                           env=env, capture_output=True, text=True, check=True)
    assert check.stdout.strip() == version
    suite = [path for path in SUITE if (ROOT / path).exists()]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-m", "not slow", *suite], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-4000:]
