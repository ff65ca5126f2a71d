"""The Airflow plugin of the image factory: registers its operator extra links with Airflow.

Loaded through the ``airflow.plugins`` entry point of the installed package (pyproject.toml). The
operators declare their links themselves; registering the link class here lets Airflow (de)serialize
and show them for every task that carries one.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_image_factory.tasks.links import RegistryImageLink


class ImageFactoryPlugin(AirflowPlugin):
    name = "airflow_image_factory"
    operator_extra_links = [RegistryImageLink()]
