"""Small in-memory stand-ins for the registry client, the container engine and the promotion lock, for the
services' tests: dict-backed, recording every call, and able to fail at the N-th call (before or after
its effect - a reply lost after the registry already moved the tag)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from airflow_image_factory.clients.registry import DOCKER_MANIFEST_V2, Manifest
from airflow_image_factory.exceptions import ManifestNotFound, RegistryError, RegistryUnavailable
from airflow_image_factory.policy.reference import is_digest, repository_and_reference

REGISTRY = "localhost:5000"


def digest(n: int | str) -> str:
    return f"sha256:{str(n).rjust(64, '0')}"


class Injected(RegistryUnavailable):
    """The failure a fake injects."""


class FakeRegistry:
    """``tags`` maps (repository, tag) → digest; ``manifests`` holds (repository, digest)."""

    registry = REGISTRY

    def __init__(self, *, fail_at: int | None = None, fail_after: bool = False, can_delete_tags: bool = True):
        self.tags: dict[tuple[str, str], str] = {}
        self.manifests: set[tuple[str, str]] = set()
        self.configs: dict[str, dict] = {}  # digest → image config
        self.indexes: dict[str, Manifest] = {}  # digest → an index put_manifest stored
        self.calls: list[tuple] = []
        self.fail_at = fail_at
        self.fail_after = fail_after
        self.can_delete_tags = can_delete_tags
        self.rewrites: dict[str, str] = {}  # a copy of this digest lands as another one
        self.others_move: dict[tuple[str, str], str] = {}  # right after our write, someone moves the tag
        self.lock = None  # a FakeLock: every call records whether it was held
        self.stats = SimpleNamespace(snapshot=lambda: {"calls": len(self.calls)})

    # ---- set up and look

    def put(self, repository: str, tag: str, value: str) -> None:
        self.tags[(repository, tag)] = value
        self.manifests.add((repository, value))

    def writes(self) -> list[tuple]:
        return [c for c in self.calls if c[0] in ("tag", "copy", "delete_tag", "engine.push", "put_manifest")]

    # ---- the client's API

    @contextlib.contextmanager
    def _call(self, *call: object) -> Iterator[None]:
        self.calls.append((*call, self.lock.held if self.lock else None))
        failing = self.fail_at == len(self.calls)
        if failing and not self.fail_after:
            raise Injected(f"injected failure at call {len(self.calls)}: {call[0]}")
        yield
        if failing:
            raise Injected(f"injected failure after call {len(self.calls)}: {call[0]}")

    def _resolve(self, repository: str, reference: str) -> str | None:
        if is_digest(reference):
            return reference if (repository, reference) in self.manifests else None
        return self.tags.get((repository, reference))

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        with self._call("manifest_digest", repository, reference):
            found = self._resolve(repository, reference)
        return found

    def _write(self, source: str, reference: str, target: str, tag: str) -> str:
        found = self._resolve(source, reference)
        if found is None:
            raise ManifestNotFound(f"{source}:{reference} not found", status=404)
        landed = self.rewrites.get(found, found)
        self.put(target, tag, landed)
        if (target, tag) in self.others_move:
            self.put(target, tag, self.others_move.pop((target, tag)))
        return landed

    def tag(self, repository: str, source_reference: str, new_tag: str) -> str:
        with self._call("tag", repository, source_reference, new_tag):
            landed = self._write(repository, source_reference, repository, new_tag)
        return landed

    def copy(self, source_repository: str, reference: str, target_repository: str, target_tag: str) -> str:
        with self._call("copy", source_repository, reference, target_repository, target_tag):
            landed = self._write(source_repository, reference, target_repository, target_tag)
        return landed

    def copy_referrers(self, source_repository: str, digest: str, target_repository: str) -> int:
        with self._call("copy_referrers", source_repository, digest, target_repository):
            pass
        return 0

    def delete_tag(self, repository: str, tag: str) -> None:
        with self._call("delete_tag", repository, tag):
            if not self.can_delete_tags:
                raise RegistryError("this registry deletes manifests, not tags", status=405)
            if (repository, tag) not in self.tags:
                raise ManifestNotFound(f"{repository}:{tag} not found", status=404)
            del self.tags[(repository, tag)]

    def list_tags(self, repository: str) -> list[str]:
        with self._call("list_tags", repository):
            found = sorted(t for r, t in self.tags if r == repository)
        return found

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """A stand-in body whose digest is the stored one (the fake keeps digests, not documents)."""
        with self._call("get_manifest", repository, reference):
            found = self._resolve(repository, reference)
        if found is None:
            raise ManifestNotFound(f"{repository}:{reference} not found", status=404)
        return Manifest(raw=b"{}", media_type=DOCKER_MANIFEST_V2, digest=found)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        with self._call("put_manifest", repository, tag):
            for child in manifest.children:  # as distribution does: an index's children must be there
                if (repository, child["digest"]) not in self.manifests:
                    raise RegistryError(f"{repository}: {child['digest']} is unknown", status=400)
            self.put(repository, tag, manifest.digest)
            self.indexes[manifest.digest] = manifest
        return manifest.digest

    def image_config(self, repository: str, reference: str) -> dict:
        with self._call("image_config", repository, reference):
            found = self.configs[self._resolve(repository, reference) or ""]
        return found


class FakeEngine:
    """Local images (ref → digest); a push goes into the fake registry, through its call counter."""

    def __init__(self, registry: FakeRegistry, local: dict[str, str]):
        self.registry = registry
        self.local = dict(local)

    def tag(self, image: str, ref: str) -> None:
        with self.registry._call("engine.tag", image, ref):
            self.local[ref] = self.local[image]

    def push(self, ref: str, *, auth: object = None, retries: int = 5, on_line: object = None) -> str:
        with self.registry._call("engine.push", ref):
            repository, tag = repository_and_reference(ref)
            self.registry.put(repository, tag, self.local[ref])
        return self.local[ref]


class FakeProbeEngine:
    """An engine for bisection probes: records each build (and the build context's files), answers each
    run with ``run`` (a ``RunResult``, or an exception to raise), records what is removed."""

    def __init__(self, *, run: object = None, build_error: Exception | None = None):
        from airflow_image_factory.clients.engine import RunResult

        self.built: list = []
        self.runs: list[tuple] = []
        self.removed: list[str] = []
        self.contexts: dict[str, str] = {}
        self.logins: list[dict] = []
        self._run = run or RunResult(0, "1 passed")
        self.build_error = build_error

    @contextlib.contextmanager
    def logged_in(self, logins: dict) -> Iterator[None]:
        self.logins.append(dict(logins))
        yield

    def build(self, spec, *, on_line) -> None:
        self.built.append(spec)
        self.contexts = {str(p.relative_to(spec.context)): p.read_text() for p in spec.context.rglob("*")
                         if p.is_file()}
        if self.build_error:
            raise self.build_error

    def run(self, image, *, command, user, environment, on_line, timeout):
        self.runs.append((image, command))
        if isinstance(self._run, Exception):
            raise self._run
        for line in self._run.output.splitlines():
            on_line(line)
        return self._run

    def remove(self, ref: str) -> None:
        self.removed.append(ref)


class FakeLock:
    name = "fake promotion lock"
    waited = 0.0

    def __init__(self) -> None:
        self.held = False
        self.taken = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[FakeLock]:
        self.held, self.taken = True, self.taken + 1
        try:
            yield self
        finally:
            self.held = False


class Log:
    """A printf-style log callable that keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str, *args: object) -> None:
        self.lines.append(message % args if args else message)


def leaves_every_tag_as_it_was(registry: FakeRegistry, run: Callable[[FakeRegistry], object],
                               errors: type[BaseException] | tuple[type[BaseException], ...]) -> None:
    """``run(registry)`` raises one of ``errors``, and the registry's tags are then exactly as before."""
    before = dict(registry.tags)
    with pytest.raises(errors):
        run(registry)
    assert registry.tags == before


def calls_of(registry: FakeRegistry, run: Callable[[FakeRegistry], object]) -> int:
    """How many calls a successful ``run(registry)`` makes: the steps a failure can be injected at."""
    run(registry)
    return len(registry.calls)
