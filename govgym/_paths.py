"""Where the shipped YAML folders are: inside the wheel, or at the top of a checkout."""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The ``envs`` or ``policies`` folder: ``govgym/_data/<name>`` in an installed
    wheel, the repository's top-level ``<name>/`` in an editable install."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name
