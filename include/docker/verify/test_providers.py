"""Providers: the core ones and those of the image's extras are installed and import."""

from __future__ import annotations

import importlib
import os
import re
from importlib import metadata

import pytest

# Providers apache-airflow-core itself depends on: present in every image.
CORE_PROVIDERS = ["standard", "common-sql", "common-io", "common-compat", "smtp"]


def provider_entry_points():
    return sorted(metadata.entry_points(group="apache_airflow_provider"), key=lambda ep: ep.value)


def installed_providers() -> set[str]:
    prefix = "apache-airflow-providers-"
    names = set()
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower())
        if name.startswith(prefix):
            names.add(name[len(prefix) :])
    return names


def providers_of_extras(extras: list[str]) -> dict[str, set[str]]:
    """Which providers `apache-airflow[extra]` pulls in, read from its own metadata."""
    result: dict[str, set[str]] = {extra: set() for extra in extras}
    for requirement in metadata.requires("apache-airflow") or []:
        match = re.match(r"apache-airflow-providers-([a-z0-9-]+)", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if match and extra and extra.group(1) in result:
            result[extra.group(1)].add(match.group(1))
    return result


def provider_module(provider: str) -> str:
    return "airflow.providers." + provider.replace("-", ".")


@pytest.mark.parametrize("provider", CORE_PROVIDERS)
def test_core_provider_imports(provider):
    assert provider in installed_providers()
    importlib.import_module(provider_module(provider))


def test_extras_providers_are_installed():
    extras = [e.strip() for e in os.environ.get("IMAGE_AIRFLOW_EXTRAS", "").split(",") if e.strip()]
    if not extras:
        pytest.skip("IMAGE_AIRFLOW_EXTRAS is not set")
    installed = installed_providers()
    missing = {
        extra: sorted(providers - installed)
        for extra, providers in providers_of_extras(extras).items()
        if providers - installed
    }
    assert not missing, f"providers of extras missing: {missing}"


@pytest.mark.parametrize("entry_point", provider_entry_points(), ids=lambda ep: ep.value.split(":")[0])
def test_provider_info_loads(entry_point):
    info = entry_point.load()()
    assert info["package-name"].startswith("apache-airflow-providers-")
    importlib.import_module(provider_module(info["package-name"][len("apache-airflow-providers-") :]))


def test_providers_manager_sees_every_installed_provider():
    from airflow.providers_manager import ProvidersManager

    known = {name[len("apache-airflow-providers-") :] for name in ProvidersManager().providers}
    assert installed_providers() <= known


@pytest.mark.parametrize(
    ("provider", "hook"),
    [
        ("postgres", "airflow.providers.postgres.hooks.postgres:PostgresHook"),
        ("mysql", "airflow.providers.mysql.hooks.mysql:MySqlHook"),
        ("common-sql", "airflow.providers.common.sql.hooks.sql:DbApiHook"),
    ],
)
def test_database_hooks_import(provider, hook):
    if provider not in installed_providers():
        pytest.skip(f"provider {provider} is not installed")
    module, name = hook.split(":")
    assert getattr(importlib.import_module(module), name)
