"""BuildImageOperator's build avoidance against a small fake of the registry client (manifests and
config blobs only, as the real client reads them): which published image it reuses, and when it builds.
The stack test (tests/dags/test_build_images_stack.py) runs it against the real registry."""

from __future__ import annotations

import contextlib
import hashlib
import json

from airflow_image_factory.clients.content import CONTENT_KEY_LABEL
from airflow_image_factory.clients.registry import Manifest
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import ManifestNotFound
from airflow_image_factory.policy.request import validate_request
from airflow_image_factory.tasks.operators import BuildImageOperator

SHA = "c" * 40
KEY = "k" * 64


class FakeRegistryClient:
    """``tags``: tag → the content-key label of the image it names (None: an unlabelled image)."""

    def __init__(self, tags: dict[str, str | None]):
        self.manifests = {}
        self.configs = {}
        for tag, label in tags.items():
            config = {"config": {"Labels": {CONTENT_KEY_LABEL: label} if label else {}}}
            config_digest = "sha256:" + hashlib.sha256(json.dumps(config).encode() + tag.encode()).hexdigest()
            manifest = Manifest.from_bytes(json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": config_digest, "size": 2}, "layers": [{"size": 10}, {"size": 32}],
            }).encode())
            self.manifests[tag] = self.manifests[manifest.digest] = manifest
            self.configs[manifest.digest] = config
        self.read: list[str] = []

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        self.read.append(reference)
        if reference not in self.manifests:
            raise ManifestNotFound(f"{repository}:{reference} not found", status=404)
        return self.manifests[reference]

    def config_of(self, repository: str, manifest: Manifest, *, reference: str | None = None) -> dict:
        return self.configs[manifest.digest]


class FakeRegistryHook:
    def __init__(self, client: FakeRegistryClient):
        self.client = client

    @contextlib.contextmanager
    def get_conn(self):
        yield self.client


def operator(kind: str, **conf) -> BuildImageOperator:
    request = validate_request({"branch": "main", "python_versions": ["3.11"], **conf}, load_settings(env={}))
    return BuildImageOperator(task_id=f"build_{kind}", kind=kind, python="3.11", python_base=None,
                              build_request=request.with_sha(SHA).to_dict())


def reuse(kind: str, tags: dict[str, str | None], key: str | None = KEY, **conf):
    build = operator(kind, **conf)
    client = FakeRegistryClient(tags)
    return build.reuse_published(build.images[build.kind], key, FakeRegistryHook(client)), client


def test_a_published_sha_with_the_key_is_reused_without_reading_latest():
    summary, client = reuse("ci", {SHA: KEY, "latest": KEY})
    assert summary["reused"].endswith(f"/main/ci/python3.11:{SHA}")
    assert summary["digest"] == client.manifests[SHA].digest
    # the image id is the config digest (what `docker images` shows); the size the layers' sum
    assert summary["image_id"] == json.loads(client.manifests[SHA].raw)["config"]["digest"]
    assert summary["size"] == 42 and summary["steps"] == 0
    assert client.read == [SHA]


def test_latest_is_reused_when_the_sha_is_not_published():
    summary, client = reuse("prod", {"latest": KEY})
    assert summary["reused"].endswith("/main/prod/python3.11:latest")
    assert summary["digest"] == client.manifests["latest"].digest


def test_the_prod_build_stage_is_only_looked_up_as_latest():
    summary, client = reuse("prod-build", {SHA: KEY})  # a :SHA of the stage is never pushed after checks
    assert summary is None
    assert client.read == ["latest"]


def test_another_key_or_an_unlabelled_image_is_built():
    assert reuse("ci", {SHA: "other", "latest": None})[0] is None


def test_rebuild_local_cache_no_push_and_eager_upgrades_never_ask_the_registry():
    for conf, key in (({"rebuild": True}, KEY), ({"cache": "local"}, KEY), ({"push": False}, KEY), ({}, None)):
        summary, client = reuse("ci", {SHA: KEY}, key=key, **conf)
        assert summary is None and client.read == [], conf
