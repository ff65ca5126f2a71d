"""One step each, thin over the policy objects (naming, cache, promotion) and the hooks.

Every operator takes the validated build request (a dict from the ``validate`` task) and, where it
works on one Python version, that version; names come from :mod:`naming`, cache decisions from
:mod:`cache`, what moves to ``latest`` from :mod:`promotion`. Clients are made in ``execute``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import requests
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_image_factory.clients.content import CONTENT_KEY_ARG, CONTENT_KEY_LABEL, content_key
from airflow_image_factory.clients.engine import BuildSpec, Engine, labels_of
from airflow_image_factory.clients.git import fetch_commit, prune_commit_cache
from airflow_image_factory.clients.locks import promotion_lock
from airflow_image_factory.clients.registry import RegistryClient, config_labels, image_index
from airflow_image_factory.clients.settings_loader import include_dir, load_settings
from airflow_image_factory.clients.sources import (
    SourceTree,
    read_source_tree,
    stage_sources,
    ui_sources_key,
    write_metadata_wheels,
)
from airflow_image_factory.exceptions import (
    BaseImageMissing,
    PermanentError,
    RegistryError,
    RegistryUnavailable,
)
from airflow_image_factory.policy import image_contract
from airflow_image_factory.policy.cache import (
    CachePlan,
    CacheStrategy,
    UiAssetsSource,
    cache_images,
    plan_cache,
    plan_reuse,
    plan_ui_assets,
    reuse_blocker,
)
from airflow_image_factory.policy.constraints import parse_pins
from airflow_image_factory.policy.evidence import EVIDENCE_FORMAT
from airflow_image_factory.policy.housekeeping import TidyReport, droppable_refs, keep_bytes, pushed_digests
from airflow_image_factory.policy.image_contract import (
    ImageCheck,
    prod_checks,
    providers_in_list_file,
    providers_in_pyproject,
)
from airflow_image_factory.policy.naming import (
    REGULAR,
    VARIANTS,
    ImageKind,
    ImageName,
    ImageSet,
    Variant,
    images_for,
    ui_assets_image,
    variant_kinds,
    variant_of,
)
from airflow_image_factory.policy.nightly import BASE_DIGEST_LABEL, BASE_NAME_LABEL, EXTRAS_LABEL, VERSION_LABEL
from airflow_image_factory.policy.platforms import (
    DEFAULT_PLATFORMS,
    built_platforms,
    is_index,
    platform_tags,
    platforms_for,
)
from airflow_image_factory.policy.promotion import SHA_PUSHED, VersionOutcome, plan_promotion
from airflow_image_factory.policy.reference import repository_and_reference
from airflow_image_factory.policy.request import BuildRequest
from airflow_image_factory.policy.settings import TIME_BOUNDS, VARIABLE_NAME, Settings
from airflow_image_factory.services import verify
from airflow_image_factory.services.promotion import Promotion, refuse_unless_allowed
from airflow_image_factory.tasks.assets import PUBLISHED_IMAGES_ALIAS, image_asset
from airflow_image_factory.tasks.hooks import EngineHook, RegistryHook, find_connection
from airflow_image_factory.tasks.links import RegistryImageLink, record_image_ref

DEFAULT_CI_TEST_COMMAND = "pytest -q -p no:cacheprovider /opt/airflow/verify"
PROD_BUILD_TARGET = "airflow-build-image"
EXTRA_CA_SECRET_ID = "extra_ca"  # noqa: S105 - a BuildKit secret id, not a secret
log = logging.getLogger(__name__)


# Asking whether a registry accepts connections at all: tries at 0, 0 and 1 s (urllib3's back-off), enough
# for one restarting; every real call then retries what may pass (5xx, 429, drops) push_retries times.
REACHABILITY_RETRIES = 2
REACHABILITY_TIMEOUT = 10.0
_F = TypeVar("_F", bound=Callable[..., Any])


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_settings() -> Settings:
    """Settings as a task sees them: file < environment < the Airflow Variable (read now, not at parse)."""
    from airflow.sdk import Variable

    return load_settings(variable=Variable.get(VARIABLE_NAME, default=None))


def step_timeout(setting: str | None, settings: Settings | None = None) -> timedelta:
    """A task's ``execution_timeout``: the ``timeout_*_minutes`` setting named (``None``: the largest of
    them). Read when the DAG is parsed, from the file and the environment (Airflow needs it then)."""
    settings = settings or load_settings()
    minutes = getattr(settings, setting) if setting else max(getattr(settings, name) for name in TIME_BOUNDS)
    return timedelta(minutes=minutes)


# ---- errors no retry can mend ------------------------------------------------------------------------


def _connect_failed(exc: BaseException | None) -> BaseException | None:
    """The urllib3 error when ``exc`` (or what it wraps) is a connection that was never made: refused,
    no route, a name that does not resolve, a connect timeout. A connection dropped later is not one."""
    from urllib3.exceptions import ConnectTimeoutError  # NewConnectionError and NameResolutionError too

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for candidate in (exc, getattr(exc, "reason", None), *(exc.args[:1] if exc.args else ())):
            if isinstance(candidate, ConnectTimeoutError):
                return candidate
            if isinstance(getattr(candidate, "reason", None), ConnectTimeoutError):
                return candidate.reason
        exc = exc.__cause__ or exc.__context__
    return None


def _why_not_connected(error: BaseException) -> str:
    match = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", str(error))
    return match.group(1).strip() if match else type(error).__name__


def fail_at_once(exc: BaseException) -> BaseException:
    """What the task should raise for ``exc``: :class:`AirflowFailException` (no retry) when no retry can
    mend it - a :class:`PermanentError`, named by its field, or a registry that does not accept connections -
    else ``exc`` itself."""
    if isinstance(exc, AirflowFailException):
        return exc
    if isinstance(exc, PermanentError):
        text = str(exc)
        if exc.field and not text.startswith(f"{exc.field}:"):
            text = f"{exc.field}: {text}"
        return AirflowFailException(text)
    if isinstance(exc, RegistryUnavailable) and _connect_failed(exc) is not None:
        return AirflowFailException(f"registry: {exc} (a registry that does not accept connections is not retried)")
    return exc


def fails_at_once(function: _F) -> _F:
    """Decorate a task's body (or ``execute``) so that :func:`fail_at_once` decides what it raises.

    The one way errors become non-retriable: every ``@task`` body of the package and its DAG files carries
    it (under the ``@task``), and :class:`ImageFactoryOperator` wraps each subclass's ``execute`` with it."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            converted = fail_at_once(exc)
            if converted is exc:
                raise
            raise converted from exc

    return wrapper  # type: ignore[return-value]


def fail_if_unreachable(registry: str, *, field: str = "registry") -> None:
    """Fail the task at once, naming ``field``, when ``registry`` does not accept connections (refused,
    unknown host, no route): about a second, not the client's full retries twice over. Any answer at
    all - 200, 401, even 503 - passes: the real calls then retry what may pass."""
    client = RegistryClient(registry, retries=REACHABILITY_RETRIES, backoff=0.5, timeout=REACHABILITY_TIMEOUT)
    started = time.monotonic()
    try:
        client.session.get(f"{client.base_url}/v2/", timeout=REACHABILITY_TIMEOUT, allow_redirects=False).close()
    except requests.RequestException as exc:
        error = _connect_failed(exc)
        if error is None:
            return
        raise AirflowFailException(
            f"{field}: registry {registry} does not accept connections ({_why_not_connected(error)}; "
            f"{REACHABILITY_RETRIES + 1} tries in {time.monotonic() - started:.1f}s): not retried"
        ) from exc
    finally:
        client.close()


class ImageFactoryOperator(BaseOperator):
    """Common ground: the request, the Python version, settings, and the names made from them.

    Every step has an ``execution_timeout`` from the ``timeout_setting`` its class names (an explicit
    ``execution_timeout`` wins; ``None``: the largest bound), and its ``execute`` fails at once, without
    the task's retries, on errors no retry can mend (:func:`fail_at_once`).
    """

    template_fields: Sequence[str] = ("build_request", "python")
    ui_color = "#e8f1fb"
    timeout_setting: str | None = None

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:
            cls.execute = fails_at_once(cls.__dict__["execute"])  # type: ignore[method-assign]

    def __init__(self, *, build_request: dict[str, Any] | Any, python: str | Any = "", **kwargs: Any):
        if kwargs.get("execution_timeout") is None:
            kwargs["execution_timeout"] = step_timeout(self.timeout_setting)
        super().__init__(**kwargs)
        self.build_request = build_request
        self.python = python

    @property
    def request(self) -> BuildRequest:
        return BuildRequest.from_dict(self.build_request)

    @property
    def images(self) -> ImageSet:
        return images_for(self.request, self.python)

    @property
    def sha(self) -> str:
        sha = self.request.commit_sha
        if not sha:
            raise ValueError("the build request has no commit_sha; the resolve step must run first")
        return sha

    def registry_hook(self, settings: Settings, registry: str | None = None) -> RegistryHook:
        return RegistryHook(registry or self.request.registry, settings=settings)

    @property
    def platforms(self) -> tuple[str, ...]:
        """What this step's image is built for: the run's platforms; the CI image's are the ci_platforms
        setting (it serves test runners, and an emulated CI image build takes hours)."""
        return platforms_for(self.request, getattr(self, "kind", None))

    def skip_unless_requested(self, kind: ImageKind) -> Variant | None:
        """The PROD variant of ``kind`` (None for the other kinds); a variant the run's ``variants`` do not
        name skips the step: every variant's steps are in the DAG, a run builds the ones it asks for."""
        variant = variant_of(kind)
        if variant is not None and variant.name not in self.request.variants:
            raise AirflowSkipException(
                f"the {variant.name} variant is not built by this run (variants: {', '.join(self.request.variants)})"
            )
        return variant

    def stream(self, line: str) -> None:
        self.log.info("%s", line)

    def fetch_sources(self, settings: Settings) -> Path:
        """The commit being built, fetched shallow into the worker's per-SHA cache (a cache hit when
        another build of the run fetched it already)."""
        started = time.monotonic()
        cache_dir = sources_cache_dir(settings)
        checkout = fetch_commit(self.request.source_repo, self.sha, cache_dir, timeout=settings.git_timeout)
        prune_commit_cache(cache_dir, keep=settings.sources_cache_keep)
        self.log.info("Sources of %s at %s: %s (%.1fs)", self.request.source_repo, self.sha, checkout,
                      time.monotonic() - started)
        return checkout


class PreparePythonBaseOperator(ImageFactoryOperator):
    """Pin the upstream ``python:X.Y-slim-<debian>`` by digest and stage it as the branch's base image.

    The digest is read with a manifest HEAD (no layer pulled to decide). The staged image is upstream's,
    layer for layer, plus the OCI ``base.name``/``base.digest`` labels naming what it was made from:
    the nightly check compares that label with upstream's digest without pulling anything. The
    promotion publishes it as ``REG/REPO/BRANCH/python:X.Y-slim-<debian>``.
    """

    timeout_setting = "timeout_push_minutes"

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        images = self.images
        upstream = images.upstream_python_base
        fail_if_unreachable(upstream.registry, field="python_base_mirror" if settings.python_base_mirror
                            else "python_base_upstream")
        upstream_hook = self.registry_hook(settings, upstream.registry)
        # every platform any image of the run is built for
        platforms = tuple(dict.fromkeys((*self.request.platforms, *self.request.ci_platforms)))
        with upstream_hook.get_conn() as client:
            digest = client.manifest_digest(upstream.path, upstream.fixed_tag)
            if digest is None:
                raise BaseImageMissing(
                    f"python base image: {upstream.ref()} not found (python_versions {self.python})")
            # Before any build: a base without one of the platforms would fail each build much later.
            lacking = [] if platforms == DEFAULT_PLATFORMS else [
                p for p in platforms if client.platform_manifest(upstream.path, digest, p) is None]
        if lacking:
            raise BaseImageMissing(f"python base image: {upstream.ref()} ({digest}) has no {', '.join(lacking)} "
                                   f"image (platforms {', '.join(platforms)})")
        pinned = upstream.ref(digest)
        engine = EngineHook(settings=settings).get_conn()
        self.log.info("Upstream base %s is %s", upstream.ref(), digest)
        logins = {upstream.registry: upstream_hook.credentials} if upstream_hook.credentials else {}
        local = {platform: images.python_base.ref(tag)
                 for platform, tag in platform_tags(images.python_base.promoted_tag, platforms).items()}
        with tempfile.TemporaryDirectory(prefix="python-base-") as tmp, engine.logged_in(logins):
            Path(tmp, "Dockerfile").write_text(f"FROM {pinned}\n")
            for platform, ref in local.items():
                engine.build(
                    BuildSpec(
                        context=Path(tmp), dockerfile="Dockerfile", tags=(ref,), platform=platform,
                        labels={BASE_NAME_LABEL: upstream.ref(), BASE_DIGEST_LABEL: digest}, inline_cache=False,
                    ),
                    on_line=self.log.debug,
                )
        summary = {
            "python": self.python,
            "upstream": upstream.ref(),
            "digest": digest,
            "pinned": pinned,
            "local": images.python_base.ref(),
        }
        # several platforms: the promotion pushes each and publishes the base as their index
        return summary | ({"platforms": local} if is_index(platforms) else {})


class BuildImageOperator(ImageFactoryOperator):
    """Build the CI image, the PROD build stage, or the PROD image with BuildKit and the registry cache.

    ``kind`` is ``ci``, ``prod-build`` or ``prod``. The image is tagged locally as ``name:SHA``; pushing
    is a later step. The returned summary is small: image, digest (image id), size, duration, cache.
    """

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "python_base", "constraints")
    timeout_setting = "timeout_build_minutes"
    _DOCKERFILES = {ImageKind.CI: "Dockerfile.ci", **{kind: "Dockerfile" for kind in variant_kinds(tuple(VARIANTS))}}
    # Branch builds install the branch's own sources; release builds (a subclass) the released dists.
    from_sources = True
    # Whether an image published under the same content key is reused instead of built (branch builds).
    reuses_published = True

    def __init__(
        self, *, kind: str, python_base: dict[str, Any] | Any, constraints: Mapping[str, str] | Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.kind = ImageKind(kind)
        if self.kind not in self._DOCKERFILES:
            raise ValueError(f"kind must be one of {', '.join(k.value for k in self._DOCKERFILES)}")
        self.python_base = python_base
        # Python version → constraints file text to install with (the nightly's upgraded set).
        self.constraints = constraints

    @property
    def target(self) -> str | None:
        """The Dockerfile stage a PROD build stage kind stops at; None: the file's last stage."""
        variant = variant_of(self.kind)
        return PROD_BUILD_TARGET if variant is not None and self.kind is variant.prod_build else None

    def extras(self, settings: Settings) -> tuple[str, str]:
        """The extras and other Python requirements installed: the PROD variant's; the CI image takes the
        regular image's, so the constraints it freezes cover every variant."""
        variant = variant_of(self.kind)
        if variant is None and settings.ci_airflow_extras:
            return settings.ci_airflow_extras, settings.additional_python_deps
        variant = variant or REGULAR
        return getattr(settings, variant.extras_setting), getattr(settings, variant.python_deps_setting)

    def build_args(self, settings: Settings) -> dict[str, str]:
        request = self.request
        extras, python_deps = self.extras(settings)
        return {
            "PYTHON_BASE_IMAGE": self.python_base["pinned"],
            "AIRFLOW_INSTALL_FROM": "pypi",
            "AIRFLOW_VERSION": request.airflow_version,
            "AIRFLOW_EXTRAS": extras,
            "ADDITIONAL_PYTHON_DEPS": python_deps,
            "UPGRADE_TO_NEWER_DEPENDENCIES": str(request.upgrade_to_newer_dependencies).lower(),
            "SOURCE_URL": request.source_repo,
            "REVISION": self.sha,
            "CREATED": _now_iso(),
            "BASE_IMAGE_NAME": self.python_base["upstream"],
            "BASE_IMAGE_DIGEST": self.python_base["digest"],
        }

    def execute(self, context: Any) -> dict[str, Any]:
        self.skip_unless_requested(self.kind)
        settings = run_settings()
        request = self.request
        images = self.images
        image = images[self.kind]
        default_branch = None
        if request.branch != settings.branch:
            default_branch = images_for(BuildRequest.from_dict({**request.to_dict(), "branch": settings.branch}),
                                        self.python)
        cache_refs = cache_images(self.kind, images, default_branch)
        registry_hook = self.registry_hook(settings)
        tags = platform_tags(self.sha, self.platforms)
        # Per platform: which cache images the registry holds for it (an index's child, or a plain manifest
        # made for it), so no platform's build takes another's cache.
        resolved: dict[str, dict[str, str]] = {platform: {} for platform in tags}
        if request.cache == "pulled":
            fail_if_unreachable(request.registry)
            with registry_hook.get_conn() as client:
                for platform in tags:
                    for ref in cache_refs:
                        found = client.platform_manifest(*repository_and_reference(ref), platform)
                        if found is not None:  # pinned: the build takes the very manifest looked at
                            resolved[platform][ref] = f"{ref.rsplit(':', 1)[0]}@{found.digest}"
        plans = {platform: plan_cache(request.cache, cache_refs, {ref: ref in found for ref in cache_refs},
                                      resolved=found)
                 for platform, found in resolved.items()}
        for platform, plan in plans.items():
            for note in plan.notes:
                self.log.info("cache%s: %s", f" ({platform})" if is_index(self.platforms) else "", note)
        secrets = build_secrets(settings)
        build_args = self.build_args(settings)
        constraints = (self.constraints or {}).get(self.python)
        checkout = self.fetch_sources(settings) if self.from_sources else None
        engine = EngineHook(settings=settings).get_conn()
        logins = {request.registry: registry_hook.credentials} if registry_hook.credentials else {}
        parts: list[dict[str, Any]] = []
        with build_context(constraints, sources=checkout) as (context, tree), engine.logged_in(logins):
            if tree is not None:
                build_args |= {"AIRFLOW_INSTALL_FROM": "sources", "AIRFLOW_VERSION": tree.version,
                               "VERSION": tree.version}
                if self.kind is not ImageKind.CI:
                    build_args["UI_BUILD_IMAGE"] = self.ui_build_image(settings)
            if constraints:
                build_args |= {"AIRFLOW_CONSTRAINTS_LOCATION": CONSTRAINTS_IN_CONTEXT,
                               "UPGRADE_TO_NEWER_DEPENDENCIES": "false"}
                self.log.info("Installing with the given constraints (%d pins)", len(parse_pins(constraints)))
            ui_args: dict[str, str] | None = None
            for platform, tag in tags.items():
                hashing = time.monotonic()
                key = self.content_key(context, build_args, platform)
                reused = self.reuse_published(image, key, registry_hook, since=hashing, platform=platform)
                if reused is not None:
                    parts.append(self._summary(reused, plans[platform], tree, platform, tag))
                    continue
                platform_args = {**build_args, CONTENT_KEY_ARG: key or ""}
                if tree is not None:
                    if self.kind is not ImageKind.CI:
                        # once per step: every platform takes the same compiled UI (it is platform-free)
                        ui_args = ui_args if ui_args is not None else self.ui_assets(
                            engine, context, platform_args, secrets, registry_hook, settings)
                        platform_args |= ui_args
                    self.log.info("Building Airflow %s from the sources of %s at %s for %s", tree.version,
                                  request.branch, self.sha, platform)
                parts.append(self._build_one(engine, context, image.ref(tag), platform, platform_args, secrets,
                                             plans[platform], tree, key))
        if self.kind is ImageKind.CI:
            # seed 000's manifest image holds one image id: the first platform's (the engine's own, usually)
            manifest = self._build_manifest_image(engine, images, parts[0]["image_id"])
            for part in parts:
                part["manifest_image"] = manifest
        if not is_index(self.platforms):
            return parts[0]
        if all(part.get("reused") for part in parts):
            reused = self._reused_index(registry_hook, image, parts)
            if reused is not None:
                return reused
        return {"python": self.python, "kind": self.kind.value, "image": image.ref(self.sha),
                "platforms": parts, **({"manifest_image": parts[0]["manifest_image"]} if "manifest_image" in parts[0]
                                       else {}),
                **({"airflow_version": tree.version} if tree is not None else {})}

    def _reused_index(self, registry_hook: RegistryHook, image: ImageName, parts: list[dict[str, Any]]) -> dict | None:
        """Every platform reused the same published index's children: the summary of that index (its digest
        is promoted as is); None when they came from different images (each is then tagged on its own)."""
        refs = {part["reused"] for part in parts}
        if len(refs) != 1:
            return None
        [ref] = refs
        with registry_hook.get_conn() as client:
            index = client.get_manifest(*repository_and_reference(ref))
        if [c["digest"] for c in index.children] != [part["digest"] for part in parts]:
            return None
        return {"python": self.python, "kind": self.kind.value, "image": image.ref(self.sha), "platforms": parts,
                "reused": ref, "digest": index.digest, "content_key": None,
                **({"airflow_version": parts[0]["airflow_version"]} if "airflow_version" in parts[0] else {})}

    def _build_one(
        self, engine: Engine, context: Path, ref: str, platform: str, build_args: Mapping[str, str],
        secrets: Mapping[str, str], plan: CachePlan, tree: SourceTree | None, key: str | None,
    ) -> dict[str, Any]:
        """Build one platform's image as ``ref``; its summary, with the provenance facts its evidence signs."""
        spec = BuildSpec(
            context=context,
            dockerfile=self._DOCKERFILES[self.kind],
            target=self.target,
            tags=(ref,),
            build_args=build_args,
            cache_from=plan.cache_from,
            no_cache=plan.no_cache,
            inline_cache=plan.inline_cache,
            secrets=secrets,
            platform=platform,
        )
        started_on = _now_iso()
        report = engine.build(spec, on_line=self.stream)
        provenance = {
            "dockerfile": spec.dockerfile, "target": spec.target, "started_on": started_on,
            "finished_on": _now_iso(), "platform": platform,
            "dockerfile_digest": hashlib.sha256((context / spec.dockerfile).read_bytes()).hexdigest(),
            # CREATED differs on every build; what made the image is the rest
            "build_args": {k: v for k, v in build_args.items() if k != "CREATED"},
        }
        self.log.info("steps that ran: %s", "; ".join(report.ran_steps) or "none (every step came from the cache)")
        summary = self._summary({**report.to_dict(), "reused": None, "content_key": key, "provenance": provenance},
                                plan, tree, platform, ref.rsplit(":", 1)[1])
        # the platform last: "Built <image>: <id>, N MB, Ns, a/b steps cached" is what benchmarks and tests read
        self.log.info(
            "Built %s: %s, %.0f MB, %.1fs, %d/%d steps cached (%s)",
            summary["image"], report.image_id, report.size / 1e6, report.duration, report.cached_steps,
            report.steps, platform,
        )
        return summary

    def _summary(
        self, outcome: Mapping[str, Any], plan: CachePlan, tree: SourceTree | None, platform: str, tag: str,
    ) -> dict[str, Any]:
        """What a build step returns for one platform, whether it built (``outcome``: the build report) or
        reused a published image (``outcome``: reuse_published's answer): the image, its platform, the cache
        plan and the sources' version."""
        summary = {"python": self.python, "kind": self.kind.value, "image": self.images[self.kind].ref(tag),
                   "platform": platform, **outcome, "cache": plan.to_dict()}
        if tree is not None:
            summary["airflow_version"] = tree.version
        return summary

    def content_key(self, context: Path, build_args: Mapping[str, str], platform: str) -> str | None:
        """This build's content key for ``platform`` (content.py), or None where equal inputs need not give an
        equal image: an eager upgrade resolves against the index as it is at build time."""
        if build_args.get("UPGRADE_TO_NEWER_DEPENDENCIES") == "true":
            return None
        return content_key(
            kind=self.kind.value, context=context, dockerfile=self._DOCKERFILES[self.kind],
            target=self.target, build_args={**build_args, "TARGETPLATFORM": platform},
            checks=self.checks_identity(),
        )

    def checks_identity(self) -> tuple[str, ...]:
        """What the image must pass before it is pushed: a reused image passed these very checks."""
        # EVIDENCE_FORMAT: an image published before its evidence was signed (or in another format) is
        # built and attested anew rather than reused without it.
        if self.kind is ImageKind.CI:
            return (self.request.test_command or DEFAULT_CI_TEST_COMMAND, EVIDENCE_FORMAT)
        # The PROD checks are this package's code: any change to them is a new key.
        return (inspect.getsource(image_contract), inspect.getsource(VerifyImageOperator), EVIDENCE_FORMAT)

    def reuse_published(
        self, image: ImageName, key: str | None, registry_hook: RegistryHook, *, since: float | None = None,
        platform: str = DEFAULT_PLATFORMS[0],
    ) -> dict | None:
        """The summary of the published image for ``platform`` whose content key is ``key`` (its ``:SHA``
        or ``:SHA-<arch>``, then its ``latest``; an index's child for the platform), read from manifests and
        config blobs only; None when this build must run. Its duration counts from ``since``
        (``time.monotonic()`` when the key's hashing began)."""
        request = self.request
        why_not = "release images are built from the index" if not self.reuses_published else reuse_blocker(
            request.cache, key, rebuild=request.rebuild, push=request.push)
        if why_not is not None:
            self.log.info("content key %s: not looking for a published image (%s)", (key or "none")[:12], why_not)
            return None
        started = time.monotonic() if since is None else since
        # Only :SHA and latest are pushed after their checks passed; the PROD build stage only as latest.
        own_tag = platform_tags(self.sha, self.platforms)[platform]
        tags = (own_tag, image.promoted_tag) if self.kind in SHA_PUSHED else (image.promoted_tag,)
        candidates = [image.ref(tag) for tag in tags]
        published: dict[str, str | None] = {}
        found: dict[str, tuple[str, dict]] = {}
        with registry_hook.get_conn() as client:
            for tag, ref in zip(tags, candidates, strict=True):
                manifest = client.platform_manifest(image.path, tag, platform)
                if manifest is None:
                    published[ref] = None
                    continue
                config = client.config_of(image.path, manifest, reference=tag)
                published[ref] = config_labels(config).get(CONTENT_KEY_LABEL)
                found[ref] = (manifest.digest, manifest.document)
                if published[ref] == key:
                    break
        plan = plan_reuse(candidates, published, key)
        self.log.info("%s", plan.note)
        if plan.reuse is None:
            return None
        digest, document = found[plan.reuse]
        seconds = time.monotonic() - started
        self.log.info("Reused %s: %s, %.2fs, content key %s (%s)", plan.reuse, digest, seconds, key, platform)
        return {
            "reused": plan.reuse, "digest": digest, "image_id": document["config"]["digest"], "content_key": key,
            "duration_s": round(seconds, 2), "steps": 0, "cached_steps": 0, "ran_steps": [],
            "size": sum(layer.get("size", 0) for layer in document.get("layers", [])), "tags": [],
        }

    def ui_assets(
        self, engine: Engine, context: Path, build_args: Mapping[str, str], secrets: Mapping[str, str],
        registry_hook: RegistryHook, settings: Settings,
    ) -> dict[str, str]:
        """The build args that say where this PROD build takes the compiled UI from (plan_ui_assets).

        The PROD build takes what its PROD build stage image of this run took (its label): the two must
        agree, or the stage's install layer would not be reused. Otherwise the content key of the UI
        sources names ``REG/REPO/ui-assets:<key>``; when the plan says so it is built and pushed first,
        under a lock on that key: the Python versions of a run build at once under a real scheduler, and
        the one that waited takes what the other published instead of compiling it again."""
        request = self.request
        variant = variant_of(self.kind)
        if variant is not None and self.kind is variant.prod:
            # every platform's stage took the same compiled UI: the first one's label says which
            first_tag = next(iter(platform_tags(self.sha, self.platforms).values()))
            stage = self.images[variant.prod_build].ref(first_tag)
            if engine.has_image(stage):
                label = labels_of(engine.inspect(stage)).get(UI_ASSETS_LABEL, "")
                taken = label if "@" in label else None  # the label's default, "scratch": compiled there
                self.log.info("compiled UI: as the PROD build stage %s took it (%s)", stage,
                              taken or "compiled in the build")
                return _ui_assets_args(taken)
        key = ui_sources_key(context / SOURCES_IN_CONTEXT, [context / name for name in UI_RECIPE])
        image = ui_assets_image(request.registry, request.repository)
        ref = image.ref(key)
        present = self._published_ui(registry_hook, image.path, key)
        plan = plan_ui_assets(request.cache, ref, present is not None, may_push=request.push)
        if plan.source is UiAssetsSource.BUILD:
            self.log.info("%s", plan.note)
            return _ui_assets_args(None)
        if plan.publish_first:
            lock = promotion_lock(
                settings, registry=request.registry, repository=image.path, branch=key, purpose="UI compile",
                owner=f"{self.python} of {request.branch} at {self.sha}", find_connection=find_connection,
                on_wait=self.log.info,
            )
            with lock.hold():
                present = self._published_ui(registry_hook, image.path, key)
                if present is not None:
                    self.log.info("compiled UI from %s (published by another build while this one waited)", ref)
                    return _ui_assets_args(f"{image.name}@{present}")
                self.log.info("%s", plan.note)
                report = engine.build(
                    BuildSpec(context=context, dockerfile="Dockerfile", target=UI_ASSETS_TARGET, tags=(ref,),
                              build_args=build_args, no_cache=plan.no_cache, inline_cache=False, secrets=secrets),
                    on_line=self.stream,
                )
                self.log.info("Built %s: %s in %.1fs", ref, report.image_id, report.duration)
                present = engine.push(ref, auth=registry_hook.credentials, on_line=self.log.debug)
        else:
            self.log.info("%s", plan.note)
        return _ui_assets_args(f"{image.name}@{present}")

    def _published_ui(self, registry_hook: RegistryHook, path: str, key: str) -> str | None:
        """The digest of ``path:key`` when the run trusts the registry (``pulled``) and it is there."""
        if self.request.cache != CacheStrategy.PULLED.value:
            return None
        with registry_hook.get_conn() as client:
            return client.manifest_digest(path, key)

    def ui_build_image(self, settings: Settings) -> str:
        """The base the UI is compiled on: the Python base of the run's lowest Python version, pinned.

        The compiled UI is the same whatever Python builds it, so every version of a run (and every
        run with that lowest version) shares one UI stage instead of compiling it once per version.
        """
        python = min(self.request.python_versions, key=lambda v: tuple(int(p) for p in v.split(".")))
        if python == self.python:
            return self.python_base["pinned"]
        upstream = images_for(self.request, python).upstream_python_base
        with self.registry_hook(settings, upstream.registry).get_conn() as client:
            digest = client.manifest_digest(upstream.path, upstream.fixed_tag)
        if digest is None:
            raise BaseImageMissing(
                f"python base image: {upstream.ref()} not found (python_versions {python}: the UI's build base)"
            )
        return upstream.ref(digest)

    def _build_manifest_image(self, engine: Engine, images: ImageSet, ci_image_id: str) -> str:
        """The CI manifest image: a tiny image holding the CI image's hash (seed 000's build-cache hash).

        A developer compares it with a local CI image to decide pull vs rebuild without pulling the
        large image.
        """
        with tempfile.TemporaryDirectory(prefix="ci-manifest-") as tmp:
            Path(tmp, "build-cache-hash").write_text(ci_image_id + "\n")
            Path(tmp, "Dockerfile").write_text(
                "FROM scratch\nCOPY build-cache-hash /build-cache-hash\n"
                f'LABEL org.opencontainers.image.revision="{self.sha}"\n'
            )
            tags = (images.local_ci_manifest.ref(self.sha), images.ci_manifest.ref(self.sha))
            engine.build(BuildSpec(context=Path(tmp), dockerfile="Dockerfile", tags=tags), on_line=self.log.debug)
        return images.ci_manifest.ref(self.sha)


# How much longer a step may take for a platform the engine emulates: QEMU user emulation ran our build and
# check 5-8 times slower than natively here (benchmarks/emulated_build.py).
EMULATION_SLOWDOWN = 6

# The compiled UI: the Dockerfile's target that holds it, the label of the PROD build stage image that
# names what the stage took, and what else decides its content (sources.ui_sources_key).
UI_ASSETS_TARGET = "ui-assets-build"
UI_ASSETS_LABEL = "org.apache.airflow.ui-assets"
UI_RECIPE = ("Dockerfile", "include/docker/scripts/compile_ui_assets.sh", "include/docker/scripts/with_extra_ca.sh")


def _ui_assets_args(image: str | None) -> dict[str, str]:
    """``image`` (``name@digest``): take the compiled UI from it; None: compile it in the build."""
    if image is None:
        return {"UI_ASSETS_FROM": "build"}
    return {"UI_ASSETS_FROM": "image", "UI_ASSETS_IMAGE": image}


CONSTRAINTS_IN_CONTEXT = "docker-context-files/constraints.txt"
METADATA_IN_CONTEXT = "docker-context-files/airflow-metadata"
BUILD_REQUIREMENTS_IN_CONTEXT = "docker-context-files/airflow-build-requirements.txt"
SOURCES_IN_CONTEXT = "airflow-sources"
# What the Dockerfiles read from this package (the rest of the repository stays out of a build context).
_CONTEXT_ENTRIES = ("Dockerfile", "Dockerfile.ci", ".dockerignore", "include/docker")


def sources_cache_dir(settings: Settings) -> Path:
    return Path(settings.sources_cache_dir or Path(tempfile.gettempdir(), "airflow-image-factory-sources"))


@contextlib.contextmanager
def build_context(constraints: str | None, *, sources: Path | None = None):
    """A build context of its own for one build: what the Dockerfiles read of this package, the
    constraints file, and (a branch build) the checkout at ``airflow-sources/`` with the metadata wheels
    of its distributions. Yields ``(context, SourceTree or None)``.

    One directory per build keeps concurrent builds apart; BuildKit keys its cache on content, so
    every copy hits the same cache. The checkout is linked in, not copied, where the filesystem allows.
    """
    root = include_dir().parent
    with tempfile.TemporaryDirectory(prefix="build-context-") as tmp:
        for entry in _CONTEXT_ENTRIES:
            source = root / entry
            if source.is_dir():
                shutil.copytree(source, Path(tmp, entry))
            elif source.is_file():
                shutil.copy2(source, Path(tmp, entry))
        if constraints:
            target = Path(tmp, CONSTRAINTS_IN_CONTEXT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(constraints)
        tree = None
        if sources is not None:
            tree = read_source_tree(sources)
            files, size = stage_sources(sources, Path(tmp, SOURCES_IN_CONTEXT))
            write_metadata_wheels(tree, Path(tmp, METADATA_IN_CONTEXT))
            Path(tmp, BUILD_REQUIREMENTS_IN_CONTEXT).write_text("\n".join(tree.build_requirements()) + "\n")
            log.info("Build context: %d source files, %.1f MB", files, size / 1e6)
        yield Path(tmp), tree


# Airflow's list of the providers in its regular PROD image, at the root of its sources.
PROD_PROVIDERS_FILE = "prod_image_installed_providers.txt"


class VerifyImageOperator(ImageFactoryOperator):
    """Run the checks inside a built image; any failure fails the task and so blocks ``latest``.

    CI: the request's ``test_command`` (default: the verification suite baked into the CI image).
    PROD: the official image's contract (``image_contract.prod_checks``: versions, environment, umask,
    arbitrary uids, group 0, no command, ``pip check``, no node, ``/clean-logs``, migration by the
    entrypoint), then the api-server's health endpoint and its UI answering within a bound.
    """

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "build")
    timeout_setting = "timeout_verify_minutes"
    # Branch builds read Airflow's expected providers from their sources; release builds have none.
    from_sources = True

    def __init__(self, *, kind: str, build: Mapping[str, Any] | Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kind = ImageKind(kind)
        # The build step's summary: an image it reused (content key) passed these checks when published.
        self.build = build

    def execute(self, context: Any) -> dict[str, Any]:
        variant = self.skip_unless_requested(self.kind)
        parts = built_platforms(self.build) or [{"image": self.images[self.kind].ref(self.sha),
                                                 "platform": self.platforms[0]}]
        if not is_index(self.platforms):
            return self._verify_one(parts[0], variant)
        # Every platform's image runs every check; another architecture's under QEMU emulation.
        verified = [self._verify_one(part, variant) for part in parts]
        return {"python": self.python, "kind": self.kind.value, "image": self.images[self.kind].ref(self.sha),
                "checks": [check | {"platform": v["platform"]} for v in verified for check in v["checks"]],
                "platforms": verified}

    def _verify_one(self, part: Mapping[str, Any], variant: Variant | None) -> dict[str, Any]:
        image, platform = part["image"], part.get("platform") or self.platforms[0]
        summary = {"python": self.python, "kind": self.kind.value, "image": image, "platform": platform}
        if reused := reused_image(part):
            self.log.info("%s is %s (content key %s), which passed these checks before it was published: "
                          "not run again", image, reused, (part.get("content_key") or "")[:12])
            return {**summary, "checks": [], "reused": reused}
        settings = run_settings()
        engine = EngineHook(settings=settings).get_conn()
        labels = labels_of(engine.inspect(image))
        # The version the image was built as (the sources' own version), and its extras, from its labels.
        expected_version = labels.get(VERSION_LABEL, "")
        if variant is None:
            checks = self._ci_checks()
        else:
            checks = prod_checks(expected_version, extras=labels.get(EXTRAS_LABEL, ""),
                                 expected_providers=self.expected_providers(settings, variant))
        self.log.info("Verifying %s (%s)", image, platform)
        started = time.monotonic()
        # Through the image's own entrypoint, as a user runs it.
        results = verify.run_checks(engine, image, checks, on_line=self.stream, say=self.log.info)
        if variant is not None:
            # Under QEMU the api-server starts several times slower than natively (benchmarks/emulated_build.py)
            emulated = platform != engine.platform
            seconds = verify.check_api_server(engine, image, say=self.log.info, timeout=verify.API_SERVER_HEALTH_TIMEOUT
                                              * (EMULATION_SLOWDOWN if emulated else 1))
            self.log.info("api-server health answered and the UI was served in %.0fs", seconds)
            results.append({"check": "api-server health", "passed": True, "seconds": round(seconds, 1)})
        took = time.monotonic() - started
        self.log.info("Verified %s (%s): %d checks passed in %.1fs", image, platform, len(results), took)
        return {**summary, "checks": results, "duration_s": round(took, 1)}

    def expected_providers(self, settings: Settings, variant: Variant) -> tuple[str, ...]:
        """The providers the image must hold exactly, as Airflow's own PROD image tests read them from the
        sources: slim, airflow-core's ``dependencies``; regular, ``prod_image_installed_providers.txt``.
        Empty where the sources lack the file (or no sources were built): the image's extras decide."""
        if not self.from_sources:
            return ()
        checkout = self.fetch_sources(settings)
        if variant.name == "slim":
            pyproject = checkout / "airflow-core" / "pyproject.toml"
            return providers_in_pyproject(pyproject.read_text()) if pyproject.is_file() else ()
        listed = checkout / PROD_PROVIDERS_FILE
        if listed.is_file():
            return providers_in_list_file(listed.read_text(), python=self.python)
        self.log.info("The sources have no %s: the providers expected are those the image's extras require",
                      PROD_PROVIDERS_FILE)
        return ()

    def _ci_checks(self) -> list[ImageCheck]:
        return ci_checks(self.request)


def ci_checks(request: BuildRequest) -> list[ImageCheck]:
    """The CI image's check: the request's ``test_command`` (default: the verification suite in the image)."""
    command = request.test_command or DEFAULT_CI_TEST_COMMAND
    return [ImageCheck(name="tests", command=("bash", "-c", command))]


def build_secrets(settings: Settings) -> dict[str, str]:
    """The BuildKit secrets of every build: the extra CA bundle, when set (never a build arg or a layer)."""
    if not settings.extra_ca_bundle:
        return {}
    if not os.path.isfile(settings.extra_ca_bundle):
        raise FileNotFoundError(f"extra_ca_bundle setting: {settings.extra_ca_bundle} is not a file")
    return {EXTRA_CA_SECRET_ID: settings.extra_ca_bundle}


class PushImageOperator(ImageFactoryOperator):
    """Push the tested ``name:SHA`` image; returns the registry's digest (``None`` when push is off)."""

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "build")
    operator_extra_links = (RegistryImageLink(),)
    timeout_setting = "timeout_push_minutes"

    def __init__(self, *, kind: str, build: Mapping[str, Any] | Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kind = ImageKind(kind)
        # The build step's summary: a reused image is tagged :SHA in the registry, nothing is uploaded.
        self.build = build

    def execute(self, context: Any) -> str | None:
        self.skip_unless_requested(self.kind)
        if not self.request.push:
            self.log.info("push is off for this run: %s stays local", self.images[self.kind].ref(self.sha))
            return None
        settings = run_settings()
        # A registry that is down fails here in about a second, and is not retried; not after every
        # engine try has spent ~50 s in the daemon's own per-layer retries.
        fail_if_unreachable(self.request.registry)
        hook = self.registry_hook(settings)
        engine = EngineHook(settings=settings).get_conn()
        image = self.images[self.kind]
        ref = image.ref(self.sha)
        parts = built_platforms(self.build) or [{"image": ref, "platform": self.platforms[0]}]
        with hook.get_conn() as client:
            client.ping()
            pushed = [(part.get("platform", ""), self._push_one(client, engine, hook, part, settings))
                      for part in parts]
            if not is_index(self.platforms):
                record_image_ref(context, ref)
                return pushed[0][1]
            # One index over the platforms' images, already in the repository: a manifest PUT, nothing uploaded.
            index = image_index([(client.get_manifest(image.path, digest), platform) for platform, digest in pushed])
            digest = client.put_manifest(image.path, self.sha, index)
        self.log.info("Pushed %s as %s: an OCI image index over %s", ref, digest,
                      ", ".join(f"{platform} {child[:19]}" for platform, child in pushed))
        record_image_ref(context, ref)
        return digest

    def _push_one(self, client: Any, engine: Engine, hook: RegistryHook, part: Mapping[str, Any],
                  settings: Settings) -> str:
        """Push one platform's image (or tag the published one it reused); its digest."""
        ref = part["image"]
        if reused := reused_image(part):
            repository, tag = repository_and_reference(ref)
            digest = client.tag(repository, part["digest"], tag)
            self.log.info("Tagged %s as %s: the published %s (content key), no layer moved", ref, digest, reused)
            return digest
        digest = engine.push(ref, auth=hook.credentials, retries=settings.push_retries, on_line=self.stream)
        self.log.info("Pushed %s as %s", ref, digest)
        return digest


class PromoteImagesOperator(ImageFactoryOperator):
    """The gate: only when every Python version passed, publish ``latest`` for all of them.

    CI and PROD ``latest`` are re-tagged from the tested ``:SHA`` digests in the registry (manifest PUTs,
    no blob moves); the Python base, PROD build stage and CI manifest are pushed here for the first
    time, before any re-tag. All-or-nothing: a failure at any step puts every ``latest`` back
    (:class:`airflow_image_factory.services.promotion.Promotion` does the work; this step makes its clients).
    """

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "outcomes", "python_bases")
    operator_extra_links = (RegistryImageLink(),)
    timeout_setting = "timeout_promote_minutes"  # longer than promotion_lock_timeout (settings checks it)

    def __init__(self, *, outcomes: Sequence[Mapping[str, Any]] | Any, python_bases: Sequence[Mapping] | Any,
                 **kwargs: Any):
        # Which latest images a run publishes is known only at run time: events go through the alias.
        kwargs.setdefault("outlets", [PUBLISHED_IMAGES_ALIAS])
        super().__init__(**kwargs)
        self.outcomes = outcomes
        self.python_bases = python_bases

    def execute(self, context: Any) -> list[dict[str, str]]:
        request = self.request
        outcomes = {o["python"]: VersionOutcome.from_dict(o) for o in mapped_values(self.outcomes) if o}
        images = {v: images_for(request, v) for v in request.python_versions}
        bases = {b["python"]: b for b in mapped_values(self.python_bases) if b}
        local_images = {
            v: {
                # several platforms: platform → that platform's local image (pushed as <tag>-<arch>, then indexed)
                ImageKind.PYTHON_BASE.value: (bases[v].get("platforms") or bases[v]["local"]) if v in bases else None,
                **{kind.value: self._local(images[v][kind], outcomes[v].platform_digests.get(kind.value) if v in
                                           outcomes else None)
                   for kind in variant_kinds(request.variants) if kind not in SHA_PUSHED},
                ImageKind.CI_MANIFEST.value: images[v].ci_manifest.ref(self.sha),
            }
            for v in request.python_versions
        }
        plan = plan_promotion(
            push=request.push, python_versions=request.python_versions, outcomes=outcomes, images=images,
            local_images=local_images, variants=request.variants,
        )
        if not plan.allowed and not request.push:
            self.log.info("Nothing published: %s", plan.reason)
            return []
        refuse_unless_allowed(plan)  # before any client is made

        from airflow_image_factory.tasks.evidence import evidence_check

        settings = run_settings()
        hook = self.registry_hook(settings)
        engine = EngineHook(settings=settings).get_conn()
        # Serialises promotions per registry/repository/branch; other branches never wait. A file lock on
        # one machine, a PostgreSQL advisory lock across machines (clients/locks.py).
        lock = promotion_lock(
            settings, registry=request.registry, repository=request.repository, branch=request.branch,
            owner=f"{(context or {}).get('run_id', 'a run')} of {request.branch} at {self.sha}",
            find_connection=find_connection, on_wait=self.log.info,
        )
        with hook.get_conn() as client:
            published = Promotion(
                registry=client, engine=engine, lock=lock, log=self.log.info,
                push_auth=hook.credentials, push_retries=settings.push_retries, on_line=self.log.debug,
                evidence_problems=evidence_check(settings, client, push=request.push),
            ).apply(plan, self.sha)
        self._announce(context, published)
        return published

    def _local(self, image: ImageName, reused: Mapping[str, str] | None = None) -> str | dict[str, str]:
        """The local ``name:SHA`` of an image first pushed at promotion, or its platforms' ``name:SHA-<arch>``
        (``reused``: platform → the digest of a published image a platform reused, tagged instead)."""
        if not is_index(self.request.platforms):
            return image.ref(self.sha)
        return {p: (reused or {}).get(p) or image.ref(tag)
                for p, tag in platform_tags(self.sha, self.request.platforms).items()}

    def _announce(self, context: Any, published: list[dict[str, str]]) -> None:
        """An asset event per published latest (DAGs such as smoke_deploy are scheduled on them), and
        the registry link of the first PROD image."""
        events = context["outlet_events"][PUBLISHED_IMAGES_ALIAS]
        for item in published:
            events.add(image_asset(item["image"]), extra={"digest": item["digest"]})
        prod = [item["image"] for item in published if item["kind"] == ImageKind.PROD.value]
        if prod:
            record_image_ref(context, prod[0])


class TidyEngineOperator(ImageFactoryOperator):
    """When the run ends, however it ended: drop from the engine every image of the run that the
    registry holds byte for byte, then trim BuildKit's cache to the ``build_cache_keep_gb`` setting.

    "Holds byte for byte" means a manifest digest the engine itself recorded when it pushed that image
    (its ``RepoDigests``) is in the registry now. Images never pushed (``push`` off, a failed check, a
    promotion that did not happen) stay, for the user to run or debug. Later builds take their cache
    from the registry, so this costs a layer download, not a rebuild.
    """

    timeout_setting = "timeout_short_minutes"

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        report = TidyReport()
        if not self.build_request:  # the run stopped before building anything
            return report.to_dict()
        settings = run_settings()
        request = self.request
        engine = EngineHook(settings=settings).get_conn()
        if not settings.remove_pushed_images:
            self.log.info("remove_pushed_images is off: the run's images stay on the engine")
        elif not request.push:
            self.log.info("push is off for this run: its images stay on the engine")
        else:
            refs = self.droppable(request)
            with self.registry_hook(settings).get_conn() as client:
                try:
                    for ref in refs:
                        self._drop_if_pushed(engine, client, ref, report)
                except RegistryError as exc:
                    # Housekeeping never fails a run: what could not be checked stays on the engine.
                    self.log.warning("registry unreachable, the rest of the run's images stay: %s", exc)
                    report.kept.update({ref: "registry unreachable" for ref in refs
                                        if ref not in report.removed and ref not in report.kept})
        keep = keep_bytes(settings.build_cache_keep_gb)
        if keep is not None:
            report.build_cache_reclaimed = engine.prune_build_cache(keep)
            self.log.info("build cache trimmed to %d GiB: %.0f MB reclaimed", settings.build_cache_keep_gb,
                          report.build_cache_reclaimed / 1e6)
        return report.to_dict()

    def droppable(self, request: BuildRequest) -> list[str]:
        """The local references the run made that may leave the engine once the registry holds them."""
        # several platforms: each platform's name:SHA-<arch> (the CI manifest is still name:SHA)
        tags = dict.fromkeys([self.sha, *(tag for platforms in (request.platforms, request.ci_platforms)
                                          for tag in platform_tags(self.sha, platforms).values())])
        return [ref for python in request.python_versions for tag in tags
                for ref in droppable_refs(images_for(request, python), tag)]

    def _drop_if_pushed(self, engine: Engine, client: Any, ref: str, report: TidyReport) -> None:
        digests = engine.repo_digests(ref)
        if digests is None:
            return  # never built here, or already gone
        repository, _ = repository_and_reference(ref)
        if not any(client.manifest_digest(repository, d) for d in pushed_digests(ref, digests)):
            report.kept[ref] = "not in the registry"
            self.log.info("kept %s: the registry does not hold it", ref)
            return
        if why := engine.untag(ref):
            report.kept[ref] = why
            self.log.info("kept %s: %s", ref, why)
            return
        report.removed.append(ref)
        self.log.info("removed %s from the engine (the registry holds it)", ref)


def reused_image(build: Mapping[str, Any] | None) -> str | None:
    """The published image a build step reused instead of building (its summary's ``reused``), or None."""
    return build.get("reused") if isinstance(build, Mapping) else None


def mapped_values(value: Any) -> list[Any]:
    """The values of a mapped task's XCom: a sequence - or, when the map had a single entry (one
    Python version), Airflow hands over that one value itself."""
    if not value:
        return []
    if isinstance(value, Mapping):
        return [value]
    return list(value)
