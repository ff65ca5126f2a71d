"""RegistryClient against real distribution 2.8 registries (plain, htpasswd, token) - no mocks.

Faults come from a real HTTP proxy in front of a real registry (tests/support/fault_proxy.py).
"""

from __future__ import annotations

import hashlib
import logging
import time

import pytest
import requests

from airflow_image_factory.clients.registry import (
    DOCKER_MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageReference,
    Manifest,
    RegistryClient,
    config_labels,
    parse_reference,
    split_image_reference,
)
from airflow_image_factory.exceptions import (
    ManifestNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
)
from tests.support.fault_proxy import Fault, fault_proxy
from tests.support.oci_images import push_image, push_index
from tests.support.registry_servers import (
    TOKEN_READER,
    RegistryServer,
    free_port,
    running_registry,
    unique_repo,
)

# Brings the plain_registry / basic_registry / token_registry fixtures.
pytest_plugins = ["tests.support.registry_fixtures"]

pytestmark = pytest.mark.timeout(60)


def _no_blob_traffic(client: RegistryClient) -> None:
    stats = client.stats
    assert stats.blob_bytes_sent == 0
    assert stats.blob_bytes_received == 0
    assert stats.count("GET", "blob") == 0
    assert stats.count("PUT", "upload") == 0
    assert stats.count("PATCH", "upload") == 0


# --------------------------------------------------------------------------- references & setup


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost:5000/a/b:tag", ("localhost:5000", "a/b", "tag")),
        ("localhost/a", ("localhost", "a", "latest")),
        ("ubuntu", ("docker.io", "library/ubuntu", "latest")),
        ("docker.io/ubuntu:22.04", ("docker.io", "library/ubuntu", "22.04")),
        ("index.docker.io/apache/airflow:2.9.0", ("docker.io", "apache/airflow", "2.9.0")),
        ("apache/airflow:main-python3.10", ("docker.io", "apache/airflow", "main-python3.10")),
        ("ghcr.io/apache/airflow/main/ci/python3.10", ("ghcr.io", "apache/airflow/main/ci/python3.10", "latest")),
        ("127.0.0.1:5000/x:1", ("127.0.0.1:5000", "x", "1")),
        ("[::1]:5000/x:1", ("[::1]:5000", "x", "1")),
        ("Registry/x", ("Registry", "x", "latest")),  # upper case cannot be a repository
        ("ghcr.io/a/b:t@sha256:" + "a" * 64, ("ghcr.io", "a/b", "sha256:" + "a" * 64)),  # digest wins
    ],
)
def test_parse_reference(image: str, expected: tuple[str, str, str]) -> None:
    ref = parse_reference(image)
    assert ref == expected
    assert split_image_reference(image) == ref
    assert isinstance(ref, ImageReference)


@pytest.mark.parametrize("bad", ["", "a/B", "ghcr.io/a:bad tag", "a@sha256:short", "ghcr.io/"])
def test_parse_reference_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_reference(bad)


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("localhost", "http://localhost"),
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.9.9.9", "http://127.9.9.9"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("::1", "http://[::1]"),
        ("ghcr.io", "https://ghcr.io"),
        ("registry.example.com:8443", "https://registry.example.com:8443"),
        ("docker.io", "https://registry-1.docker.io"),
    ],
)
def test_scheme_and_api_host(host: str, base_url: str) -> None:
    assert RegistryClient(host).base_url == base_url
    assert RegistryClient(host, scheme="https").base_url.startswith("https://")


def test_repr_hides_password() -> None:
    client = RegistryClient("ghcr.io", username="bot", password="hunter2-secret")  # noqa: S106
    assert "hunter2-secret" not in repr(client)
    assert "bot" in repr(client)


# --------------------------------------------------------------------------- auth


def test_ping_anonymous(plain_registry: RegistryServer) -> None:
    assert plain_registry.client().ping()


def test_ping_basic(basic_registry: RegistryServer) -> None:
    client = basic_registry.client()
    assert client.ping()
    assert client.ping()  # credentials are then sent up front: no second 401 round trip
    assert client.stats.count("GET", "base") == 3


def test_basic_without_credentials(basic_registry: RegistryServer) -> None:
    with pytest.raises(RegistryAuthError, match="requires credentials") as err:
        basic_registry.client(anonymous=True).ping()
    assert basic_registry.host in str(err.value)


@pytest.mark.parametrize("flavour", ["basic", "token"])
def test_wrong_password(flavour: str, basic_registry: RegistryServer, token_registry: RegistryServer) -> None:
    server = basic_registry if flavour == "basic" else token_registry
    wrong = "wrong-Pa55word-xyz"
    client = server.client(password=wrong)
    with pytest.raises(RegistryAuthError) as err:
        client.ping()
    message = str(err.value)
    assert server.host in message
    assert repr(server.username) in message
    assert wrong not in message
    assert server.password not in message
    assert wrong not in repr(client)


def test_ping_token(token_registry: RegistryServer) -> None:
    assert token_registry.client().ping()
    assert token_registry.client(anonymous=True).ping()


def test_token_anonymous_pull_only(token_registry: RegistryServer) -> None:
    repo = unique_repo()
    image = push_image(token_registry.client(), repo, "v1")
    anonymous = token_registry.client(anonymous=True)
    assert anonymous.manifest_digest(repo, "v1") == image.digest
    with pytest.raises(RegistryAuthError) as err:
        anonymous.tag(repo, "v1", "v2")
    assert "anonymous" in str(err.value)


def test_token_anonymous_nothing(token_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = unique_repo()
    push_image(token_registry.client(), repo, "v1")
    monkeypatch.setattr(token_registry.token_server, "anonymous_actions", ())
    anonymous = token_registry.client(anonymous=True)
    assert anonymous.ping()  # /v2/ only needs a valid token, whatever it grants
    with pytest.raises(RegistryAuthError):
        anonymous.get_manifest(repo, "v1")


def test_token_reader_cannot_push(token_registry: RegistryServer) -> None:
    repo = unique_repo()
    image = push_image(token_registry.client(), repo, "v1")
    reader = token_registry.client(username=TOKEN_READER, password=token_registry.extra_users[TOKEN_READER])
    assert reader.get_manifest(repo, "v1").digest == image.digest
    with pytest.raises(RegistryAuthError, match=TOKEN_READER):
        reader.tag(repo, "v1", "v2")


def test_token_access_token_field(token_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_registry.token_server, "token_field", "access_token")
    repo = unique_repo()
    image = push_image(token_registry.client(), repo, "v1")
    assert token_registry.client().manifest_digest(repo, "v1") == image.digest


def test_tokens_are_cached_per_scope(token_registry: RegistryServer) -> None:
    repo = unique_repo()
    push_image(token_registry.client(), repo, "v1")
    client = token_registry.client()
    issued = token_registry.token_server.requests
    before = len(issued)
    for _ in range(3):
        client.manifest_digest(repo, "v1")
        client.get_manifest(repo, "v1")
    assert len(issued) - before == 1
    assert issued[-1].scopes == [f"repository:{repo}:pull"]
    client.tag(repo, "v1", "v2")  # needs push: one more token
    assert len(issued) - before == 2


def test_logs_hold_no_credentials(
    basic_registry: RegistryServer, token_registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repo = unique_repo()
    for server in (basic_registry, token_registry):
        client = server.client()
        push_image(client, repo, "v1")
        client.tag(repo, "v1", "v2")
        assert server.password not in caplog.text
    assert "Authorization" not in caplog.text
    assert "Bearer " not in caplog.text
    assert "Basic " not in caplog.text


# --------------------------------------------------------------------------- manifests


def test_manifest_digest_matches_body(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    digest = client.manifest_digest(repo, "v1")
    manifest = client.get_manifest(repo, "v1")
    assert digest == image.digest == manifest.digest
    assert digest == "sha256:" + hashlib.sha256(manifest.raw).hexdigest()
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.raw == image.manifest.raw
    assert client.manifest_digest(repo, digest) == digest
    assert client.get_manifest(repo, digest) == manifest


def test_manifest_digest_without_header(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    with fault_proxy(plain_registry.host, strip_response_headers=["Docker-Content-Digest"]) as proxy:
        via_proxy = RegistryClient(proxy.host)
        assert via_proxy.manifest_digest(repo, "v1") == image.digest
        assert via_proxy.stats.count("GET", "manifest") == 1  # fell back to hashing the body


def test_missing_manifest(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    push_image(client, repo, "v1")
    assert client.manifest_digest(repo, "nope") is None
    assert client.manifest_digest(unique_repo(), "v1") is None
    with pytest.raises(ManifestNotFound) as err:
        client.get_manifest(repo, "nope")
    assert err.value.status == 404
    assert repo in str(err.value)


def test_tag_moves_no_blobs(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    client.stats.reset()
    assert client.tag(repo, "v1", "latest") == image.digest
    assert client.stats.requests == {"GET manifest": 1, "PUT manifest": 1}
    _no_blob_traffic(client)
    assert client.manifest_digest(repo, "latest") == image.digest


def test_put_manifest_with_missing_blob_is_a_registry_error(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    with pytest.raises(RegistryError) as err:
        client.put_manifest(unique_repo(), "v1", image.manifest)  # blobs are not in that repository
    assert err.value.status == 400
    assert "MANIFEST_BLOB_UNKNOWN" in str(err.value)
    assert not isinstance(err.value, RegistryUnavailable | RegistryAuthError)


def test_delete_manifest(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    assert client.delete_manifest(repo, "v1") == image.digest
    assert client.manifest_digest(repo, image.digest) is None
    with pytest.raises(ManifestNotFound):
        client.delete_manifest(repo, "v1")


def test_delete_tag_removes_that_tag_only_or_says_the_registry_cannot(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    client.tag(repo, image.digest, "v2")
    try:
        client.delete_tag(repo, "v2")
    except RegistryError as exc:  # distribution 2.x deletes manifests only
        assert "does not delete tags, only manifests" in str(exc) and "v2 stays" in str(exc)
        assert client.manifest_digest(repo, "v2") == image.digest
    else:
        assert client.manifest_digest(repo, "v2") is None
    assert client.manifest_digest(repo, "v1") == image.digest  # never the manifest nor its other tags


# --------------------------------------------------------------------------- listing


def test_list_tags(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    push_image(client, repo, "t0")
    for i in range(1, 5):
        client.tag(repo, "t0", f"t{i}")
    # distribution 2.8 ignores ?n= on tags/list and answers everything in one page.
    assert sorted(client.list_tags(repo, page_size=2)) == ["t0", "t1", "t2", "t3", "t4"]
    assert client.list_tags(unique_repo()) == []


def test_list_tags_follows_link_pagination(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    push_image(client, repo, "t0")
    for i in range(1, 5):
        client.tag(repo, "t0", f"t{i}")
    with fault_proxy(plain_registry.host, paginate_tags=True) as proxy:
        paged = RegistryClient(proxy.host)
        assert paged.list_tags(repo, page_size=2) == ["t0", "t1", "t2", "t3", "t4"]
        assert paged.stats.count("GET", "tags") == 3


def test_catalog_pagination(tmp_path) -> None:
    # A registry of its own: the shared ones' catalogs grow with every test.
    with running_registry(tmp_path) as server:
        client = server.client()
        repos = sorted(unique_repo("cat") for _ in range(3))
        for repo in repos:
            push_image(client, repo, "v1")
        client.stats.reset()
        assert client.catalog(page_size=2) == repos
        assert client.stats.count("GET", "catalog") >= 2


def test_catalog_token(token_registry: RegistryServer) -> None:
    repo = unique_repo()
    client = token_registry.client()
    push_image(client, repo, "v1")
    assert repo in client.catalog()


# --------------------------------------------------------------------------- mounts & copies


def test_mount_blob(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    source, target = unique_repo(), unique_repo()
    image = push_image(client, source, "v1")
    client.stats.reset()
    assert not client.blob_exists(target, image.layer_digest)
    assert client.mount_blob(target, image.layer_digest, source) is True
    assert client.blob_exists(target, image.layer_digest)
    assert client.stats.mounts == 1
    _no_blob_traffic(client)


def test_mount_missing_blob_cancels_upload(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    source, target = unique_repo(), unique_repo()
    push_image(client, source, "v1")
    assert client.mount_blob(target, "sha256:" + "0" * 64, source) is False
    assert client.stats.mount_misses == 1
    assert client.stats.count("DELETE", "upload") == 1


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST_V2])
def test_copy_image(plain_registry: RegistryServer, media_type: str) -> None:
    client = plain_registry.client()
    source, target = unique_repo(), unique_repo()
    image = push_image(client, source, "v1", media_type=media_type)
    client.stats.reset()
    assert client.copy(source, "v1", target, "copied") == image.digest
    assert client.manifest_digest(target, "copied") == image.digest
    assert client.stats.mounts == 2  # config + layer
    _no_blob_traffic(client)
    client.stats.reset()
    assert client.copy(source, "v1", target, "again") == image.digest
    assert client.stats.mounts == 0  # everything was already there


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST_V2])
def test_copy_index(plain_registry: RegistryServer, media_type: str) -> None:
    client = plain_registry.client()
    source, target = unique_repo(), unique_repo()
    index = push_index(client, source, "multi", media_type=media_type)
    client.stats.reset()
    assert client.copy(source, "multi", target, "copied") == index.digest
    copied = client.get_manifest(target, "copied")
    assert copied.digest == index.digest
    assert copied.raw == index.manifest.raw
    assert copied.is_index
    for child in index.children:
        assert client.manifest_digest(target, child.digest) == child.digest
        for blob in child.blob_digests:
            assert client.blob_exists(target, blob)
    assert client.stats.mounts == 4
    _no_blob_traffic(client)


def test_copy_with_token_auth(token_registry: RegistryServer) -> None:
    source, target = unique_repo(), unique_repo()
    index = push_index(token_registry.client(), source, "multi")
    client = token_registry.client()
    issued = token_registry.token_server.requests
    before = len(issued)
    assert client.copy(source, "multi", target, "copied") == index.digest
    # One token covers the whole copy: pull on the source, pull+push on the target.
    assert len(issued) - before == 1
    assert sorted(issued[-1].scopes) == sorted([f"repository:{source}:pull", f"repository:{target}:pull,push"])
    _no_blob_traffic(client)


def test_copy_within_one_repository_is_a_tag(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    client.stats.reset()
    assert client.copy(repo, "v1", repo, "v2") == image.digest
    assert client.stats.requests == {"GET manifest": 1, "PUT manifest": 1}


# --------------------------------------------------------------------------- retries


@pytest.fixture
def pushed(plain_registry: RegistryServer) -> tuple[str, str]:
    repo = unique_repo()
    return repo, push_image(plain_registry.client(), repo, "v1").digest


def test_retries_503_then_passes(plain_registry: RegistryServer, pushed: tuple[str, str]) -> None:
    repo, digest = pushed
    with fault_proxy(plain_registry.host, Fault(503, times=2)) as proxy:
        client = RegistryClient(proxy.host, retries=3, backoff=0.05)
        assert client.get_manifest(repo, "v1").digest == digest
        assert proxy.outcomes() == ["fault 503", "fault 503", "forwarded 200"]
        assert client.stats.retries == 2
        assert client.stats.count("GET", "manifest") == 1  # one logical request


def test_retry_after_is_honoured(plain_registry: RegistryServer, pushed: tuple[str, str]) -> None:
    repo, digest = pushed
    with fault_proxy(plain_registry.host, Fault(429, retry_after="1")) as proxy:
        client = RegistryClient(proxy.host, retries=3, backoff=0.01)
        assert client.manifest_digest(repo, "v1") == digest
        first, second = proxy.events
        assert (first.outcome, second.outcome) == ("fault 429", "forwarded 200")
        assert second.at - first.at >= 0.95


def test_retry_after_is_capped(plain_registry: RegistryServer, pushed: tuple[str, str]) -> None:
    repo, digest = pushed
    with fault_proxy(plain_registry.host, Fault(503, retry_after="3600")) as proxy:
        client = RegistryClient(proxy.host, retries=3, backoff=0.01, max_backoff=0.2)
        started = time.monotonic()
        assert client.manifest_digest(repo, "v1") == digest
        assert time.monotonic() - started < 2


def test_always_503_gives_up(plain_registry: RegistryServer, pushed: tuple[str, str]) -> None:
    repo, _ = pushed
    with fault_proxy(plain_registry.host, Fault(503, times=None)) as proxy:
        host = proxy.host
        client = RegistryClient(host, retries=2, backoff=0.05)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as err:
            client.get_manifest(repo, "v1")
        assert time.monotonic() - started < 5
        assert len(proxy.events) == 3
    message = str(err.value)
    assert host in message
    assert f"GET /v2/{repo}/manifests/v1" in message
    assert "3 tries" in message
    assert "503" in message
    assert err.value.status == 503


def test_dropped_connection_is_retried(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    image = push_image(client, repo, "v1")
    # Drop a PUT too: uploads and manifest PUTs must be retried as well, not only GETs.
    with fault_proxy(
        plain_registry.host,
        Fault(drop=True),
        Fault(drop=True, match=lambda method, path: method == "PUT"),
    ) as proxy:
        via_proxy = RegistryClient(proxy.host, retries=3, backoff=0.05)
        assert via_proxy.tag(repo, "v1", "v2") == image.digest
        assert proxy.outcomes() == ["dropped", "forwarded 200", "dropped", "forwarded 201"]
        assert via_proxy.stats.retries == 2


def test_always_dropped_gives_up(plain_registry: RegistryServer, pushed: tuple[str, str]) -> None:
    repo, _ = pushed
    with fault_proxy(plain_registry.host, Fault(drop=True, times=None)) as proxy:
        host = proxy.host
        client = RegistryClient(host, retries=2, backoff=0.05)
        with pytest.raises(RegistryUnavailable, match=r"3 tries; last error") as err:
            client.manifest_digest(repo, "v1")
    assert host in str(err.value)


def test_connection_refused(tmp_path) -> None:
    client = RegistryClient(f"127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with pytest.raises(RegistryUnavailable, match="2 tries"):
        client.ping()


def test_session_is_used(plain_registry: RegistryServer) -> None:
    session = requests.Session()
    session.headers["X-Test"] = "1"
    client = RegistryClient(plain_registry.host, session=session)
    assert client.session is session
    assert client.ping()


def test_manifest_from_bytes() -> None:
    raw = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
    manifest = Manifest.from_bytes(raw)
    assert manifest.media_type == OCI_INDEX
    assert manifest.is_index
    assert manifest.digest == "sha256:" + hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- nightly helpers


def test_can_push_asks_the_registry_and_writes_nothing(
    plain_registry: RegistryServer, basic_registry: RegistryServer, token_registry: RegistryServer
) -> None:
    repo = unique_repo()
    assert plain_registry.client().can_push(repo)  # anonymous, but the registry lets anyone write
    assert basic_registry.client().can_push(repo)
    assert not basic_registry.client(anonymous=True).can_push(repo)
    assert not token_registry.client(anonymous=True).can_push(repo)  # anonymous may pull only
    assert repo not in plain_registry.client().catalog()  # the cancelled upload left no repository


def test_image_config_reads_labels_without_a_layer(plain_registry: RegistryServer) -> None:
    repo = unique_repo()
    client = plain_registry.client()
    push_image(client, repo, "v1")
    index = push_index(client, repo, "multi")
    reader = plain_registry.client()
    assert reader.image_config(repo, "v1")["config"]["Cmd"] == ["/hello"]
    assert reader.image_config(repo, "multi", platform="linux/arm64")["architecture"] == "arm64"
    assert reader.stats.blob_bytes_received < 1000  # two small configs, no layer
    with pytest.raises(ManifestNotFound):
        reader.image_config(repo, "multi", platform="linux/s390x")
    assert index.children


def test_config_of_a_manifest_already_read_gets_it_no_second_time(plain_registry: RegistryServer) -> None:
    repo = unique_repo()
    push_image(plain_registry.client(), repo, "v1")
    reader = plain_registry.client()
    manifest = reader.get_manifest(repo, "v1")
    config = reader.config_of(repo, manifest, reference="v1")
    assert config == reader.image_config(repo, "v1")
    assert config_labels(config) == dict(config["config"].get("Labels") or {})
    reader.stats.reset()
    reader.config_of(repo, manifest)
    assert reader.stats.count("GET", "manifest") == 0


# --------------------------------------------------------------------------- multi-platform images


def test_an_index_over_pushed_images_is_one_manifest_put_and_keeps_each_child(plain_registry: RegistryServer) -> None:
    from airflow_image_factory.clients.registry import image_index, platform_of

    client = plain_registry.client()
    repo = unique_repo()
    amd = push_image(client, repo, "sha-amd64", architecture="amd64", media_type=DOCKER_MANIFEST_V2)
    arm = push_image(client, repo, "sha-arm64", architecture="arm64", media_type=DOCKER_MANIFEST_V2)
    client.stats.reset()
    index = image_index([(client.get_manifest(repo, amd.digest), "linux/amd64"),
                         (client.get_manifest(repo, arm.digest), "linux/arm64")])
    assert client.put_manifest(repo, "sha", index) == index.digest
    assert client.stats.count("PUT", "manifest") == 1
    _no_blob_traffic(client)
    # what any client reads back: the OCI index media type, both children by digest, each with its platform
    raw = requests.get(f"{plain_registry.url}/v2/{repo}/manifests/sha", headers={"Accept": OCI_INDEX}, timeout=10)
    assert raw.headers["Content-Type"] == OCI_INDEX
    children = raw.json()["manifests"]
    assert [(c["digest"], c["mediaType"], platform_of(c)) for c in children] == [
        (amd.digest, DOCKER_MANIFEST_V2, "linux/amd64"), (arm.digest, DOCKER_MANIFEST_V2, "linux/arm64")]


def test_platform_manifest_picks_an_index_child_or_checks_a_plain_images_config(plain_registry: RegistryServer) -> None:
    client = plain_registry.client()
    repo = unique_repo()
    pushed = push_index(client, repo, "multi")
    amd_only = push_image(client, repo, "amd-only", architecture="amd64")
    assert client.platform_manifest(repo, "multi", "linux/arm64").digest == pushed.children[1].digest
    assert client.platform_manifest(repo, "multi", "linux/amd64").digest == pushed.children[0].digest
    assert client.platform_manifest(repo, "amd-only", "linux/amd64").digest == amd_only.digest
    # an amd64 image is never another platform's, and a missing tag is no image
    assert client.platform_manifest(repo, "amd-only", "linux/arm64") is None
    assert client.platform_manifest(repo, "multi", "linux/s390x") is None
    assert client.platform_manifest(repo, "nope", "linux/amd64") is None
