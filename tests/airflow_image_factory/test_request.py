"""Every bad value is rejected with the field's name; good values come out normalised."""

from __future__ import annotations

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.request import BuildRequest, validate_request

SETTINGS = load_settings(env={})


def valid(**conf):
    return validate_request(conf, SETTINGS)


def test_defaults_make_a_valid_request():
    request = valid()
    assert request.branch == "main"
    assert request.registry == "ghcr.io"
    assert request.repository == "apache/airflow"
    assert request.cache == "pulled"
    assert request.commit_sha is None
    assert request.debian["3.13"] == "trixie" and request.debian["3.11"] == "bookworm"
    assert request.python_base_source == "docker.io/library/python"


def test_values_are_normalised():
    request = valid(
        repository="Apache/Airflow", registry="LOCALHOST:5000", commit_sha="ABCDEF1", test_command="  ",
        python_versions=["3.13", "3.11"],
    )
    assert request.repository == "apache/airflow"
    assert request.registry == "localhost:5000"
    assert request.commit_sha == "abcdef1"
    assert request.test_command is None
    assert request.python_versions == ("3.13", "3.11")


def test_variants_default_to_regular_and_keep_one_order():
    assert valid().variants == ("regular",)
    request = valid(variants=["slim", "regular"])
    assert request.variants == ("regular", "slim")
    assert BuildRequest.from_dict(request.to_dict()) == request


def test_round_trip_through_xcom_dict():
    request = valid(branch="v2-1-test", commit_sha="a" * 40, test_command="pytest -k 'not slow'")
    assert BuildRequest.from_dict(request.to_dict()) == request
    assert request.with_sha("b" * 40).commit_sha == "b" * 40


@pytest.mark.parametrize(
    "branch", ["main", "v2-1-test", "feature/new-image", "release_3.3", "a", "constraints-main"]
)
def test_good_branches(branch):
    assert valid(branch=branch).branch == branch


BAD = [
    ("branch", ""),
    ("branch", "has space"),
    ("branch", "a..b"),
    ("branch", "Main"),
    ("branch", "main;rm -rf /"),
    ("branch", "$(reboot)"),
    ("branch", "`id`"),
    ("branch", "-main"),
    ("branch", "main/"),
    ("branch", "x.lock"),
    ("branch", "a//b"),
    ("branch", "tag@{1}"),
    ("branch", "a" * 101),
    ("branch", 7),
    ("branch", None),
    ("python_versions", []),
    ("python_versions", "3.11"),
    ("python_versions", ["3.11", "3.11"]),
    ("python_versions", ["3.99"]),
    ("python_versions", ["2.7"]),
    ("python_versions", ["3.11; id"]),
    ("python_versions", [3.11]),
    ("registry", "ghcr io"),
    ("registry", "https://ghcr.io"),
    ("registry", "localhost:99999"),
    ("registry", "ghcr.io/apache"),
    ("registry", ""),
    ("repository", "apache//airflow"),
    ("repository", "apache/air flow"),
    ("repository", "apache/airflow;ls"),
    ("repository", "-apache/airflow"),
    ("source_repo", "--upload-pack=evil"),
    ("source_repo", "https://example.com/repo.git; rm -rf /"),
    ("source_repo", "relative/path"),
    ("source_repo", "/srv/../etc"),
    ("source_repo", "https://exa mple.com/x"),
    ("commit_sha", "not-a-sha"),
    ("commit_sha", "abc"),
    ("commit_sha", "g" * 40),
    ("commit_sha", 12345678),
    ("cache", "remote"),
    ("cache", ""),
    ("push", "yes"),
    ("push", 1),
    ("upgrade_to_newer_dependencies", "false"),
    ("airflow_version", "latest"),
    ("airflow_version", "3.3"),
    ("airflow_version", "3.3.2; id"),
    ("test_command", ["pytest"]),
    ("test_command", "a\x00b"),
    ("naming", "dash"),
    ("variants", []),
    ("variants", "slim"),
    ("variants", ["alpine"]),
    ("variants", ["slim", "slim"]),
    ("variants", [None]),
    ("variants", [["slim"]]),  # an unhashable item: refused like any other, not a TypeError
    ("unknown_field", "x"),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:60] for f, v in BAD])
def test_bad_values_name_their_field(field, value):
    with pytest.raises(InvalidBuildRequest) as error:
        valid(**{field: value})
    assert error.value.field == field
    assert field in str(error.value)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidBuildRequests) as error:
        valid(branch="Bad Branch", cache="nope", commit_sha="xyz")
    assert {e.field for e in error.value.errors} == {"branch", "cache", "commit_sha"}
    message = str(error.value)
    assert "branch" in message and "cache" in message and "commit_sha" in message


def test_allowed_extra_fields_pass():
    assert validate_request({"dry_run": True}, SETTINGS, allowed_extra=("dry_run",)).branch == "main"


# ---- hardening: versions in canonical form, git refs as git sees them, URLs ssh cannot misread ---------


@pytest.mark.parametrize("version", ["3.3.2", "3.4.0rc1", "3.3.2.post1", "3.4.0.dev0", "10.0.0b2"])
def test_canonical_airflow_versions_pass(version):
    assert valid(airflow_version=version).airflow_version == version


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("03.3.2", "write '3.3.2'"),  # would install 3.3.2 but tag 03.3.2
        ("3.3.02", "write '3.3.2'"),
        ("3.4.0rc01", "write '3.4.0rc1'"),
        ("v3.3.2", "not a release version"),
        ("3.3.2.0", "not a release version"),
        ("3.4.0RC1", "not a release version"),
        ("\uff13.3.2", "not a release version"),  # FULLWIDTH DIGIT THREE matches \d without re.ASCII
        ("9" * 5000 + ".0.0", "not a release version"),  # int() refuses 5000 digits: no bare ValueError
    ],
)
def test_non_canonical_airflow_versions_are_refused(version, says):
    with pytest.raises(InvalidBuildRequests) as info:
        valid(airflow_version=version)
    assert [e.field for e in info.value.errors] == ["airflow_version"]
    assert says in str(info.value)
    assert len(str(info.value)) < 300


# (name, git check-ref-format --branch accepts it, our rule accepts it). Ours must never accept what git
# refuses; it refuses more (image-path rule: lower case, [a-z0-9] components with . _ - between them).
BRANCH_TABLE = [
    ("main", True, True), ("v2-1-test", True, True), ("feature/new-image", True, True),
    ("release_3.3", True, True), ("x.lock.y", True, True), ("a.lock1/b", True, True), ("head", True, True),
    # a component ending in .lock or starting with '.', anywhere in the name
    ("feature.lock/x", False, False), ("a/b.lock/c", False, False), ("x.lock", False, False),
    ("lock.lock", False, False), (".hidden/x", False, False), ("a/.b", False, False), ("a/.b/c", False, False),
    ("a/./b", False, False), ("a/../b", False, False), (".", False, False),
    # git's other rules
    ("-x", False, False), ("a..b", False, False), ("a/", False, False), ("/a", False, False),
    ("a//b", False, False), ("foo.", False, False), ("a@{1}", False, False), ("a b", False, False),
    ("a\tb", False, False), ("a~1", False, False), ("a^", False, False), ("a:b", False, False),
    ("a?", False, False), ("a*", False, False), ("a[b", False, False), ("a\\b", False, False),
    ("a\x7fb", False, False), ("HEAD", False, False), ("a.lock/", False, False),
    # git accepts; image names cannot hold them
    ("Main", True, False), ("@", True, False), ("a+b", True, False), ("a_-b/-x", True, False),
    ("caf\u00e9", True, False),
]


def _git_accepts_branch(name: str) -> bool:
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.fail("git is needed to prove the branch rule")
    result = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, check=False)
    return result.returncode == 0


@pytest.mark.parametrize(("name", "git", "ours"), BRANCH_TABLE, ids=[repr(n) for n, _, _ in BRANCH_TABLE])
def test_branch_rule_against_git_check_ref_format(name, git, ours):
    """Proven against git itself, not asserted: the table's git column is what git says today."""
    from airflow_image_factory.policy.request import _branch_error

    assert _git_accepts_branch(name) is git
    assert (_branch_error(name) is None) is ours, _branch_error(name)
    assert git or not ours, "our rule accepts a name git refuses"


@pytest.mark.parametrize(
    "source_repo",
    [
        "https://github.com/apache/airflow.git", "ssh://git@github.com:22/apache/airflow.git",
        "git@github.com:apache/airflow.git", "git://example.com/airflow.git", "file:///srv/airflow.git",
        "/srv/airflow.git", "https://git.example.com:8443/a/b",
    ],
)
def test_good_source_repos(source_repo):
    assert valid(source_repo=source_repo).source_repo == source_repo


@pytest.mark.parametrize(
    "source_repo",
    [
        "ssh://-oProxyCommand=touch%20pwned/x",  # ssh would read the host as an option
        "ssh://-oProxyCommand=id/x",
        "git://-x/y",
        "ssh://-user@host/x",
        "ssh://git@-host/x",
        "-x@host:path",
        "user@-host:path",
        "user@host-:path",
        "https://user:secret@github.com/x",  # a password in a URL ends up in logs
        "ssh://host:99999/x",
        "ssh://host:0/x",
        "https:///x",
        "https://ho%2dst/x",
        "/srv/" + "a" * 1000,
    ],
)
def test_source_repos_with_option_like_hosts_are_refused(source_repo):
    with pytest.raises(InvalidBuildRequests) as info:
        valid(source_repo=source_repo)
    assert [e.field for e in info.value.errors] == ["source_repo"]
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("registry", "\u212aocalhost:5000"),  # KELVIN SIGN lower-cases to an ASCII "k"
        ("registry", "localhost:\uff15000"),  # FULLWIDTH DIGIT FIVE: \d and int() took it
        ("repository", "apache/\u212a8s"),
        ("branch", "m\u0430in"),  # CYRILLIC SMALL LETTER A
        ("python_versions", ["3.1\u0661"]),  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_unicode_lookalikes_are_refused(field, value):
    with pytest.raises(InvalidBuildRequests) as info:
        valid(**{field: value})
    assert [e.field for e in info.value.errors] == [field]
    assert str(info.value).isascii()  # the message shows the lookalike escaped, not as a twin


# ---- the conf's shape, and how errors echo values ------------------------------------------------


@pytest.mark.parametrize("conf", [["branch", "main"], [["branch", "main"]], "branch=main", 7, 1.5, True])
def test_a_conf_that_is_not_an_object_is_refused_naming_conf(conf):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_request(conf, SETTINGS)
    assert [e.field for e in info.value.errors] == ["conf"]
    assert "conf: must be an object" in str(info.value)


def _nested(depth: int, leaf="3.11"):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_deep_nesting_is_refused_naming_the_field_without_recursion():
    import sys

    deep = _nested(sys.getrecursionlimit() * 20)  # far past what repr() or a recursive walk survive
    with pytest.raises(InvalidBuildRequests) as info:
        valid(python_versions=deep, test_command=_nested(40), branch={"a": _nested(33)})
    assert {e.field for e in info.value.errors} == {"python_versions", "test_command", "branch"}
    assert "nested more than 32 levels" in str(info.value)


def test_nesting_within_the_bound_is_looked_at_normally():
    with pytest.raises(InvalidBuildRequests) as info:
        valid(python_versions=[_nested(30)])
    assert 'is not a Python version of the form "3.Y"' in str(info.value)


def test_huge_values_are_refused_and_never_echoed_whole():
    with pytest.raises(InvalidBuildRequests) as info:
        valid(python_versions=["x"] * 20_000, source_repo="/" + "a" * 100_000, cache="c" * 10_000)
    fields = {e.field for e in info.value.errors}
    assert fields == {"python_versions", "source_repo", "cache"}
    assert all(len(str(e)) < 300 for e in info.value.errors)


def test_echoed_values_are_capped():
    from airflow_image_factory.policy.request import MAX_SHOWN, show

    assert show("main") == "'main'"
    assert len(show("x" * 10_000)) <= MAX_SHOWN
    assert show("a\x00b") == "'a\\x00b'"
    assert show("m\u0430in") == "'m\\u0430in'"
    assert show(10**5000).startswith("<")  # repr() of this raises ValueError
    assert len(show({"k" * 500: ["v" * 500] * 500})) <= MAX_SHOWN
    assert show(None) == "None" and show(True) == "True" and show(1.5) == "1.5"
    assert show(object()) == "<object>"


def test_unknown_field_names_are_capped_and_counted():
    conf = {"x" * 10_000: 1, **{f"extra{i}": i for i in range(50)}}
    with pytest.raises(InvalidBuildRequests) as info:
        validate_request(conf, SETTINGS)
    errors = info.value.errors
    assert len(errors) == 6  # five named, the rest counted
    assert errors[-1].field == "conf" and "and 46 more unknown fields" in errors[-1].message
    assert all(len(e.field) <= 40 and len(str(e)) < 300 for e in errors)
    assert len(str(info.value)) < 2000


def test_repeated_problems_are_reported_once_with_a_count():
    with pytest.raises(InvalidBuildRequests) as info:
        valid(python_versions=["3.11"] + ["3.11"] * 100)
    assert [str(e) for e in info.value.errors] == [
        "python_versions: 3.11 is listed more than once (repeated 100 times)"
    ]
    with pytest.raises(InvalidBuildRequests) as info:
        valid(python_versions=["3.99; " + "x" * 400] * 100)
    [error] = info.value.errors
    assert "(repeated 100 times)" in error.message and len(str(error)) < 200


def test_many_different_problems_of_one_field_are_counted():
    with pytest.raises(InvalidBuildRequests) as info:
        valid(python_versions=[f"bad{i}" for i in range(40)])
    errors = info.value.errors
    assert len(errors) == 6 and errors[-1].message == "and 35 more problems"


@pytest.mark.parametrize("value", ["{{ var.value.secret }}", "{% if 1 %}x{% endif %}", ["{{ conn.x.password }}"]])
def test_template_markers_are_refused_in_every_field_but_the_shell_command(value):
    for field in ("branch", "source_repo", "python_versions"):
        with pytest.raises(InvalidBuildRequests) as info:
            valid(**{field: value})
        assert [e.field for e in info.value.errors] == [field]
        assert "template markers" in str(info.value)


def test_a_test_command_may_hold_go_template_braces_and_stays_unrendered():
    command = "docker version -f '{{.Server.Version}}' && echo '{% raw %}'"
    assert valid(test_command=command).test_command == command


def test_values_that_are_not_json_are_refused():
    with pytest.raises(InvalidBuildRequests) as info:
        valid(branch=b"main", python_versions=[{1: "x"}])
    assert {e.field for e in info.value.errors} == {"branch", "python_versions"}


def test_nightly_request_checks_the_conf_for_every_branch_and_the_fixed_fields():
    from airflow_image_factory.policy.request import validate_nightly_request

    fixed = ("branch", "commit_sha", "upgrade_to_newer_dependencies")
    requests = validate_nightly_request({"python_versions": ["3.11"]}, SETTINGS, branches=("main", "v3-1-test"),
                                        fixed_fields=fixed)
    assert [r.branch for r in requests] == ["main", "v3-1-test"]
    assert all(r.upgrade_to_newer_dependencies for r in requests)
    with pytest.raises(InvalidBuildRequests) as info:
        validate_nightly_request({"branch": "x", "cache": "nope"}, SETTINGS, branches=("main", "v3-1-test"),
                                 fixed_fields=fixed)
    assert [str(e) for e in info.value.errors] == [
        "branch: is not a field of the nightly run (set nightly_branches instead)",
        "cache: 'nope' is not one of pulled, local, disabled (repeated 3 times)",
    ]
    with pytest.raises(InvalidBuildRequests, match="conf: must be an object"):
        validate_nightly_request(["main"], SETTINGS, branches=("main",), fixed_fields=fixed)
