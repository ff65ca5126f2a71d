"""One verified copy of a manifest to a tag, and the journal that makes a publish of many tags all-or-nothing.

A promotion, a release publish and a retag each point several tags at tested digests, one registry call
at a time (a registry has no transactions). :func:`verified_copy` moves one tag and proves it moved;
:class:`TagJournal` records where every target tag pointed before the first move and puts them all back
when any step fails, so a run never leaves a mixed set behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from airflow_image_factory.exceptions import DigestMismatch, ImageFactoryError


def verified_copy(client: Any, source_repository: str, digest: str, target_repository: str, tag: str) -> str:
    """Point ``target_repository:tag`` at the manifest ``source_repository@digest``, then read the tag back.

    Within one repository this is a re-tag (one manifest GET and PUT); across repositories a copy by
    manifest (blobs mounted, never downloaded) with the artifacts referring to it. By digest, so the
    target gets exactly what was tested.
    Raises :class:`DigestMismatch` when the registry reports or reads back any other digest; returns it.
    """
    if source_repository == target_repository:
        landed = client.tag(target_repository, digest, tag)
    else:
        landed = client.copy(source_repository, digest, target_repository, tag)
        # The image's signed evidence travels with it: a published name verifies in its new repository too.
        client.copy_referrers(source_repository, digest, target_repository)
    found = client.manifest_digest(target_repository, tag) if landed == digest else landed
    if found != digest:
        raise DigestMismatch(f"{client.registry}/{target_repository}:{tag}", digest, found)
    return digest


_UNREAD = object()


class TagJournal:
    """Where each target tag pointed before a publish, to put every one back if the publish fails.

    Why: the tags of a publish move one after another. Without the journal a failure at the k-th step -
    an upload, a re-tag, or the read-back after the last one - leaves tags 1..k-1 on the new images and
    the rest on the old: a ``latest`` set from two commits, a release with half its tags moved. So every
    target's previous digest is recorded (:meth:`remember`) before anything moves, and on any failure
    inside :meth:`all_or_nothing` each tag goes back to it - a tag that did not exist is deleted (the tag
    only, :meth:`RegistryClient.delete_tag`) - before the error goes on. A tag that cannot be put back is
    named in a note on the error rather than hiding it: so is a new tag on a registry that deletes
    manifests only (distribution 2.x) - deleting its manifest would take the tested ``:SHA`` tag along.
    """

    def __init__(self, client: Any, log: Callable[..., None] | None = None):
        self.client = client
        self.log = log or (lambda *args: None)
        self.before: dict[tuple[str, str], str | None] = {}
        self.moved: list[tuple[str, str]] = []  # the tags a move was attempted on, in order

    def remember(self, repository: str, tag: str, previous: object = _UNREAD) -> None:
        """Record the digest ``repository:tag`` holds now (``previous`` when the caller has just read it)."""
        if (repository, tag) not in self.before:
            digest = self.client.manifest_digest(repository, tag) if previous is _UNREAD else previous
            self.before[(repository, tag)] = digest  # type: ignore[assignment]

    def moving(self, repository: str, tag: str) -> None:
        """Say that ``repository:tag`` is about to move (it must have been remembered)."""
        if (repository, tag) not in self.before:
            raise ValueError(f"{repository}:{tag} moves without its previous digest recorded")
        if (repository, tag) not in self.moved:
            self.moved.append((repository, tag))

    def copy(self, source_repository: str, digest: str, repository: str, tag: str) -> str:
        """:func:`verified_copy`, put back by :meth:`restore` if the publish fails."""
        self.moving(repository, tag)
        return verified_copy(self.client, source_repository, digest, repository, tag)

    @contextlib.contextmanager
    def all_or_nothing(self, refused: type[ImageFactoryError] | None = None) -> Iterator[TagJournal]:
        """Put every tag moved back (:meth:`restore`) when the block raises, then re-raise; a :class:`DigestMismatch`
        becomes ``refused`` (the caller's own refusal) when given."""
        try:
            yield self
        except BaseException as exc:  # a timeout or a kill mid-publish must not leave a mixed set either
            failed = self.restore()
            if refused is not None and isinstance(exc, DigestMismatch):
                error = refused(str(exc))
                _note(error, failed)
                raise error from exc
            _note(exc, failed)
            raise

    def restore(self) -> list[str]:
        """Put each tag a move was attempted on back (last first); returns those that could not be. Tags
        never touched are not asked about: a registry that went away costs no retries for them."""
        failed = []
        for repository, tag in reversed(self.moved):
            previous = self.before[(repository, tag)]
            ref = f"{self.client.registry}/{repository}:{tag}"
            try:
                if self.client.manifest_digest(repository, tag) == previous:
                    continue
                if previous is None:
                    self.client.delete_tag(repository, tag)
                else:
                    self.client.tag(repository, previous, tag)
            except Exception as exc:  # put back what can be; name the rest
                failed.append(f"{ref} ({exc})")
                continue
            self.log("put back %s to %s", ref, previous or "no tag (it did not exist)")
        return failed


def _note(error: BaseException, failed: list[str]) -> None:
    if failed:
        error.add_note("could not be put back: " + "; ".join(failed))
