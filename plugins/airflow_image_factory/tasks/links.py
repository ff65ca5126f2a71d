"""Operator extra links: from a task that pushed or published an image to the image's registry web page.

The operator records the image reference under the XCom key :data:`IMAGE_REF_XCOM_KEY`; the link turns
it into a URL with :func:`naming.web_url` (ghcr.io's percent-encoded package page, GitHub Packages,
Docker Hub, or a plain registry's tags list). Airflow evaluates links in the worker when the task ends
and stores the URL, so the UI needs no registry access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_image_factory.policy.naming import ImageName, web_url
from airflow_image_factory.policy.reference import parse_reference

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

IMAGE_REF_XCOM_KEY = "image_ref"


def image_web_url(image_ref: str | None) -> str:
    """``REG/PATH:TAG`` (or ``@digest``) → the registry's web page of that image; "" when there is none."""
    if not image_ref:
        return ""
    reference = parse_reference(image_ref)
    return web_url(ImageName(reference.registry, reference.repository))


class RegistryImageLink(BaseOperatorLink):
    """"Image in registry": the web page of the image the task pushed or published."""

    name = "Image in registry"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return image_web_url(XCom.get_value(ti_key=ti_key, key=IMAGE_REF_XCOM_KEY))


def record_image_ref(context: Any, image_ref: str) -> None:
    """Called by an operator's execute(): remember which image the link points at."""
    context["ti"].xcom_push(key=IMAGE_REF_XCOM_KEY, value=image_ref)
