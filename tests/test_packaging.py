"""The wheel ships envs/ and policies/; import govgym stays light."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("govgym-*.whl")
    return path


def test_wheel_contains_every_env_spec_and_policy(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("envs", "policies"):
        for path in (ROOT / folder).glob("*.yaml"):
            assert f"govgym/_data/{folder}/{path.name}" in names


def test_installed_wheel_makes_every_id_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import gymnasium as gym, govgym; "
        f"assert govgym.__file__.startswith({str(site)!r}), govgym.__file__; "
        "ids = sorted(govgym.ENV_SPECS); "
        "[gym.make(i).reset(seed=0) for i in ids]; "
        "gym.make('govgym:Governed-CartPole-v1'); print(len(ids))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(site), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 3


def test_import_govgym_imports_no_optional_dependency() -> None:
    code = ("import sys, govgym; "
            "print(sorted(m for m in ('torch', 'stable_baselines3', 'sb3_contrib', 'ray', "
            "'agentlightning', 'pydantic', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
