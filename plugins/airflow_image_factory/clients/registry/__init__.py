"""A small client for the OCI distribution (Docker registry v2) HTTP API, built on ``requests``.

It knows just enough to resolve, tag, copy and list images without pulling layers: manifests are
moved as raw bytes (so digests never change) and blobs travel between repositories of the same
registry by cross-repository mounts. No Airflow imports, so it can be used (and tested) anywhere.

Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or the Docker token
flow (Bearer). Transient failures (dropped connections, 5xx, 429) are retried by urllib3's
``Retry`` with capped exponential backoff and a capped ``Retry-After``.

The modules, each importing only those after it (pyproject.toml's import-linter contract):

- ``client``: :class:`RegistryClient` - tags, manifests, blobs, mounts, copy, delete;
- ``auth``: the challenge (Basic, Bearer token flow), credential scopes, where credentials may go;
- ``transport``: host and scheme, the session with its retries and back-off, timeouts, bounded
  reads, error text, :class:`RegistryStats`;
- ``manifest``: media types, :class:`Manifest` (index / image manifest), digests, config labels.

References are parsed in policy/reference.py (pure); its names are re-exported here, where the
callers have always found them.
"""

from airflow_image_factory.clients.registry.auth import DEFAULT_TOKEN_REALMS
from airflow_image_factory.clients.registry.client import RegistryClient
from airflow_image_factory.clients.registry.manifest import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    config_labels,
    image_index,
    platform_of,
)
from airflow_image_factory.clients.registry.transport import MAX_RESPONSE_BYTES, RegistryStats
from airflow_image_factory.policy.reference import (
    DOCKER_HUB,
    ImageReference,
    is_digest,
    parse_reference,
    split_image_reference,
)

__all__ = [
    "DEFAULT_TOKEN_REALMS",
    "DOCKER_HUB",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_RESPONSE_BYTES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "ImageReference",
    "Manifest",
    "RegistryClient",
    "RegistryStats",
    "config_labels",
    "image_index",
    "is_digest",
    "parse_reference",
    "platform_of",
    "split_image_reference",
]
