"""One client per outside system, each doing its I/O and nothing else: the OCI registry, the container
engine, git, the package index, the dependency resolver, the promotion locks, the sources checkout and the
settings file. Clients may use :mod:`~airflow_image_factory.policy`; they never import Airflow.
"""
