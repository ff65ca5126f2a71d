"""Reads the settings: ``include/defaults.toml``, then the environment, then an Airflow Variable's value.

Parse-time callers (DAG files) call :func:`load_settings` without the Variable, so nothing is looked up in the
metadata database while a DAG file is parsed. Tasks pass the Variable's value in at run time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from airflow_image_factory.exceptions import SettingsError
from airflow_image_factory.policy.settings import (
    ENV_PREFIX,
    VARIABLE_NAME,
    Settings,
    env_overrides,
    merge_settings,
    parse_variable,
)

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["VARIABLE_NAME", "include_dir", "load_settings"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _find_defaults_file(env: Mapping[str, str] | None = None) -> Path:
    """The settings file ships in ``include/`` of the repository, or inside the installed package."""
    override = (os.environ if env is None else env).get(f"{ENV_PREFIX}DEFAULTS_FILE")
    if override:
        return Path(override)
    # Installed: include/ ships inside the package; from a checkout: include/ at the repository root.
    for folder in (PACKAGE_ROOT / "include", PACKAGE_ROOT.parents[1] / "include"):
        candidate = folder / "defaults.toml"
        if candidate.is_file():
            return candidate
    raise SettingsError(
        "include/defaults.toml not found next to the package; set IMAGE_FACTORY_DEFAULTS_FILE to its path"
    )


def include_dir() -> Path:
    """The folder with the non-Python assets (Dockerfiles' scripts, defaults, kind config)."""
    return _find_defaults_file().parent



@cache
def _file_values(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from exc


def load_settings(
    env: Mapping[str, str] | None = None, variable: str | Mapping[str, Any] | None = None
) -> Settings:
    """Merge file < environment < Variable. ``variable`` is the raw Variable value (JSON text or dict)."""
    env = os.environ if env is None else env
    path = _find_defaults_file(env)
    layers: list[tuple[str, Mapping[str, Any]]] = [(str(path), _file_values(path)), ("environment", env_overrides(env))]
    if variable:
        layers.append((f"Variable {VARIABLE_NAME}", parse_variable(variable)))
    return merge_settings(layers)
