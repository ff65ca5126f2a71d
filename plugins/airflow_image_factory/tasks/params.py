"""Trigger forms: a request schema's plain JSON schema (policy.schema) as Airflow ``Param``s, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

from airflow_image_factory.policy.schema import RequestSchema
from airflow_image_factory.policy.settings import Settings


def param(schema: Mapping[str, Any]) -> Param:
    """One field's JSON schema (with its ``default`` and ``description``) as a ``Param``."""
    spec = dict(schema)
    default = spec.pop("default")
    return Param(default, description=spec.pop("description", None), **spec)


def request_params(schema: RequestSchema, settings: Settings) -> dict[str, Param]:
    """A DAG's ``params``: one ``Param`` per field of ``schema`` a conf may set, defaults from ``settings``."""
    return {name: param(field) for name, field in schema.json_schema(settings)["properties"].items()}
