"""The one verified copy and the journal that puts tags back: in-memory registry, no Airflow."""

from __future__ import annotations

import pytest

from airflow_image_factory.exceptions import DigestMismatch, ReleaseRefused
from airflow_image_factory.services.copy import TagJournal, verified_copy
from tests.services.fakes import FakeRegistry, Injected, Log, digest

OLD, NEW, OTHER = digest(1), digest(2), digest(3)


def registry(**kwargs) -> FakeRegistry:
    fake = FakeRegistry(**kwargs)
    fake.put("src", "sha", NEW)
    fake.put("dst", "latest", OLD)
    return fake


@pytest.mark.parametrize("source", ["src", "dst"])  # across repositories a copy, within one a re-tag
def test_a_verified_copy_moves_the_tag_and_reads_it_back(source):
    fake = registry()
    fake.put(source, "sha", NEW)
    assert verified_copy(fake, source, NEW, "dst", "latest") == NEW
    assert fake.tags[("dst", "latest")] == NEW
    # across repositories the image's signed evidence (its referrers) goes along
    expected = ["copy", "copy_referrers"] if source == "src" else ["tag"]
    assert [c[0] for c in fake.calls] == [*expected, "manifest_digest"]


def test_a_verified_copy_refuses_a_digest_the_registry_reports_otherwise():
    fake = registry()
    fake.rewrites[NEW] = OTHER
    with pytest.raises(DigestMismatch) as error:
        verified_copy(fake, "src", NEW, "dst", "latest")
    assert (error.value.ref, error.value.expected, error.value.found) == ("localhost:5000/dst:latest", NEW, OTHER)
    assert str(error.value) == f"localhost:5000/dst:latest became {OTHER}, not the tested {NEW}"


def test_a_verified_copy_refuses_a_tag_that_reads_back_as_another_digest():
    fake = registry()
    fake.others_move[("dst", "latest")] = OTHER  # someone else moved it between our PUT and the read-back
    with pytest.raises(DigestMismatch, match=f"became {OTHER}, not the tested"):
        verified_copy(fake, "src", NEW, "dst", "latest")


def test_the_journal_puts_moved_tags_back_and_deletes_new_ones():
    fake = registry()
    before = dict(fake.tags)
    journal = TagJournal(fake, log := Log())
    journal.remember("dst", "latest")
    journal.remember("dst", "fresh")
    with pytest.raises(Injected), journal.all_or_nothing():
        journal.copy("src", NEW, "dst", "latest")
        journal.copy("src", NEW, "dst", "fresh")
        raise Injected("the last step failed")
    assert fake.tags == before
    assert log.lines == ["put back localhost:5000/dst:fresh to no tag (it did not exist)",
                         f"put back localhost:5000/dst:latest to {OLD}"]


def test_the_journal_turns_a_mismatch_into_the_callers_refusal_after_putting_back():
    fake = registry()
    before = dict(fake.tags)
    fake.rewrites[NEW] = OTHER
    journal = TagJournal(fake)
    journal.remember("dst", "latest")
    with pytest.raises(ReleaseRefused, match="not the tested") as error, journal.all_or_nothing(ReleaseRefused):
        journal.copy("src", NEW, "dst", "latest")
    assert isinstance(error.value.__cause__, DigestMismatch)
    assert fake.tags == before


def test_a_tag_that_cannot_be_put_back_is_named_on_the_error():
    fake = registry(can_delete_tags=False)
    journal = TagJournal(fake)
    journal.remember("dst", "fresh")
    with pytest.raises(Injected) as error, journal.all_or_nothing():
        journal.copy("src", NEW, "dst", "fresh")
        raise Injected("later step")
    assert any("could not be put back: localhost:5000/dst:fresh" in note for note in error.value.__notes__)


def test_a_journal_left_without_error_changes_nothing_more():
    fake = registry()
    journal = TagJournal(fake)
    journal.remember("dst", "latest", OLD)  # a digest the caller has just read: no second HEAD
    with journal.all_or_nothing():
        journal.copy("src", NEW, "dst", "latest")
    assert fake.tags[("dst", "latest")] == NEW
    assert [c[0] for c in fake.calls] == ["copy", "copy_referrers", "manifest_digest"]


def test_only_tags_a_move_was_attempted_on_are_asked_about_when_putting_back():
    fake = registry()
    journal = TagJournal(fake)
    journal.remember("dst", "latest")
    journal.remember("dst", "untouched")
    fake.calls.clear()
    with pytest.raises(Injected), journal.all_or_nothing():
        journal.copy("src", NEW, "dst", "latest")
        raise Injected("later step")
    assert [c[:3] for c in fake.calls if c[0] == "manifest_digest"] == [("manifest_digest", "dst", "latest")] * 2


def test_a_tag_cannot_move_without_its_previous_digest_recorded():
    with pytest.raises(ValueError, match="without its previous digest"):
        TagJournal(registry()).copy("src", NEW, "dst", "latest")
