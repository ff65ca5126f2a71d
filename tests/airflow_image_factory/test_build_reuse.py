"""BuildImageOperator's build avoidance against a small fake of the registry client (manifests and
config blobs only, as the real client reads them): which published image it reuses, and when it builds.
The stack test (tests/dags/test_build_images_stack.py) runs it against the real registry."""

from __future__ import annotations

import contextlib
import hashlib
import json

from airflow_image_factory.clients.content import CONTENT_KEY_LABEL
from airflow_image_factory.clients.registry import Manifest, RegistryClient, image_index
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import ManifestNotFound
from airflow_image_factory.policy.request import validate_request
from airflow_image_factory.tasks.operators import BuildImageOperator

SHA = "c" * 40
KEY = "k" * 64


class FakeRegistryClient:
    """``tags``: tag → the content-key label of the linux/amd64 image it names (None: an unlabelled image),
    or platform → label for an index over one image per platform."""

    def __init__(self, tags: dict[str, str | dict[str, str] | None]):
        self.manifests = {}
        self.configs = {}
        for tag, label in tags.items():
            if isinstance(label, dict):
                children = [(self._image(f"{tag}/{p}", key, p), p) for p, key in label.items()]
                self.manifests[tag] = index = image_index(children)
                self.manifests[index.digest] = index
            else:
                self.manifests[tag] = self._image(tag, label, "linux/amd64")
        self.read: list[str] = []

    def _image(self, name: str, label: str | None, platform: str) -> Manifest:
        os_name, arch = platform.split("/")
        config = {"os": os_name, "architecture": arch,
                  "config": {"Labels": {CONTENT_KEY_LABEL: label} if label else {}}}
        config_digest = "sha256:" + hashlib.sha256(json.dumps(config).encode() + name.encode()).hexdigest()
        manifest = Manifest.from_bytes(json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": config_digest, "size": 2}, "layers": [{"size": 10}, {"size": 32}],
        }).encode())
        self.manifests[manifest.digest] = manifest
        self.configs[manifest.digest] = config
        return manifest

    # the real client's platform choice (index child, or a plain manifest's config) over this fake's reads
    platform_manifest = RegistryClient.platform_manifest

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


def reuse(kind: str, tags: dict, key: str | None = KEY, platform: str = "linux/amd64", **conf):
    build = operator(kind, **conf)
    client = FakeRegistryClient(tags)
    return build.reuse_published(build.images[build.kind], key, FakeRegistryHook(client), platform=platform), client


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


def test_each_platform_reuses_only_its_own_child_of_a_published_index():
    both = ["linux/amd64", "linux/arm64"]
    latest = {"latest": {"linux/amd64": "amd-key", "linux/arm64": "arm-key"}}
    summary, client = reuse("prod", latest, key="arm-key", platform="linux/arm64", platforms=both)
    arm_child = next(c for c in client.manifests["latest"].children if c["platform"]["architecture"] == "arm64")
    assert summary["reused"].endswith("/main/prod/python3.11:latest") and summary["digest"] == arm_child["digest"]
    # the amd64 child's key is not the arm64 build's, and a per-platform :SHA is looked up first
    assert reuse("prod", latest, key="amd-key", platform="linux/arm64", platforms=both)[0] is None
    assert reuse("prod", latest, key="arm-key", platform="linux/arm64", platforms=both)[1].read[0] == f"{SHA}-arm64"


def test_a_plain_image_of_another_platform_is_never_reused():
    # an amd64-only latest carrying the very key: still not an arm64 image
    assert reuse("prod", {"latest": KEY}, platform="linux/arm64", platforms=["linux/arm64"])[0] is None
    assert reuse("prod", {"latest": KEY}, platform="linux/amd64")[0] is not None
