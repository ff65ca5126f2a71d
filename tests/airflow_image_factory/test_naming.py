"""Every image name that appears in the seeds, made by the naming strategies."""

from __future__ import annotations

import pytest

from airflow_image_factory.policy.naming import (
    CONVENTIONS,
    ImageKind,
    ImageName,
    ImageSet,
    NamingContext,
    image_set,
    split_repository,
    web_url,
)

SHA = "cd27124534b46c9688a1d89e75fcd137ab5137e3"


def ctx(branch="main", python="3.8", debian="buster", registry="ghcr.io", repository="apache/airflow"):
    return NamingContext(registry=registry, repository=repository, branch=branch, python=python, debian=debian)


SEED_NAMES = [
    # seed 000, "/" convention
    ("slash", ImageKind.PYTHON_BASE, ctx(), None, "ghcr.io/apache/airflow/main/python:3.8-slim-buster"),
    ("slash", ImageKind.CI, ctx(), "latest", "ghcr.io/apache/airflow/main/ci/python3.8:latest"),
    ("slash", ImageKind.CI, ctx(python="3.6"), SHA, f"ghcr.io/apache/airflow/main/ci/python3.6:{SHA}"),
    ("slash", ImageKind.CI_MANIFEST, ctx(), "latest", "ghcr.io/apache/airflow/main/ci-manifest/python3.8:latest"),
    (
        "slash", ImageKind.CI_MANIFEST, ctx(python="3.6"), "latest",
        "ghcr.io/apache/airflow/main/ci-manifest/python3.6:latest",
    ),
    ("slash", ImageKind.PROD, ctx(), "latest", "ghcr.io/apache/airflow/main/prod/python3.8:latest"),
    ("slash", ImageKind.PROD, ctx(), SHA, f"ghcr.io/apache/airflow/main/prod/python3.8:{SHA}"),
    ("slash", ImageKind.PROD_BUILD, ctx(), "latest", "ghcr.io/apache/airflow/main/prod-build/python3.8:latest"),
    ("slash", ImageKind.KUBERNETES, ctx(), "latest", "ghcr.io/apache/airflow/main/kubernetes/python3.8:latest"),
    (
        "slash", ImageKind.CI, ctx(branch="v2-1-test", python="3.9"), "latest",
        "ghcr.io/apache/airflow/v2-1-test/ci/python3.9:latest",
    ),
    # seed 000 (removed lines) and 001: the "-v2" ghcr.io convention
    ("ghcr-v2", ImageKind.CI, ctx(python="3.6"), SHA, f"ghcr.io/apache/airflow-main-python3.6-ci-v2:{SHA}"),
    ("ghcr-v2", ImageKind.CI, ctx(), "latest", "ghcr.io/apache/airflow-main-python3.8-ci-v2:latest"),
    (
        "ghcr-v2", ImageKind.CI_MANIFEST, ctx(python="3.6"), "latest",
        "ghcr.io/apache/airflow-main-python3.6-ci-v2-manifest:latest",
    ),
    ("ghcr-v2", ImageKind.PROD, ctx(), SHA, f"ghcr.io/apache/airflow-main-python3.8-v2:{SHA}"),
    ("ghcr-v2", ImageKind.PROD_BUILD, ctx(), "latest", "ghcr.io/apache/airflow-main-python3.8-build-v2:latest"),
    ("ghcr-v2", ImageKind.PYTHON_BASE, ctx(python="3.6"), None, "ghcr.io/apache/airflow-python-v2:3.6-slim-buster"),
    ("ghcr-v2", ImageKind.KUBERNETES, ctx(), "latest", "ghcr.io/apache/airflow-main-python3.8-v2-kubernetes:latest"),
    # seed 001: GitHub Packages wants OWNER/REPO/IMAGE
    (
        "github-packages", ImageKind.CI, ctx(registry="docker.pkg.github.com", branch="master"), "latest",
        "docker.pkg.github.com/apache/airflow/master-python3.8-ci-v2:latest",
    ),
    (
        "github-packages", ImageKind.PROD, ctx(registry="docker.pkg.github.com", branch="master"), SHA,
        f"docker.pkg.github.com/apache/airflow/master-python3.8-v2:{SHA}",
    ),
    (
        "github-packages", ImageKind.PYTHON_BASE, ctx(registry="docker.pkg.github.com"), None,
        "docker.pkg.github.com/apache/airflow/python-v2:3.8-slim-buster",
    ),
    # the slim PROD variant: its own image and build stage in every convention
    ("slash", ImageKind.PROD_SLIM, ctx(), SHA, f"ghcr.io/apache/airflow/main/prod-slim/python3.8:{SHA}"),
    ("slash", ImageKind.PROD_SLIM_BUILD, ctx(), "latest",
     "ghcr.io/apache/airflow/main/prod-slim-build/python3.8:latest"),
    ("ghcr-v2", ImageKind.PROD_SLIM, ctx(), "latest", "ghcr.io/apache/airflow-main-python3.8-slim-v2:latest"),
    ("ghcr-v2", ImageKind.PROD_SLIM_BUILD, ctx(), "latest",
     "ghcr.io/apache/airflow-main-python3.8-slim-build-v2:latest"),
]


@pytest.mark.parametrize(("naming", "kind", "context", "tag", "expected"), SEED_NAMES)
def test_seed_names(naming, kind, context, tag, expected):
    assert CONVENTIONS[naming].image(kind, context).ref(tag) == expected


def test_every_convention_names_every_kind_distinctly():
    for convention in CONVENTIONS.values():
        names = {convention.image(kind, ctx()).ref("latest") for kind in ImageKind}
        assert len(names) == len(ImageKind), convention.key


def test_image_set_for_the_local_stack():
    images = image_set(
        registry="localhost:5000", repository="apache/airflow", branch="main", python="3.11",
        debian="bookworm", naming="slash", python_base_source="localhost:5000/library/python",
    )
    assert images.ci.ref(SHA) == f"localhost:5000/apache/airflow/main/ci/python3.11:{SHA}"
    assert images.python_base.ref() == "localhost:5000/apache/airflow/main/python:3.11-slim-bookworm"
    assert images.python_base.promoted_tag == "3.11-slim-bookworm"
    assert images.prod.promoted_tag == "latest"
    assert images.upstream_python_base.ref() == "localhost:5000/library/python:3.11-slim-bookworm"
    # seed 000: the local manifest image is named after branch and Python, never pushed
    assert images.local_ci_manifest.ref("latest") == "local-airflow-ci-manifest/main/python3.11:latest"
    assert images[ImageKind.PROD_BUILD] == images.prod_build
    assert ImageSet.from_dict(images.to_dict()) == images


def test_upstream_default_is_docker_hub_library():
    images = image_set(
        registry="ghcr.io", repository="apache/airflow", branch="main", python="3.12",
        debian="bookworm", naming="slash", python_base_source="python",
    )
    assert images.upstream_python_base.ref() == "docker.io/library/python:3.12-slim-bookworm"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("python", ("docker.io", "library/python")),
        ("docker.io/library/python", ("docker.io", "library/python")),
        ("apache/airflow", ("docker.io", "apache/airflow")),
        ("localhost:5000/library/python", ("localhost:5000", "library/python")),
        ("localhost/x", ("localhost", "x")),
        ("mirror.example.com/python", ("mirror.example.com", "python")),
    ],
)
def test_split_repository(reference, expected):
    assert split_repository(reference) == expected


def test_ghcr_web_page_percent_encodes_slashes():
    # the example link of seed 000
    image = CONVENTIONS["slash"].image(ImageKind.CI, ctx())
    assert web_url(image) == "https://github.com/apache/airflow/pkgs/container/airflow%2Fmain%2Fci%2Fpython3.8"


def test_other_web_pages():
    assert web_url(ImageName("localhost:5000", "apache/airflow/main/ci/python3.11")) == (
        "http://localhost:5000/v2/apache/airflow/main/ci/python3.11/tags/list"
    )
    assert web_url(ImageName("docker.io", "library/python")) == "https://hub.docker.com/_/python"
    assert web_url(ImageName("docker.pkg.github.com", "apache/airflow/master-python3.8-ci-v2")) == (
        "https://github.com/apache/airflow/packages"
    )
    assert web_url(ImageName("registry.example.com", "a/b")) == "https://registry.example.com/v2/a/b/tags/list"


def test_ref_by_digest_and_missing_tag():
    image = ImageName("ghcr.io", "apache/airflow/main/prod/python3.8")
    digest = "sha256:" + "a" * 64
    assert image.ref(digest) == f"ghcr.io/apache/airflow/main/prod/python3.8@{digest}"
    with pytest.raises(ValueError, match="no fixed tag"):
        image.ref()


def test_variants_name_their_kinds_and_release_tags():
    from airflow_image_factory.policy.naming import VARIANTS, release_tag, variant_kinds, variant_of

    assert list(VARIANTS) == ["regular", "slim"]
    assert variant_of(ImageKind.PROD_SLIM_BUILD) is VARIANTS["slim"] and variant_of(ImageKind.CI) is None
    assert variant_kinds(("slim", "regular")) == (ImageKind.PROD_BUILD, ImageKind.PROD, ImageKind.PROD_SLIM_BUILD,
                                                  ImageKind.PROD_SLIM)
    # Airflow's own release tags: the slim ones are prefixed
    assert release_tag("3.3.2", "3.11") == "3.3.2-python3.11"
    assert release_tag("3.3.2", "3.11", "slim") == "slim-3.3.2-python3.11"
    assert release_tag("3.3.2", variant="slim") == "slim-3.3.2"
    assert VARIANTS["slim"].release_tag("latest") == "slim-latest"
