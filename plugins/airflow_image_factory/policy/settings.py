"""What the settings are and how layers of them merge: the defaults file < the environment < an Airflow Variable.

Pure: :mod:`airflow_image_factory.clients.settings_loader` reads the file and the environment.

Parse-time callers (DAG files) use :func:`load_settings` without Variables, so nothing is looked up
in the metadata database while a DAG file is parsed. Tasks pass the Variable's value in at run time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from airflow_image_factory.exceptions import SettingsError

ENV_PREFIX = "IMAGE_FACTORY_"
VARIABLE_NAME = "image_factory_settings"
# settings: evidence. "required" signs every pushed image's evidence and promotes only digests whose
# evidence verifies (policy/evidence.py); "off" makes and checks none (an Airflow without a signing key).
EVIDENCE_MODES = ("required", "off")
# The one home of these two defaults in code: the fallbacks of a request or sensor that does not carry its
# own (``default_debian`` and ``python_base_upstream`` of include/defaults.toml say the same, checked by a test).
DEFAULT_DEBIAN = "bookworm"
DEFAULT_PYTHON_BASE_UPSTREAM = "docker.io/library/python"

# The build-request fields a DAG param or run conf may set, each defaulting to the setting of that name
# (request_defaults). Kept here, below request.py, so this module needs nothing from it (no import cycle).
PARAM_NAMES = (
    "branch",
    "python_versions",
    "registry",
    "repository",
    "source_repo",
    "commit_sha",
    "cache",
    "push",
    "upgrade_to_newer_dependencies",
    "rebuild",
    "variants",
    "platforms",
    "airflow_version",
    "test_command",
    "naming",
)


@dataclass(frozen=True)
class Settings:
    branch: str
    python_versions: tuple[str, ...]
    registry: str
    repository: str
    source_repo: str
    commit_sha: str
    cache: str
    push: bool
    upgrade_to_newer_dependencies: bool
    rebuild: bool
    airflow_version: str
    test_command: str
    naming: str
    supported_python_versions: tuple[str, ...]
    default_python_version: str
    default_debian: str
    debian_for_python: Mapping[str, str]
    python_base_upstream: str
    python_base_mirror: str
    docker_cli: str
    buildx: bool
    extra_ca_bundle: str
    build_pool: str
    build_pool_slots: int
    push_retries: int
    registry_connections: Mapping[str, str]
    registry_default_conn_id: str
    nightly_schedule: str
    nightly_branches: tuple[str, ...]
    canonical_source_repo: str
    airflow_extras: str
    constraints_author: str
    promotion_lock_dir: str
    promotion_lock_timeout: int
    # locks.py: where the promotion lock is held (auto | postgres | file) and the Airflow Connection of
    # the PostgreSQL database that holds it (auto: PostgreSQL when that Connection exists)
    promotion_lock: str = "auto"
    promotion_lock_database: str = "image_factory_promotion_lock"
    # PROD variants (naming.VARIANTS) a build publishes, and the slim variant's extras (Airflow's: none)
    variants: tuple[str, ...] = ("regular",)
    # os/arch each image is built for (policy/platforms.py): several make every image an OCI index
    platforms: tuple[str, ...] = ("linux/amd64",)
    # the CI image's: it serves test runners, and another architecture's CI build under emulation takes hours
    ci_platforms: tuple[str, ...] = ("linux/amd64",)
    slim_airflow_extras: str = ""
    additional_python_deps: str = ""
    slim_additional_python_deps: str = ""
    ci_airflow_extras: str = ""  # empty: the regular variant's
    # engine housekeeping (housekeeping.py): defaults here too, so settings files from before still load
    remove_pushed_images: bool = True
    build_cache_keep_gb: int = 20
    # smoke deploys (deploy/): defaults here too, so settings files from before them still load
    smoke_mode: str = "auto"
    smoke_kubernetes_versions: tuple[str, ...] = ()
    smoke_kind_cluster_name: str = "airflow-smoke"
    smoke_kind_config: str = "kubernetes/kind-config.yaml"
    smoke_kind_node_image: str = ""
    smoke_helm_release: str = "airflow"
    smoke_helm_namespace: str = "airflow"
    smoke_helm_timeout: str = "10m0s"
    smoke_helm_retries: int = 3
    smoke_health_tries: int = 12
    smoke_health_interval: int = 10
    smoke_postgres_image: str = "docker.io/library/postgres:15-bookworm"
    smoke_timeout: int = 900
    # registry token realms (registry.py): hosts a registry's Bearer challenge may send credentials to
    # over plain http (https realms and the registry's own host:port need no entry)
    registry_token_realms: tuple[str, ...] = ("auth.docker.io", "ghcr.io")
    # registries / releases (release_images): defaults here too, like the smoke settings
    release_default_python: str = ""
    release_constraints_url: str = (
        "https://raw.githubusercontent.com/apache/airflow/constraints-{version}/constraints-{python}.txt"
    )
    # the branch's sources (git.py, sources.py): where fetched commits are cached on a worker
    sources_cache_dir: str = ""
    sources_cache_keep: int = 20
    git_timeout: int = 300
    # time bounds: every task's execution_timeout (minutes, per kind of step; read at parse time, so from
    # the file and the environment only) and the git ls-remote bound (seconds); defaults here too
    timeout_build_minutes: int = 120
    timeout_verify_minutes: int = 45
    timeout_push_minutes: int = 30
    timeout_promote_minutes: int = 60
    timeout_smoke_minutes: int = 60
    timeout_short_minutes: int = 10
    git_ls_remote_timeout: int = 30
    # the nightly's upgrade bisection (bisection.py): probe rounds per branch, fixed in the DAG (parse time)
    bisection_rounds: int = 19
    # an http Connection to this Airflow's REST API (host: its base URL; login, password) that writes the
    # bisection's summary as the run's note; absent: the note is not written (the Task SDK cannot)
    run_note_connection: str = "image_factory_airflow_api"
    # signed evidence (policy/evidence.py): "required" signs an SBOM, provenance and test results for every
    # pushed image and promotes only digests whose evidence verifies; "off" makes and checks none. The key:
    # an Airflow Connection whose password is an unencrypted PEM private key; the trusted public keys
    # (PEM text or a file's path; empty: that key's own public key)
    evidence: str = "required"
    signing_connection: str = "image_factory_signing"
    evidence_public_keys: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    def debian_for(self, python_version: str) -> str:
        return self.debian_for_python.get(python_version, self.default_debian)

    @property
    def python_base_source(self) -> str:
        """The repository python:X.Y-slim-<debian> is read from: the mirror when one is set."""
        return self.python_base_mirror or self.python_base_upstream

    @property
    def canonical_source(self) -> str:
        return self.canonical_source_repo or self.source_repo

    def request_defaults(self) -> dict[str, Any]:
        """The build-request part, in the shape DAG params and confs use."""
        return {name: plain(getattr(self, name)) for name in PARAM_NAMES}


def extras_of(text: str) -> tuple[str, ...]:
    """An extras setting (``"postgres, mysql"``) as a tuple: ``("postgres", "mysql")``."""
    return tuple(e.strip() for e in text.split(",") if e.strip())


def plain(value: Any) -> Any:
    """Tuples and mappings as the list and dict that JSON (params, confs, XCom) carries."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


_FIELD_TYPES = {f.name: f.type for f in fields(Settings) if f.name != "sources"}


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = _FIELD_TYPES[key]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise SettingsError(f"{origin}: {key} must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SettingsError(f"{origin}: {key} must be a whole number, got {value!r}")
        try:
            return int(value)
        except ValueError as exc:
            raise SettingsError(f"{origin}: {key} must be a whole number, got {value!r}") from exc
    if kind.startswith("tuple"):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{origin}: {key} must be a list of strings, got {value!r}")
        return tuple(value)
    if kind.startswith("Mapping"):
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise SettingsError(f"{origin}: {key} must be a table of strings, got {value!r}")
        return dict(value)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SettingsError(f"{origin}: {key} must be text, got {value!r}")
    return value


def parse_variable(variable: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The Variable's raw value (JSON text or a dict) as a mapping, or a SettingsError naming it."""
    if isinstance(variable, str):
        try:
            variable = json.loads(variable)
        except ValueError as exc:
            raise SettingsError(f"Variable {VARIABLE_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(variable, Mapping):
        raise SettingsError(f"Variable {VARIABLE_NAME} must be a JSON object")
    return variable


def merge_settings(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> Settings:
    """Later layers win; the first layer (the defaults file) must name every setting."""
    merged: dict[str, Any] = {}
    origins: list[str] = []
    for origin, values in layers:
        unknown = sorted(set(values) - set(_FIELD_TYPES))
        if unknown:
            raise SettingsError(f"{origin}: unknown setting(s) {', '.join(unknown)}")
        for key, value in values.items():
            merged[key] = _coerce(key, value, origin)
        if values:
            origins.append(origin)
    missing = sorted(set(_FIELD_TYPES) - set(merged))
    if missing:
        raise SettingsError(f"{layers[0][0]}: missing setting(s) {', '.join(missing)}")
    if merged["bisection_rounds"] < 1:
        raise SettingsError(
            f"bisection_rounds must be at least 1 (the round that confirms), got {merged['bisection_rounds']}"
        )
    if merged["build_cache_keep_gb"] < -1:
        raise SettingsError(
            f"build_cache_keep_gb must be -1 (leave the build cache alone) or a size in GiB, "
            f"got {merged['build_cache_keep_gb']}"
        )
    if merged["evidence"] not in EVIDENCE_MODES:
        raise SettingsError(f"evidence must be one of {', '.join(EVIDENCE_MODES)}, got {merged['evidence']!r}")
    _check_time_bounds(merged)
    return Settings(**merged, sources=tuple(origins))


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in _FIELD_TYPES:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is None:
            continue
        try:
            overrides[key] = json.loads(raw)
        except ValueError:
            overrides[key] = raw  # plain text is fine for strings and comma lists
        if isinstance(overrides[key], (int, float)) and _FIELD_TYPES[key] == "str":
            overrides[key] = raw  # e.g. a SHA made only of digits stays text
    return overrides


TIME_BOUNDS = tuple(f.name for f in fields(Settings) if f.name.startswith("timeout_") and f.name.endswith("_minutes"))


def _check_time_bounds(merged: Mapping[str, Any]) -> None:
    """A bound of 0 would fail every task at its start; a promotion bound under the lock wait would kill a
    waiting promotion before it can say who holds the lock."""
    for name in (*TIME_BOUNDS, "git_ls_remote_timeout", "git_timeout"):
        if name in merged and merged[name] < 1:
            raise SettingsError(f"{name} must be at least 1, got {merged[name]}")
    promote, lock_wait = merged.get("timeout_promote_minutes", 60), merged["promotion_lock_timeout"]
    if promote * 60 <= lock_wait:
        raise SettingsError(
            f"timeout_promote_minutes ({promote}) must be longer than promotion_lock_timeout ({lock_wait} s): "
            "promote_latest waits that long for the lock before it pushes anything"
        )
