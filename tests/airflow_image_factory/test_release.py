"""Release policy: the tags a release publishes (a table), rebuilds after a new Python base, and the
release request's rules. Pure: no registry, no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequests, ReleaseRefused
from airflow_image_factory.policy.release import (
    ReleasedImage,
    ReleaseRequest,
    is_newest,
    plan_rebuilds,
    plan_release_tags,
    released_images,
    validate_release_request,
)

SETTINGS = load_settings(env={})
PYS = ("3.11", "3.13")


def tags_of(version, existing, pythons=PYS, default="3.11"):
    return {(t.tag, t.python) for t in plan_release_tags(version, pythons, default, existing)}


FULL_332 = {("3.3.2-python3.11", "3.11"), ("3.3.2-python3.13", "3.13"), ("3.3-python3.11", "3.11"),
            ("3.3-python3.13", "3.13"), ("3.3.2", "3.11"), ("latest", "3.11")}


@pytest.mark.parametrize(
    ("version", "existing", "expected"),
    [
        # first release into an empty repository: all four kinds of tags
        ("3.3.2", [], FULL_332),
        # newer than everything there
        ("3.3.2", ["3.3.1", "3.3.1-python3.11", "3.2.9", "latest", "3.3-python3.11"], FULL_332),
        # republishing the newest (a rebuild with a new base) moves its tags again
        ("3.3.2", ["3.3.2", "3.3.2-python3.11", "3.3.1"], FULL_332),
        # a patch of an older line: its own X.Y moves, latest stays with 3.3.x
        ("3.2.10", ["3.3.2", "3.2.9", "3.2.9-python3.11"],
         {("3.2.10-python3.11", "3.11"), ("3.2.10-python3.13", "3.13"), ("3.2-python3.11", "3.11"),
          ("3.2-python3.13", "3.13"), ("3.2.10", "3.11")}),
        # a back-port older than its line's newest: neither X.Y nor latest move back
        ("3.2.8", ["3.3.2", "3.2.9"],
         {("3.2.8-python3.11", "3.11"), ("3.2.8-python3.13", "3.13"), ("3.2.8", "3.11")}),
        # newer only per-Python tags exist (the default Python's bare tag may be missing): still older
        ("3.3.1", ["3.3.2-python3.13"],
         {("3.3.1-python3.11", "3.11"), ("3.3.1-python3.13", "3.13"), ("3.3.1", "3.11")}),
        # version order is numeric, not lexical
        ("3.10.0", ["3.9.5", "3.9.5-python3.11"],
         {("3.10.0-python3.11", "3.11"), ("3.10.0-python3.13", "3.13"), ("3.10-python3.11", "3.11"),
          ("3.10-python3.13", "3.13"), ("3.10.0", "3.11"), ("latest", "3.11")}),
        # a release candidate gets only its own tags, and never blocks a final release
        ("3.4.0rc1", ["3.3.2"],
         {("3.4.0rc1-python3.11", "3.11"), ("3.4.0rc1-python3.13", "3.13"), ("3.4.0rc1", "3.11")}),
        ("3.3.2", ["3.4.0rc1", "3.4.0rc1-python3.11", "nightly", "3.3-python3.11"], FULL_332),
    ],
)
def test_release_tags(version, existing, expected):
    assert tags_of(version, existing) == expected


def test_the_slim_variant_has_its_own_family_of_tags():
    slim = {(t.tag, t.python) for t in plan_release_tags("3.3.2", PYS, "3.11", [], "slim")}
    assert slim == {("slim-" + tag, python) for tag, python in FULL_332}
    # each family decides from its own tags: a newer slim release does not hold back the regular latest ...
    assert ("latest", "3.11") in tags_of("3.3.2", ["slim-3.4.0", "slim-3.4.0-python3.11", "slim-latest"])
    # ... and a newer regular release holds back slim-latest only through slim's own tags
    older = {t.tag for t in plan_release_tags("3.3.1", PYS, "3.11", ["3.3.2", "slim-3.3.2"], "slim")}
    assert "slim-latest" not in older and "slim-3.3-python3.11" not in older and "slim-3.3.1" in older
    assert "slim-latest" in {t.tag for t in plan_release_tags("3.3.1", PYS, "3.11", ["3.3.2"], "slim")}


def test_default_python_gets_the_bare_version_and_latest():
    tags = tags_of("3.3.2", [], default="3.13")
    assert ("3.3.2", "3.13") in tags and ("latest", "3.13") in tags


def test_default_python_must_be_released():
    with pytest.raises(ReleaseRefused, match="default Python"):
        plan_release_tags("3.3.2", PYS, "3.12", [])


def test_is_newest():
    assert is_newest("3.3.2", [])
    assert not is_newest("3.3.2", ["3.3.3-python3.11"])
    assert is_newest("3.2.10", ["3.3.0", "3.2.9"], same_minor=True)
    assert not is_newest("3.3.0rc1", [])


# ---- rebuilds ----------------------------------------------------------------------------------


def test_released_images_reads_per_python_release_tags_only():
    tags = ["latest", "3.3.2", "3.3-python3.11", "3.3.2-python3.11", "3.3.2-python3.13", "3.2.9-python3.11",
            "3.4.0rc1-python3.11", "main"]
    assert released_images(tags) == [("3.2.9", "3.11"), ("3.3.2", "3.11"), ("3.3.2", "3.13")]


OLD, NEW, OTHER = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64


@pytest.mark.parametrize(
    ("released", "current", "newest_only", "expected"),
    [
        # the base moved: rebuild; it did not: leave alone
        ([ReleasedImage("3.3.2", "3.11", OLD), ReleasedImage("3.3.2", "3.13", OTHER)],
         {"3.11": NEW, "3.13": OTHER}, False, ["3.3.2-python3.11"]),
        # every released patch on that Python, or only the newest of each X.Y line
        ([ReleasedImage("3.3.1", "3.11", OLD), ReleasedImage("3.3.2", "3.11", OLD),
          ReleasedImage("3.2.9", "3.11", OLD)],
         {"3.11": NEW}, False, ["3.2.9-python3.11", "3.3.1-python3.11", "3.3.2-python3.11"]),
        ([ReleasedImage("3.3.1", "3.11", OLD), ReleasedImage("3.3.2", "3.11", OLD),
          ReleasedImage("3.2.9", "3.11", OLD)],
         {"3.11": NEW}, True, ["3.2.9-python3.11", "3.3.2-python3.11"]),
        # nothing recorded, or no current digest for that Python: nothing says it is stale
        ([ReleasedImage("3.3.2", "3.11", None), ReleasedImage("3.3.2", "3.10", OLD)], {"3.11": NEW}, False, []),
        ([], {"3.11": NEW}, False, []),
    ],
)
def test_plan_rebuilds(released, current, newest_only, expected):
    rebuilds = plan_rebuilds(released, current, newest_patch_only=newest_only)
    assert [r.tag for r in rebuilds] == expected
    assert all(r.new_base_digest == current[r.python] for r in rebuilds)


# ---- the request -------------------------------------------------------------------------------


def test_release_request_defaults_and_constraints():
    r = validate_release_request({"version": "3.3.2", "python_versions": ["3.11", "3.13"],
                                  "default_python": "3.11", "registry": "localhost:5000"}, SETTINGS)
    assert r.constraints_for("3.13") == (
        "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.13.txt"
    )
    assert r.build["airflow_version"] == "3.3.2" and r.build["branch"] == "main" and r.build["push"] is True
    assert ReleaseRequest.from_dict(r.to_dict()) == r
    none = validate_release_request({"version": "3.3.2", "default_python": "3.12", "constraints_url": ""}, SETTINGS)
    assert none.constraints_for("3.12") == ""


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"version": "3.3"}, "version"),
        ({"version": "3.3.2.dev0"}, "version"),
        ({"version": "latest"}, "version"),
        ({"default_python": "3.10", "python_versions": ["3.11"]}, "default_python"),
        ({"python_versions": ["2.7"]}, "python_versions"),
        ({"repository": "Bad Repo"}, "repository"),
        ({"cache_branch": "no spaces"}, "cache_branch"),
        ({"constraints_url": "https://x/{branch}.txt"}, "constraints_url"),
        ({"constraints_url": "ftp://x/c.txt"}, "constraints_url"),
        ({"sha": "abc"}, "sha"),
    ],
)
def test_bad_release_request_names_the_field(conf, field):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request({"default_python": "3.12", **conf}, SETTINGS)
    assert field in [e.field for e in info.value.errors]
    assert str(info.value).startswith("invalid release request")


# ---- hardening: canonical versions, safe constraints templates, the conf's shape -------------------


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("03.3.2", "write '3.3.2'"),  # would publish 03.3.2 tags and, as "newest", move latest
        ("3.3.02", "write '3.3.2'"),
        ("3.4.0rc01", "write '3.4.0rc1'"),
        ("v3.3.2", "not a released version"),
        ("3.3.2.0", "not a released version"),
        ("3.3.2.post1", "not a released version"),  # release-only: no post or dev builds
        ("3.4.0RC1", "not a released version"),
        ("\uff13.3.2", "not a released version"),
        (332, "must be a string"),
    ],
)
def test_release_version_must_be_canonical(version, says):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request({"version": version, "default_python": "3.12"}, SETTINGS)
    assert [e.field for e in info.value.errors] == ["version"]  # not also "version" again via the build request
    assert says in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "",
        "https://raw.githubusercontent.com/apache/airflow/constraints-{version}/constraints-{python}.txt",
        "https://mirror.example.com:8443/c/{version}/{python}.txt?x=1",
        "https://example.com/fixed-constraints.txt",
    ],
)
def test_good_constraints_templates(template):
    from airflow_image_factory.policy.release import constraints_template_error

    assert constraints_template_error(template) is None
    r = validate_release_request({"version": "3.3.2", "default_python": "3.12", "constraints_url": template},
                                 SETTINGS)
    assert r.constraints_for("3.12") == template.format(version="3.3.2", python="3.12")


BAD_TEMPLATES = [
    "https://x.example/{version",  # malformed: crashed inside the build task
    "https://x.example/}",
    "https://x.example/{version:>99999999}.txt",  # expands into megabytes
    "https://x.example/{version.__class__}",  # walks attributes
    "https://x.example/{python[0]}",
    "https://x.example/{version!r}",
    "https://x.example/{}",
    "https://x.example/{0}",
    "https://x.example/{version:{python}}",
    "https://x.example/{branch}.txt",
    "http://x.example/c.txt",
    "ftp://x.example/c.txt",
    "file:///etc/passwd",  # the build container's own files
    "docker-context-files/../../etc/passwd",
    "../constraints.txt",
    "/etc/passwd",
    "HTTPS://x.example/c.txt",  # install_airflow.sh reads that as a path
    "https://{version}.example/c.txt",
    "https://user:secret@x.example/c.txt",
    "https://x.example/../c.txt",
    "https://x.example/a b.txt",
    "https://x.example/a'$(id)'.txt",
    "https://x.example:99999/c.txt",
    "https://-x.example/c.txt",
    "https://x.example/" + "a" * 3000,
]


@pytest.mark.parametrize("template", BAD_TEMPLATES, ids=[t[:40] for t in BAD_TEMPLATES])
def test_bad_constraints_templates_are_refused_at_validate(template):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request({"version": "3.3.2", "default_python": "3.12", "constraints_url": template},
                                 SETTINGS)
    assert [e.field for e in info.value.errors] == ["constraints_url"]
    assert len(str(info.value)) < 300


def test_a_bad_constraints_template_from_the_settings_is_refused_naming_the_setting():
    settings = load_settings(env={"IMAGE_FACTORY_RELEASE_CONSTRAINTS_URL": "https://x.example/{version:>99999999}"})
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request({"version": "3.3.2", "default_python": "3.12"}, settings)
    [error] = info.value.errors
    assert error.field == "constraints_url" and "release_constraints_url setting" in error.message


def test_constraints_location_refuses_a_template_that_skipped_validation():
    from airflow_image_factory.exceptions import InvalidBuildRequest
    from airflow_image_factory.policy.release import constraints_location

    with pytest.raises(InvalidBuildRequest, match="constraints_url"):
        constraints_location("https://x.example/{version.__init__.__globals__}", "3.3.2", "3.11")
    assert constraints_location("", "3.3.2", "3.11") == ""


@pytest.mark.parametrize("conf", [["version", "3.3.2"], "3.3.2", 3.3, [], ""])
def test_a_release_conf_that_is_not_an_object_is_refused(conf):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request(conf, SETTINGS)
    assert str(info.value).startswith("invalid release request (conf): conf: must be an object")


def test_release_errors_are_capped_and_deduplicated():
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request({"version": "3.3.2", "default_python": "3.12",
                                  "python_versions": ["3.99" + "x" * 300] * 100, "y" * 10_000: 1}, SETTINGS)
    assert all(len(str(e)) < 300 for e in info.value.errors)
    assert sum(e.field == "python_versions" for e in info.value.errors) == 1


# ---- the index lookup (index.py), against a loopback fake index ------------------------------------

SIMPLE_JSON = {
    "meta": {"api-version": "1.1"}, "name": "apache-airflow",
    "files": [
        {"filename": "apache_airflow-3.3.2-py3-none-any.whl", "yanked": False},
        {"filename": "apache_airflow-3.3.2.tar.gz", "yanked": False},
        {"filename": "apache_airflow-3.3.2rc1-py3-none-any.whl", "yanked": False},
        {"filename": "apache_airflow-3.2.0-py3-none-any.whl", "yanked": "broken"},
        {"filename": "apache_airflow_core-3.3.3-py3-none-any.whl", "yanked": False},  # another project's file
        {"filename": "apache-airflow-3.3.3.exe", "yanked": False},
    ],
}
SIMPLE_HTML = (
    "<html><body>"
    '<a href="https://files.example/apache_airflow-3.3.1-py3-none-any.whl#sha256=0">'
    "apache_airflow-3.3.1-py3-none-any.whl</a><br/>"
    '<a href="https://files.example/apache-airflow-1.10.2rc1.tar.gz">apache-airflow-1.10.2rc1.tar.gz</a><br/>'
    "</body></html>"
)


@pytest.fixture
def fake_index():
    """A loopback simple API: /json/ answers PEP 691 JSON, /html/ PEP 503 HTML, /down/ 503, /slow/ never."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Accept")))
            if self.path == "/json/apache-airflow/":
                self._answer(200, "application/vnd.pypi.simple.v1+json", json.dumps(SIMPLE_JSON).encode())
            elif self.path == "/html/apache-airflow/":
                self._answer(200, "text/html", SIMPLE_HTML.encode())
            elif self.path == "/down/apache-airflow/":
                self._answer(503, "text/plain", b"maintenance")
            elif self.path == "/garbage/apache-airflow/":
                self._answer(200, "application/vnd.pypi.simple.v1+json", b"{not json")
            elif self.path == "/slow/apache-airflow/":
                time.sleep(2)
                self._answer(200, "text/html", b"")
            else:
                self._answer(404, "text/plain", b"not found")

        def _answer(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_index_lookup_finds_a_release_in_json_and_html_pages(fake_index):
    from airflow_image_factory.clients.index import check_airflow_release

    base, seen = fake_index
    found = check_airflow_release("3.3.2", index_url=f"{base}/json")
    assert found.files == ("apache_airflow-3.3.2-py3-none-any.whl", "apache_airflow-3.3.2.tar.gz")
    assert not found.yanked
    assert check_airflow_release("3.2.0", index_url=f"{base}/json/").yanked
    assert check_airflow_release("3.3.1", index_url=f"{base}/html").files == ("apache_airflow-3.3.1-py3-none-any.whl",)
    assert check_airflow_release("1.10.2rc1", index_url=f"{base}/html").files == ("apache-airflow-1.10.2rc1.tar.gz",)
    assert len(seen) == 4 and "application/vnd.pypi.simple.v1+json" in seen[0][1]  # one request per lookup


@pytest.mark.parametrize("version", ["3.3.3", "3.3.2rc2", "3.3.1"])
def test_index_lookup_refuses_a_version_the_index_does_not_have(fake_index, version):
    from airflow_image_factory.clients.index import check_airflow_release
    from airflow_image_factory.exceptions import InvalidBuildRequest

    base, _ = fake_index
    with pytest.raises(InvalidBuildRequest) as info:
        check_airflow_release(version, index_url=f"{base}/json")
    assert info.value.field == "version"
    assert "airflow_version" in str(info.value) and base in str(info.value)


@pytest.mark.parametrize(("path", "says"), [("/down", "HTTP 503"), ("/missing", "no project apache-airflow"),
                                            ("/garbage", "unreadable")])
def test_index_lookup_fails_naming_the_index_when_it_does_not_answer_well(fake_index, path, says):
    from airflow_image_factory.clients.index import check_airflow_release
    from airflow_image_factory.exceptions import PackageIndexUnavailable

    base, _ = fake_index
    with pytest.raises(PackageIndexUnavailable, match=says) as info:
        check_airflow_release("3.3.2", index_url=base + path)
    assert base in str(info.value)


def test_index_lookup_fails_in_time_when_the_index_is_slow_or_gone(fake_index):
    import socket
    import time

    from airflow_image_factory.clients.index import check_airflow_release
    from airflow_image_factory.exceptions import PackageIndexUnavailable

    base, _ = fake_index
    started = time.monotonic()
    with pytest.raises(PackageIndexUnavailable, match="did not answer"):
        check_airflow_release("3.3.2", index_url=f"{base}/slow", timeout=0.3)
    assert time.monotonic() - started < 1.5
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(PackageIndexUnavailable, match=closed):
        check_airflow_release("3.3.2", index_url=closed, timeout=2)


def test_the_index_is_the_one_release_builds_install_from():
    from airflow_image_factory.clients.index import DEFAULT_INDEX_URL

    # The Dockerfiles give pip no other index, so the lookup must ask pip's default.
    root = Path(__file__).resolve().parents[2]
    dockerfiles = (root / "Dockerfile").read_text() + (root / "Dockerfile.ci").read_text()
    assert "index-url" not in dockerfiles and "INDEX_URL" not in dockerfiles
    assert DEFAULT_INDEX_URL == "https://pypi.org/simple"
