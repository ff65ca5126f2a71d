"""Carry out a :class:`~airflow_image_factory.policy.promotion.PromotionPlan`: publish ``latest`` for every
Python version of a run, all-or-nothing, under the promotion lock.

The plan (who may move, what moves) is :mod:`airflow_image_factory.policy.promotion`; the operator
(:class:`airflow_image_factory.tasks.operators.PromoteImagesOperator`) makes the clients and hands the
result to XCom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_image_factory.clients.registry.manifest import image_index
from airflow_image_factory.exceptions import PromotionRefused
from airflow_image_factory.policy.promotion import SHA_PUSHED, PromotionPlan, PromotionStep
from airflow_image_factory.policy.reference import is_digest, repository_and_reference
from airflow_image_factory.services.copy import TagJournal


def refuse_unless_allowed(plan: PromotionPlan) -> None:
    """The gate: a plan that does not allow the promotion moves nothing, and says why."""
    if not plan.allowed:
        raise PromotionRefused(plan.reason)


@dataclass
class Promotion:
    """The clients a promotion works with: ``registry`` (a RegistryClient), ``engine`` (pushes the images
    published for the first time), ``lock`` (a promotion lock: ``hold()``, ``name``, ``waited``) and ``log``
    (printf-style, like ``logger.info``). ``push_auth``, ``push_retries`` and ``on_line`` go to each push."""

    registry: Any
    engine: Any
    lock: Any
    log: Callable[..., None]
    push_auth: Any = None
    push_retries: int = 5
    on_line: Callable[[str], None] | None = None
    # (repository, digest) → the problems of that tested digest's signed evidence ([]: it verifies);
    # None: evidence is not required (settings: evidence = off)
    evidence_problems: Callable[[str, str], list[str]] | None = None

    def apply(self, plan: PromotionPlan, sha: str) -> list[dict[str, str]]:
        """Publish the plan's images; returns one ``{python, kind, image, digest}`` per ``latest`` set.

        Under the lock - two runs of one branch must not interleave their re-tags (latest would mix both
        runs): pre-flight that every tested digest is still in the registry; record where every target
        points; push the images published for the first time; re-tag the tested digests; read the whole
        set back. A failure at any step puts every target back where it was (:class:`TagJournal`).
        """
        refuse_unless_allowed(plan)
        client, lock = self.registry, self.lock
        published: list[dict[str, str]] = []
        with lock.hold():
            self.log("promotion lock acquired: %s (waited %.1fs)", lock.name, lock.waited)
            # Pre-flight: every tested digest must still be in the registry before anything moves.
            for step in plan.retags:
                repository, _ = repository_and_reference(step.target)
                if client.manifest_digest(repository, step.source_digest) is None:
                    raise PromotionRefused(
                        f"tested digest {step.source_digest} of {step.target} is gone; nothing moved"
                    )
            self._require_evidence(plan)
            journal = TagJournal(client, self.log)
            for step in plan.steps:
                for target in step.targets:
                    journal.remember(*repository_and_reference(target))
            with journal.all_or_nothing(refused=PromotionRefused):
                for step in plan.pushes:
                    digest = self._push(step, journal)
                    published.append({"python": step.python, "kind": step.kind.value, "image": step.target,
                                      "digest": digest})
                    self.log("pushed %s = %s", step.target, digest)
                for step in plan.retags:
                    repository, tag = repository_and_reference(step.target)
                    digest = journal.copy(repository, step.source_digest, repository, tag)
                    published.append({"python": step.python, "kind": step.kind.value, "image": step.target,
                                      "digest": digest})
                    self.log("promoted %s = %s (tested digest, manifest only)", step.target, digest)
                self._check_consistent(published, sha)
            self.log("promotion lock released: %s", lock.name)
        return published

    def _push(self, step: PromotionStep, journal: TagJournal) -> str:
        """Push a step's local image as its target; several platforms' images each as ``target-<arch>``,
        then the target as their index (a manifest PUT). The digest of the target."""
        pushes = [(None, step.local_image, step.target)] if not step.platform_images else step.platform_images
        children = []
        for platform, local, target in pushes:
            repository, tag = repository_and_reference(target)
            journal.moving(repository, tag)
            if is_digest(local):  # reused from the registry (content key): a tag, nothing to upload
                children.append((platform, self.registry.tag(repository, local, tag)))
                continue
            if local != target:
                self.engine.tag(local, target)
            digest = self.engine.push(target, auth=self.push_auth, retries=self.push_retries, on_line=self.on_line)
            children.append((platform, digest))
        if not step.platform_images:
            return children[0][1]
        repository, tag = repository_and_reference(step.target)
        index = image_index([(self.registry.get_manifest(repository, digest), platform)
                             for platform, digest in children])
        journal.moving(repository, tag)
        return self.registry.put_manifest(repository, tag, index)

    def _require_evidence(self, plan: PromotionPlan) -> None:
        """Every tested digest (CI, each PROD variant) must carry signed evidence that verifies before any
        name moves; the other images (the Python base, the build stage, the CI manifest) were not tested."""
        if self.evidence_problems is None:
            return
        refused = []
        for step in plan.retags:
            if step.kind not in SHA_PUSHED:
                continue
            repository, _ = repository_and_reference(step.target)
            problems = self.evidence_problems(repository, step.source_digest)
            if problems:
                refused.append(f"{repository}@{step.source_digest}: {'; '.join(problems)}")
            else:
                self.log("evidence of %s@%s verifies", repository, step.source_digest)
        if refused:
            raise PromotionRefused("signed evidence missing or not verifying, nothing moved: " + " | ".join(refused))

    def _check_consistent(self, published: list[dict[str, str]], sha: str) -> None:
        """Still under the lock: every latest this run set must read back as this run's digest."""
        wrong = []
        for item in published:
            repository, tag = repository_and_reference(item["image"])
            now = self.registry.manifest_digest(repository, tag)
            if now != item["digest"]:
                wrong.append(f"{item['image']} is {now}, this run published {item['digest']}")
        if wrong:
            raise PromotionRefused("the published latest set is not consistent: " + "; ".join(wrong))
        self.log("latest set verified: %d images, all from commit %s", len(published), sha)
