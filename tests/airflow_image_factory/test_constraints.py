from airflow_image_factory.policy import constraints as cons

OLD = """#
# Constraints for Apache Airflow 3.3.2 on Python 3.11
# Generated 2026-01-01T00:00:00Z
#
apache-airflow==3.3.2
Flask_Login==0.6.3
requests==2.32.0
pytest==8.0.0
"""


def test_parse_pins_normalizes_names_and_skips_comments():
    assert cons.parse_pins(OLD) == {
        "apache-airflow": "3.3.2", "flask-login": "0.6.3", "requests": "2.32.0", "pytest": "8.0.0",
    }


def test_only_meaningful_lines_decide_whether_a_file_changed():
    new_header = OLD.replace("2026-01-01T00:00:00Z", "2026-11-21T02:00:00Z")
    assert not cons.files_differ(OLD, new_header)
    assert cons.files_differ(OLD, OLD.replace("requests==2.32.0", "requests==2.33.0"))
    assert cons.files_differ(None, OLD)


def test_upgrades_compare_only_what_the_resolver_returned():
    resolved = {"apache-airflow": "3.3.2", "flask-login": "0.6.3", "requests": "2.33.0", "new-dep": "1.0"}
    changes = cons.upgrades(resolved, cons.parse_pins(OLD))
    assert [str(c) for c in changes] == ["new-dep (new) -> 1.0", "requests 2.32.0 -> 2.33.0"]
    # pytest (CI tooling, pinned but not resolved) is not a difference
    assert cons.upgrades({"requests": "2.32.0"}, cons.parse_pins(OLD)) == []


def test_render_has_a_header_and_sorted_pins_that_parse_back():
    text = cons.render({"b-pkg": "2", "A_pkg": "1"}, python="3.13", airflow_version="3.3.2", sha="abc",
                       generated="now", source="test")
    assert text.startswith("#\n# Constraints for Apache Airflow 3.3.2 on Python 3.13\n")
    assert "# Commit abc" in text
    assert cons.meaningful_lines(text) == ["A_pkg==1", "b-pkg==2"]
    assert cons.parse_pins(text) == {"a-pkg": "1", "b-pkg": "2"}


def test_freeze_output_leaves_out_direct_references():
    freeze = "apache-airflow==3.3.2\nmypkg @ file:///src/mypkg\n-e git+https://x/y#egg=y\nrequests==2.0\n"
    assert cons.freeze_to_pins(freeze) == {"apache-airflow": "3.3.2", "requests": "2.0"}


def test_a_new_python_version_starts_from_the_newest_existing_file():
    existing = {"3.9": "a==1", "3.11": "a==2", "3.10": "a==3"}
    assert cons.starting_point(existing, "3.13") == ("3.11", "a==2")
    assert cons.starting_point(existing, "3.10") == ("3.10", "a==3")
    assert cons.starting_point({}, "3.13") is None


def test_names():
    assert cons.constraints_file_name("3.12") == "constraints-3.12.txt"
    assert cons.constraints_branch("v3-1-test") == "constraints-v3-1-test"


def test_a_branch_other_than_the_default_falls_back_to_the_default_branchs_constraints():
    assert cons.constraints_branches("v3-3-test", "main") == ["constraints-v3-3-test", "constraints-main"]
    assert cons.constraints_branches("main", "main") == ["constraints-main"]
