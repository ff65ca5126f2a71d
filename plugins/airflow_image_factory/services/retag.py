"""Carry out a retag in the registry: HEAD every source and target, then copy what differs, all-or-nothing.

The plan and the decisions are :mod:`airflow_image_factory.policy.retag`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_image_factory.exceptions import RetagRefused
from airflow_image_factory.policy.retag import COPY, RetagAction, decide_retag, format_actions, plan_retag
from airflow_image_factory.services.copy import TagJournal


def retag(client: Any, request: Any, log: Callable[..., None]) -> tuple[RetagAction, ...]:
    """What each name of the request does (``request`` is a RetagRequest), carried out unless ``dry_run``.

    A missing source fails before anything moves (:func:`decide_retag`). Each copy is by the digest just
    looked at (:func:`verified_copy`); when any copy or read-back fails, every target is put back where
    the HEADs found it (:class:`TagJournal`).
    """
    steps = plan_retag(request)
    sources = {s.source_ref: client.manifest_digest(s.source.path, s.tag) for s in steps}
    targets = {s.target_ref: client.manifest_digest(s.target.path, s.tag) for s in steps}
    actions = decide_retag(steps, sources, targets)
    if not request.dry_run:
        moves = [a for a in actions if a.action == COPY]
        journal = TagJournal(client, log)
        for action in moves:  # the HEADs above are each target's digest before anything moves
            journal.remember(action.step.target.path, action.step.tag, action.previous)
        with journal.all_or_nothing(refused=RetagRefused):
            for action in moves:
                step = action.step
                journal.copy(step.source.path, action.digest, step.target.path, step.tag)
    changed = sum(a.action == COPY for a in actions)
    log(
        "%s %s → %s (%d of %d names %s):\n%s",
        "DRY RUN, nothing changed:" if request.dry_run else "Retagged",
        request.source_branch, request.target_branch, changed, len(actions),
        "would change" if request.dry_run else "changed", format_actions(actions, dry_run=request.dry_run),
    )
    log("registry traffic: %s", client.stats.snapshot())
    return actions
