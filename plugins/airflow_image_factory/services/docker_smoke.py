"""Run a rendered chart's pods on a Docker engine, the way a kubelet would, where no kind is available.

The containers run with the same image, command, args and environment (``valueFrom`` resolved from the
rendered Secrets and ConfigMaps), user and volumes as in the pod spec, on a user-defined network where each
Service's DNS names are network aliases of the pods it selects. Probes are run as Kubernetes runs them:
``httpGet`` against the container's IP, ``exec`` inside the container, ``tcpSocket``; with
``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``, ``failureThreshold`` and startup probes
gating liveness and readiness.

The order is what a ``helm install`` (without ``--wait``) converges to: pre-install hooks run to completion
first, by ``helm.sh/hook-weight``; then the Jobs start, the post-install hooks one after the other by weight
(each to completion, as Helm runs them), while the StatefulSets and Deployments start next to them. Nothing
waits for the database on the runner's side: a Job's pod waits the way it does in a cluster (the image's
entrypoint tries the database; a failed try is retried with back-off up to ``backoffLimit``), and pods wait for
the migrations in their init containers.

As a kubelet: a container that exits (or fails its liveness or startup probe and is killed) is started again
after a back-off of 10 s, doubling, up to a bound of restarts (:class:`BackOff`) past which the run fails, as
CrashLoopBackOff would stop a deploy being healthy; init containers likewise. One exception: a container
that ends with an ImportError fails the run at once (the image lacks a module; no restart can add it).
Pod ``securityContext`` ``runAsUser`` / ``runAsGroup`` set the user, ``fsGroup`` and ``supplementalGroups``
are supplementary groups, and every emptyDir starts empty, mode 0777, owned by the ``fsGroup`` with the
setgid bit (as the kubelet makes it). ConfigMap and Secret volumes show their keys (or their ``items``) as
files; a ``subPath`` mount is that one file (or directory) at the mount path. A failed run says which
modules its configuration names (auth manager, executor, database driver) the image lacks.

What differs from a cluster, on purpose: one replica per workload; a restart is bounded; a container counts
as up once it stayed up ``min_ready_seconds`` (like a Deployment's minReadySeconds), so one without probes that
exits at once is caught; emptyDirs and PersistentVolumeClaims are Docker volumes removed with the run.
"""

from __future__ import annotations

import base64
import concurrent.futures
import configparser
import contextlib
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from airflow_image_factory.exceptions import SmokeDeployError, SmokeRunFailed
from airflow_image_factory.policy.reference import name_and_tag
from airflow_image_factory.services.chart import HEALTH_PATH, HOOK_ANNOTATION, Rendered

log = logging.getLogger(__name__)

RUN_LABEL = "image-factory.smoke-run"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LOG_TAIL = 40
# Makes each fresh emptyDir (the arguments) 0777 and, with an fsGroup ($G), group-owned with setgid, as
# the kubelet prepares them; values reach it only as arguments and environment, never as script text.
_VOLUMES_SETUP_SCRIPT = ('for d in "$@"; do chmod 0777 "$d" || exit 1; '
                         'if [ -n "$G" ]; then chgrp "$G" "$d" && chmod g+s "$d" || exit 1; fi; done')
MAX_JOB_RETRIES = 3  # a deterministic failure (broken entrypoint) is not worth backoffLimit's 6 tries
_MISSING_MODULE = re.compile(r"No module named '([A-Za-z0-9_.]+)'")
# Modules Airflow imports from a provider's dependencies: the metadata database's drivers.
_DRIVER_PROVIDERS = {"psycopg2": "postgres", "asyncpg": "postgres", "MySQLdb": "mysql", "pymssql": "microsoft-mssql"}
_IMPORT_FAILURE = re.compile(r"^(ModuleNotFoundError|ImportError): .+")
HOOK_WEIGHT_ANNOTATION = "helm.sh/hook-weight"


@dataclass(frozen=True)
class BackOff:
    """The kubelet's crash back-off (10 s, doubling, at most 5 min), with a bound of restarts for a smoke run."""

    initial: float = 10.0
    factor: float = 2.0
    cap: float = 300.0
    max_restarts: int = 4

    def delay(self, restarts_so_far: int) -> float:
        return min(self.initial * self.factor**restarts_so_far, self.cap)

    def schedule(self) -> list[float]:
        """The waits before each allowed restart, in order."""
        return [self.delay(n) for n in range(self.max_restarts)]


# ---- the plan: pods and containers derived from the rendered objects (pure) -----------------------


@dataclass(frozen=True)
class Probe:
    kind: str  # startup | readiness | liveness
    handler: str  # httpGet | exec | tcpSocket
    spec: Mapping[str, Any]
    initial_delay: float
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int

    @classmethod
    def from_k8s(cls, kind: str, probe: Mapping[str, Any]) -> Probe:
        handlers = [h for h in ("httpGet", "exec", "tcpSocket", "grpc") if h in probe]
        if len(handlers) != 1:
            raise SmokeRunFailed(f"{kind} probe must have exactly one handler, has {handlers or 'none'}")
        if handlers[0] == "grpc":
            raise SmokeRunFailed(f"{kind} probe: grpc probes are not emulated by the Docker-backed run")
        return cls(
            kind=kind,
            handler=handlers[0],
            spec=probe[handlers[0]],
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
            success_threshold=int(probe.get("successThreshold", 1)),
        )

    def describe(self) -> str:
        if self.handler == "exec":
            return f"{self.kind} exec {' '.join(self.spec.get('command', []))}"
        if self.handler == "httpGet":
            return f"{self.kind} GET :{self.spec.get('port')}{self.spec.get('path', '/')}"
        return f"{self.kind} tcp :{self.spec.get('port')}"


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    pull_policy: str
    entrypoint: list[str] | None
    command: list[str] | None
    env: dict[str, str]
    user: str | None
    working_dir: str | None
    ports: dict[str, int]
    scratch: dict[str, str]  # mount path -> pod volume name (emptyDir, claims)
    files: dict[str, dict[str, str]]  # mount path -> {relative path: content} (a ConfigMap/Secret directory)
    cap_drop: list[str]
    read_only: bool
    probes: tuple[Probe, ...] = ()
    single_files: dict[str, str] = field(default_factory=dict)  # mount path -> content (a subPath file)
    groups: tuple[str, ...] = ()  # supplementary groups: fsGroup, supplementalGroups


@dataclass(frozen=True)
class PodPlan:
    workload: str  # Kind/name
    name: str  # the pod's name (and hostname)
    phase: int  # order of start (see module doc)
    labels: Mapping[str, str]
    aliases: tuple[str, ...]
    init_containers: tuple[ContainerPlan, ...]
    containers: tuple[ContainerPlan, ...]
    is_job: bool = False
    backoff_limit: int = 0
    hook: str = ""  # pre-install | post-install | "" (not a hook of an install)
    hook_weight: int = 0
    fs_group: int | None = None
    scratch_volumes: tuple[str, ...] = ()  # the pod's emptyDir/claim volumes

    @property
    def is_workload(self) -> bool:
        return not self.is_job


# The start order (see the module doc); within a phase by hook weight, then render order.
_PHASE_PRE_HOOK, _PHASE_JOBS, _PHASE_POST_HOOK, _PHASE_STATEFUL, _PHASE_SERVICES = range(5)


def _secret_data(obj: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return data


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in env values, command and args (``$$`` escapes)."""
    return _VAR_REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class _Store:
    """The rendered Secrets and ConfigMaps, as a kubelet would read them."""

    def __init__(self, rendered: Rendered):
        self.secrets = {o["metadata"]["name"]: _secret_data(o) for o in rendered.of_kind("Secret")}
        self.config_maps = {
            o["metadata"]["name"]: {k: str(v) for k, v in (o.get("data") or {}).items()}
            for o in rendered.of_kind("ConfigMap")
        }

    def key(self, kind: str, ref: Mapping[str, Any], where: str) -> str | None:
        source = self.secrets if kind == "secret" else self.config_maps
        name, key = ref.get("name"), ref.get("key")
        if name not in source:
            if ref.get("optional"):
                return None
            raise SmokeRunFailed(f"{where}: {kind} {name!r} is not in the rendered chart (CreateContainerConfigError)")
        if key not in source[name]:
            if ref.get("optional"):
                return None
            raise SmokeRunFailed(f"{where}: {kind} {name!r} has no key {key!r} (CreateContainerConfigError)")
        return source[name][key]

    def all(self, kind: str, ref: Mapping[str, Any], where: str) -> dict[str, str]:
        source = self.secrets if kind == "secret" else self.config_maps
        name = ref.get("name")
        if name not in source:
            if ref.get("optional"):
                return {}
            raise SmokeRunFailed(f"{where}: {kind} {name!r} is not in the rendered chart (CreateContainerConfigError)")
        return dict(source[name])


def _env(container: Mapping[str, Any], store: _Store, pod: str, namespace: str, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            env.update({prefix + k: v for k, v in store.all("secret", source["secretRef"], where).items()})
        elif "configMapRef" in source:
            env.update({prefix + k: v for k, v in store.all("configmap", source["configMapRef"], where).items()})
    fields = {"metadata.name": pod, "metadata.namespace": namespace, "spec.nodeName": "docker"}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = _expand(str(var["value"]), env)
            continue
        ref = var.get("valueFrom") or {}
        value: str | None
        if "secretKeyRef" in ref:
            value = store.key("secret", ref["secretKeyRef"], f"{where} env {name}")
        elif "configMapKeyRef" in ref:
            value = store.key("configmap", ref["configMapKeyRef"], f"{where} env {name}")
        elif "fieldRef" in ref and ref["fieldRef"].get("fieldPath") in fields:
            value = fields[ref["fieldRef"]["fieldPath"]]
        elif not ref:
            value = ""
        else:
            raise SmokeRunFailed(f"{where} env {name}: valueFrom {sorted(ref)} is not emulated by the Docker run")
        if value is not None:
            env[name] = value
    return env


def _user(pod_ctx: Mapping[str, Any], ctx: Mapping[str, Any]) -> str | None:
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    if uid is None:
        return None
    return f"{uid}:{gid}" if gid is not None else str(uid)


def _groups(pod_ctx: Mapping[str, Any]) -> tuple[str, ...]:
    """Supplementary groups the kubelet gives every container of the pod."""
    groups = [pod_ctx["fsGroup"]] if pod_ctx.get("fsGroup") is not None else []
    groups += list(pod_ctx.get("supplementalGroups") or [])
    return tuple(dict.fromkeys(str(g) for g in groups))


def volume_files(volume: Mapping[str, Any], store: _Store, where: str) -> dict[str, str] | None:
    """What a ConfigMap or Secret volume shows, ``{relative path: content}`` (its ``items`` only, when it has
    some); ``None`` for a volume that holds no rendered data (emptyDir, claims)."""
    if "configMap" in volume:
        kind, source = "configmap", volume["configMap"]
        data = store.all(kind, source, where)
    elif "secret" in volume:
        kind, source = "secret", volume["secret"]
        data = store.all(kind, {"name": source.get("secretName"), "optional": source.get("optional")}, where)
    else:
        return None
    if source.get("items") is None:
        return dict(data)
    shown: dict[str, str] = {}
    for item in source["items"]:
        if item["key"] in data:
            shown[item["path"]] = data[item["key"]]
        elif not (source.get("optional") and not data):
            raise SmokeRunFailed(f"{where}: {kind} volume item: no key {item['key']!r} (CreateContainerConfigError)")
    return shown


def _container(
    spec: Mapping[str, Any], pod_spec: Mapping[str, Any], store: _Store, pod: str, namespace: str,
    volumes: Mapping[str, Mapping[str, Any]], with_probes: bool,
) -> ContainerPlan:
    where = f"pod {pod} container {spec['name']}"
    env = _env(spec, store, pod, namespace, where)
    command = [_expand(str(a), env) for a in spec["command"]] if spec.get("command") is not None else None
    args = [_expand(str(a), env) for a in spec["args"]] if spec.get("args") is not None else None
    scratch: dict[str, str] = {}
    files: dict[str, dict[str, str]] = {}
    single_files: dict[str, str] = {}
    for mount in spec.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise SmokeRunFailed(f"{where}: volumeMount {mount['name']!r} names no volume of the pod")
        shown = volume_files(volume, store, where)
        sub_path = str(mount.get("subPath") or "").strip("/")
        path = mount["mountPath"]
        if shown is None:  # emptyDir, and claims (a smoke run keeps no data): a Docker volume per pod volume
            if sub_path:
                raise SmokeRunFailed(f"{where}: subPath {sub_path!r} into volume {mount['name']!r}: only "
                                     "ConfigMap and Secret volumes take a subPath in the Docker-backed run")
            scratch[path] = mount["name"]
        elif not sub_path:
            files[path] = shown
        elif sub_path in shown:  # one key: that file, and nothing else, at the mount path
            single_files[path] = shown[sub_path]
        else:  # a folder of the volume; a subPath naming nothing is an empty directory, as the kubelet makes
            files[path] = {k[len(sub_path) + 1:]: v for k, v in shown.items() if k.startswith(f"{sub_path}/")}
    ctx = spec.get("securityContext") or {}
    probes: list[Probe] = []
    if with_probes:
        for kind in ("startup", "readiness", "liveness"):
            if spec.get(f"{kind}Probe"):
                probes.append(Probe.from_k8s(kind, spec[f"{kind}Probe"]))
    return ContainerPlan(
        name=spec["name"],
        image=spec["image"],
        pull_policy=spec.get("imagePullPolicy", "IfNotPresent"),
        # k8s command = Docker entrypoint, k8s args = Docker cmd; a command without args drops the image's CMD.
        entrypoint=command,
        command=args,
        env=env,
        user=_user(pod_spec.get("securityContext") or {}, ctx),
        working_dir=spec.get("workingDir"),
        ports={p.get("name") or str(p["containerPort"]): int(p["containerPort"]) for p in spec.get("ports") or []},
        scratch=scratch,
        files=files,
        cap_drop=list((ctx.get("capabilities") or {}).get("drop") or []),
        read_only=bool(ctx.get("readOnlyRootFilesystem")),
        probes=tuple(probes),
        single_files=single_files,
        groups=_groups(pod_spec.get("securityContext") or {}),
    )


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def plan_pods(rendered: Rendered, namespace: str) -> list[PodPlan]:
    """One pod per Deployment, StatefulSet, Job and bare Pod of the render, in the order they are started."""
    store = _Store(rendered)
    services = rendered.of_kind("Service")
    plans: list[PodPlan] = []
    for obj in rendered.of_kind("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"):
        kind, name = obj["kind"], obj["metadata"]["name"]
        if install_hook(obj)[0] == "skip":
            continue
        if kind == "Pod":
            template = {"metadata": obj["metadata"], "spec": obj["spec"]}
        else:
            template = obj["spec"]["template"]
        if kind in ("Deployment", "StatefulSet") and obj["spec"].get("replicas", 1) == 0:
            continue
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        pod_spec = template["spec"]
        pod = f"{name}-0" if kind == "StatefulSet" else f"{name}-smoke"
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        for claim in (obj["spec"].get("volumeClaimTemplates") or []) if kind == "StatefulSet" else []:
            volumes[claim["metadata"]["name"]] = {"emptyDir": {}}
        aliases: list[str] = []
        for svc in services:
            if _selects(svc["spec"].get("selector") or {}, labels):
                svc_name = svc["metadata"]["name"]
                aliases += [svc_name, f"{svc_name}.{namespace}", f"{svc_name}.{namespace}.svc",
                            f"{svc_name}.{namespace}.svc.cluster.local"]
        if kind == "StatefulSet" and obj["spec"].get("serviceName"):
            aliases.append(f"{pod}.{obj['spec']['serviceName']}")
        is_job = kind in ("Job", "Pod")
        hook, weight = install_hook(obj)
        if hook == "pre-install":
            phase = _PHASE_PRE_HOOK
        elif hook == "post-install":
            phase = _PHASE_POST_HOOK
        elif is_job:
            phase = _PHASE_JOBS
        elif kind == "StatefulSet":
            phase = _PHASE_STATEFUL
        else:
            phase = _PHASE_SERVICES
        pod_ctx = pod_spec.get("securityContext") or {}
        plans.append(PodPlan(
            workload=f"{kind}/{name}",
            name=pod,
            phase=phase,
            labels=labels,
            aliases=tuple(dict.fromkeys(aliases)),
            init_containers=tuple(
                _container(c, pod_spec, store, pod, namespace, volumes, with_probes=False)
                for c in pod_spec.get("initContainers") or []
            ),
            containers=tuple(
                _container(c, pod_spec, store, pod, namespace, volumes, with_probes=not is_job)
                for c in pod_spec["containers"]
            ),
            is_job=is_job,
            backoff_limit=int(obj["spec"].get("backoffLimit", 6)) if kind == "Job" else 0,
            hook=hook,
            hook_weight=weight,
            fs_group=int(pod_ctx["fsGroup"]) if pod_ctx.get("fsGroup") is not None else None,
            scratch_volumes=tuple(n for n, v in volumes.items() if volume_files(v, store, pod) is None),
        ))
    plans.sort(key=lambda p: (p.phase, p.hook_weight))  # stable: render order within a weight
    return plans


def install_hook(obj: Mapping[str, Any]) -> tuple[str, int]:
    """(``pre-install`` | ``post-install`` | ``""``, weight) of an object, as ``helm install`` treats it.

    A hook of other events only (post-upgrade, test, ...) is not run by an install: Helm does not create it.
    """
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    events = {e.strip() for e in str(annotations.get(HOOK_ANNOTATION, "")).split(",") if e.strip()}
    weight = int(str(annotations.get(HOOK_WEIGHT_ANNOTATION, "0")).strip() or 0)
    if not events:
        return "", 0
    for event in ("pre-install", "post-install"):
        if event in events:
            return event, weight
    return "skip", weight


def missing_providers(text: str) -> dict[str, str]:
    """``{module: provider package}`` of what a container's output says the image lacks: a provider's own
    modules (``airflow.providers.X``) and the database drivers that come with a provider."""
    found: dict[str, str] = {}
    for match in _MISSING_MODULE.finditer(text):
        module = match.group(1)
        if module.startswith("airflow.providers.") or module.split(".")[0] in _DRIVER_PROVIDERS:
            found[_short(module)] = package_of(module)
    return dict(sorted(found.items()))


def missing_provider_hint(logs_by_container: Mapping[str, str], named_by: Mapping[str, str] | None = None) -> str:
    """One line per module the image lacks ("" if none): where the containers' output said so, and which
    setting names it (``named_by``: ``{module: setting}``, from a check of the image itself).

    The container that fails first is often not the one that names the cause (a CLI command of the provider
    is just "invalid choice"; a slim image fails on its database driver before it loads the auth manager),
    so the hint is drawn from every container of the run and from the configuration.
    """
    seen: dict[str, list[str]] = {}
    for name, text in logs_by_container.items():
        for module in missing_providers(text):
            seen.setdefault(module, []).append(name)
    settings = {_short(module): setting for module, setting in (named_by or {}).items()}
    lines = []
    for module in sorted({*seen, *settings}):
        line = f"the image lacks {module} (the package {package_of(module)})"
        if module in settings:
            line += f", which {settings[module]} names"
        if module in seen:
            line += f": No module named '{module}' in {', '.join(sorted(seen[module]))}"
        lines.append(line)
    return "\n".join(lines)


def _short(module: str) -> str:
    """A provider's module by its provider (``airflow.providers.fab``); any other module as it is."""
    return ".".join(module.split(".")[:3]) if module.startswith("airflow.providers.") else module.split(".")[0]


# The metadata database URL's scheme -> the driver module Airflow imports for it.
_URL_DRIVERS = {"postgresql": "psycopg2", "postgresql+psycopg2": "psycopg2", "postgres": "psycopg2",
                "postgresql+asyncpg": "asyncpg", "mysql": "MySQLdb", "mysql+mysqldb": "MySQLdb",
                "mssql+pymssql": "pymssql"}


def configured_modules(plans: Iterable[PodPlan]) -> dict[str, str]:
    """``{module: which setting names it}`` the deployed configuration needs from the image: the auth manager
    and executor classes and the metadata database's driver, from the first container that mounts an
    airflow.cfg (its environment wins over the file, as in Airflow)."""
    for pod in plans:
        for plan in (*pod.init_containers, *pod.containers):
            cfg_text = next((text for path, text in plan.single_files.items() if path.endswith("/airflow.cfg")), None)
            if cfg_text is None:
                continue
            cfg = configparser.ConfigParser(interpolation=None)
            cfg.read_string(cfg_text)

            def setting(section: str, key: str, plan: ContainerPlan = plan, cfg: Any = cfg) -> str:
                env = plan.env.get(f"AIRFLOW__{section.upper()}__{key.upper()}")
                return env if env is not None else cfg.get(section, key, fallback="")

            needed: dict[str, str] = {}
            for section, key in (("core", "auth_manager"), ("core", "executor")):
                value = setting(section, key).strip()
                if "." in value:  # a class path (a bare executor name is one of Airflow's own)
                    needed[value.rsplit(".", 1)[0]] = f"[{section}] {key}"
            scheme = setting("database", "sql_alchemy_conn").split(":", 1)[0]
            if scheme in _URL_DRIVERS:
                needed[_URL_DRIVERS[scheme]] = f"[database] sql_alchemy_conn ({scheme}://)"
            return needed
    return {}


def package_of(module: str) -> str:
    """The package that brings ``module``: a provider's own module or a database driver of one."""
    if module.startswith("airflow.providers."):
        return "apache-airflow-providers-" + module.split(".")[2].replace("_", "-")
    return f"apache-airflow-providers-{_DRIVER_PROVIDERS.get(module.split('.')[0], module)}"


_FIND_MODULES = """
import importlib.util, sys
for name in sys.argv[1:]:
    try:
        found = importlib.util.find_spec(name) is not None
    except ImportError:
        found = False
    if not found:
        print(name)
"""


def import_failure(tail: str) -> str:
    """The ImportError a container ended with ("" if it did not): the image lacks a module, and no restart
    can add one, so a run stops at the first such exit instead of waiting through the back-off."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines and _IMPORT_FAILURE.match(lines[-1]) else ""


HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def health_problems(payload: Any, components: Sequence[str] = HEALTH_COMPONENTS) -> list[str]:
    """What is not healthy in an Airflow 3 ``/api/v2/monitor/health`` answer (empty: all healthy)."""
    if not isinstance(payload, Mapping):
        return [f"the health answer is not a JSON object: {payload!r:.200}"]
    problems = []
    for component in components:
        status = (payload.get(component) or {}).get("status")
        if status != "healthy":
            problems.append(f"{component} is {status or 'missing'}")
    return problems


def poll_health(
    fetch: Callable[[], requests.Response], *, tries: int, interval: float, what: str,
    say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
    before_try: Callable[[], None] | None = None, components: Sequence[str] = HEALTH_COMPONENTS,
) -> dict[str, Any]:
    """Ask for the health answer up to ``tries`` times, ``interval`` apart, until ``components`` are healthy.

    ``fetch`` makes one request (through a port-forward, or to a container's IP); any error is one failed try.
    """
    last = "no answer"
    for attempt in range(1, tries + 1):
        if before_try:
            before_try()
        payload: Any = None
        try:
            answer = fetch()
            payload = answer.json() if answer.ok else None
            problems = health_problems(payload, components) if answer.ok else [f"HTTP {answer.status_code}"]
        except (requests.RequestException, ValueError, OSError) as exc:
            problems = [f"{type(exc).__name__}: {exc}"]
        except SmokeDeployError as exc:  # e.g. a port-forward that did not come up
            problems = [str(exc)]
        if not problems:
            say(f"health of {what}: all healthy (try {attempt}/{tries})")
            return payload
        last = "; ".join(problems)
        say(f"health of {what}: {last} (try {attempt}/{tries})")
        if attempt < tries:
            sleep(interval)
    raise SmokeRunFailed(f"health check of {what} failed {tries} times: {last}")


# ---- the run -------------------------------------------------------------------------------------


class _Stopped(Exception):
    """The run is ending: a worker thread creates no more containers."""


@dataclass(eq=False)
class _ProbeState:
    probe: Probe
    started: float
    next_due: float = 0.0
    failures: int = 0
    successes: int = 0
    satisfied: bool = False  # startup/readiness: passed; liveness: passed at least once
    last: str = "not run yet"

    def __post_init__(self) -> None:
        self.next_due = self.started + self.probe.initial_delay


@dataclass(eq=False)
class _Running:
    pod: PodPlan
    plan: ContainerPlan
    container: Any
    ip: str
    started: float
    probes: list[_ProbeState] = field(default_factory=list)
    restarts: int = 0
    restart_at: float | None = None  # in back-off until then
    last_exit: str = ""  # why the last instance ended, for the failure message

    @property
    def ident(self) -> str:
        return f"{self.pod.name}/{self.plan.name}"

    def startup_done(self) -> bool:
        return self.restart_at is None and all(s.satisfied for s in self.probes if s.probe.kind == "startup")

    def ready(self) -> bool:
        return self.startup_done() and all(s.satisfied for s in self.probes if s.probe.kind == "readiness")

    def settled(self, min_ready_seconds: float) -> bool:
        """Ready, every liveness probe passed once (proof it passes, not only that it has not failed), and up
        for ``min_ready_seconds`` (a container without probes that exits at once is not settled)."""
        return (self.ready() and all(s.satisfied for s in self.probes if s.probe.kind == "liveness")
                and time.monotonic() - self.started >= min_ready_seconds)


@dataclass(frozen=True)
class HealthCheck:
    service: str
    port: int
    path: str = HEALTH_PATH
    tries: int = 12
    interval: float = 10.0


class DockerSmokeRun:
    """One Docker-backed run of a rendered chart (call :meth:`run` once). Always removes what it started."""

    def __init__(
        self, client: Any, rendered: Rendered, *, namespace: str, timeout: float = 900,
        health: HealthCheck | None = None, run_id: str | None = None,
        on_line: Callable[[str], None] | None = None, logs_dir: Path | None = None,
        backoff: BackOff | None = None, job_retries: int = MAX_JOB_RETRIES,
        on_ready: Callable[[DockerSmokeRun], None] | None = None, min_ready_seconds: float = 5.0,
    ):
        """``on_ready`` is called once everything is healthy, before the teardown (to look inside: see
        :meth:`exec_in` and :meth:`address_of`); what it raises fails the run."""
        self.client = client
        self.rendered = rendered
        self.namespace = namespace
        self.timeout = timeout
        self.health = health
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.say = on_line or log.info
        self.logs_dir = logs_dir
        self.backoff = backoff or BackOff()
        self.job_retries = job_retries
        self.on_ready = on_ready
        self.min_ready_seconds = min_ready_seconds
        self.network_name = f"smoke-{self.run_id}"
        self._running: list[_Running] = []
        self._all: list[Any] = []
        self._volumes: set[str] = set()
        self._in_flight: dict[_ProbeState, tuple[_Running, concurrent.futures.Future]] = {}
        self._tmp = Path(tempfile.gettempdir()) / f"smoke-{self.run_id}"  # Secret/ConfigMap volumes' files
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=12, thread_name_prefix="smoke-probe")
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None  # pod starts and Jobs (they wait)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._deadline = 0.0
        self.timeline: list[dict[str, Any]] = []

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self._deadline = started + self.timeout
        plans = plan_pods(self.rendered, self.namespace)
        if not plans:
            raise SmokeRunFailed("the rendered chart has no pods to run")
        self.say(f"smoke run {self.run_id}: {len(plans)} pods, in this order: " + ", ".join(
            p.workload + (f" ({p.hook} hook, weight {p.hook_weight})" if p.hook else "") for p in plans))
        self._workers = concurrent.futures.ThreadPoolExecutor(max_workers=len(plans) + 1,
                                                              thread_name_prefix="smoke-pod")
        try:
            self._tmp.mkdir(mode=0o700)
            self.client.networks.create(self.network_name, driver="bridge", labels={RUN_LABEL: self.run_id})
            self._ensure_images(plans)
            for hook in [p for p in plans if p.phase == _PHASE_PRE_HOOK]:
                self._run_job(hook)  # Helm creates nothing else before these completed
            # Jobs first, each on its own; the post-install hooks one after the other by weight (Helm waits for
            # each); the workloads start next to them and converge.
            background = [self._workers.submit(self._run_job, p) for p in plans if p.phase == _PHASE_JOBS]
            hooks = [p for p in plans if p.phase == _PHASE_POST_HOOK]
            if hooks:
                background.append(self._workers.submit(self._run_jobs_in_turn, hooks))
            starting = [self._workers.submit(self._start_pod, p) for p in plans if p.is_workload]
            self._watch([*background, *starting])
            if self.health:
                self._check_health(self.health)
            if self.on_ready:
                self.on_ready(self)
            return {
                "run_id": self.run_id,
                "pods": [p.workload for p in plans],
                "seconds": round(time.monotonic() - started, 1),
                "restarts": {r.ident: r.restarts for r in self._running if r.restarts},
                "timeline": self.timeline,
            }
        except SmokeRunFailed as exc:
            hint = missing_provider_hint({c.name.removeprefix(f"smoke-{self.run_id}-"): _logs(c)
                                          for c in list(self._all)}, self._missing_in_image(plans))
            if hint:
                raise SmokeRunFailed(f"{exc}\n{hint}") from exc
            raise
        finally:
            self._stop()
            self._save_logs()
            self.cleanup()

    def _missing_in_image(self, plans: Iterable[PodPlan]) -> dict[str, str]:
        """After a failure: ``{module: setting}`` of the modules the configuration names that the Airflow image
        lacks (the cause a crash may hide)."""
        needed = configured_modules(plans)
        image = next((c.image for p in plans for c in (*p.init_containers, *p.containers)
                      if any(path.endswith("/airflow.cfg") for path in c.single_files)), None)
        if not needed or image is None:
            return {}
        try:
            output = self.client.containers.run(
                image, entrypoint=["python", "-c", _FIND_MODULES, *needed], remove=True, network_mode="none",
                name=f"smoke-{self.run_id}-find-modules", labels={RUN_LABEL: self.run_id},
            ).decode(errors="replace")
        except Exception as exc:  # a diagnosis must not hide the failure it explains
            self._note(f"could not check the image for {', '.join(needed)}: {exc}")
            return {}
        return {m: needed[m] for m in output.split() if m in needed}

    def address_of(self, service: str) -> str:
        """The IP of the (running) pod a Service name resolves to."""
        for running in self._running:
            if service in running.pod.aliases and running.restart_at is None:
                return running.ip
        raise SmokeRunFailed(f"no running pod serves the Service {service}")

    def exec_in(self, pod: str, container: str, command: list[str]) -> tuple[int, str]:
        """``kubectl exec``: run ``command`` in a running container of the run; (exit code, output)."""
        for running in self._running:
            if running.pod.name == pod and running.plan.name == container:
                code, output = running.container.exec_run(command, demux=False)
                return int(code), (output or b"").decode(errors="replace")
        raise SmokeRunFailed(f"no running container {pod}/{container}")

    def cleanup(self) -> None:
        """Remove this run's containers, network and files (also after a crash: by label)."""
        remove_run(self.client, self.run_id)
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------------

    def _stop(self) -> None:
        """End the worker threads: no container is created any more; what they wait on is killed."""
        with self._lock:
            self._stopping.set()
        for container in list(self._all):
            with contextlib.suppress(Exception):
                container.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._workers:
            self._workers.shutdown(wait=True, cancel_futures=True)

    def _sleep(self, seconds: float) -> None:
        """A back-off wait that ends early when the run ends (or past the run's deadline)."""
        if self._stopping.wait(max(0.0, min(seconds, self._deadline - time.monotonic()))):
            raise _Stopped
        if time.monotonic() > self._deadline:
            raise SmokeRunFailed(f"the run's bound ({self.timeout:.0f}s) passed during a back-off")

    def _note(self, what: str, **extra: Any) -> None:
        entry = {"t": round(self.timeout - (self._deadline - time.monotonic()), 1), "event": what, **extra}
        self.timeline.append(entry)
        self.say(f"[{entry['t']:>6.1f}s] {what}")

    def _ensure_images(self, plans: Iterable[PodPlan]) -> None:
        import docker.errors

        seen: set[str] = set()
        for pod in plans:
            for plan in (*pod.init_containers, *pod.containers):
                if plan.image in seen:
                    continue
                seen.add(plan.image)
                try:
                    self.client.images.get(plan.image)
                    present = True
                except docker.errors.ImageNotFound:
                    present = False
                if present and plan.pull_policy != "Always":
                    continue
                if plan.pull_policy == "Never":
                    raise SmokeRunFailed(f"{pod.name}/{plan.name}: image {plan.image} is not on the engine "
                                         "and imagePullPolicy is Never (ErrImageNeverPull)")
                self._note(f"pulling {plan.image}")
                name, tag = name_and_tag(plan.image)
                try:
                    self.client.images.pull(name, tag=tag)
                except docker.errors.APIError as exc:
                    raise SmokeRunFailed(f"{pod.name}/{plan.name}: cannot pull {plan.image} (ErrImagePull): "
                                         f"{exc.explanation or exc}") from exc

    def _volume_name(self, pod: PodPlan, volume: str) -> str:
        return f"smoke-{self.run_id}-{pod.name}-{volume}"[:200]

    def _prepare_volumes(self, pod: PodPlan) -> None:
        """The pod's emptyDirs as the kubelet makes them: empty, mode 0777, and with an fsGroup owned by that
        group with the setgid bit (so what any container writes stays the group's)."""
        fresh = [v for v in pod.scratch_volumes if self._volume_name(pod, v) not in self._volumes]
        if not fresh:
            return
        import docker.types

        mounts = []
        for volume in fresh:
            source = self._volume_name(pod, volume)
            self.client.volumes.create(source, labels={RUN_LABEL: self.run_id})
            self._volumes.add(source)
            mounts.append(docker.types.Mount(target=f"/smoke-volumes/{volume}", source=source, type="volume",
                                             no_copy=True))
        group = "" if pod.fs_group is None else str(pod.fs_group)
        with self._lock:
            if self._stopping.is_set():
                raise _Stopped
            container = self.client.containers.create(
                pod.containers[0].image, entrypoint=["/bin/sh", "-c", _VOLUMES_SETUP_SCRIPT, "volumes",
                                                     *(f"/smoke-volumes/{v}" for v in fresh)],
                user="0:0", environment={"G": group}, mounts=mounts, network_mode="none",
                name=f"smoke-{self.run_id}-{pod.name}-volumes"[:120], labels={RUN_LABEL: self.run_id},
            )
            self._all.append(container)
        container.start()
        code = int(container.wait(timeout=120).get("StatusCode", 1))
        if code != 0:
            raise SmokeRunFailed(f"{pod.workload}: its emptyDir volumes could not be set up (exit {code})\n"
                                 f"{_tail(container)}")

    def _create(self, pod: PodPlan, plan: ContainerPlan, suffix: str = "") -> Any:
        import docker.types

        binds = {}
        for mount_path, content in plan.files.items():
            folder = self._tmp / f"{pod.name}-{plan.name}{suffix}-{len(binds)}"
            folder.mkdir(parents=True)
            for relative, text in content.items():
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_text(text)
                (folder / relative).chmod(0o644)
            for sub in (folder, *(p for p in folder.rglob("*") if p.is_dir())):
                sub.chmod(0o755)
            binds[str(folder)] = {"bind": mount_path, "mode": "ro"}
        for mount_path, text in plan.single_files.items():
            # A bind of one file: the path is a file in the container, as with a subPath mount.
            folder = self._tmp / f"{pod.name}-{plan.name}{suffix}-{len(binds)}"
            folder.mkdir(parents=True)
            folder.chmod(0o755)
            single = folder / Path(mount_path).name
            single.write_text(text)
            single.chmod(0o644)
            binds[str(single)] = {"bind": mount_path, "mode": "ro"}
        networking = self.client.api.create_networking_config(
            {self.network_name: self.client.api.create_endpoint_config(aliases=list(pod.aliases))}
        )
        mounts = [docker.types.Mount(target=mount_path, source=self._volume_name(pod, volume), type="volume",
                                     no_copy=True)  # an emptyDir is empty: nothing of the image's folder
                  for mount_path, volume in plan.scratch.items()]
        host_config = self.client.api.create_host_config(
            binds=binds or None, mounts=mounts or None, cap_drop=plan.cap_drop or None,
            read_only=plan.read_only, network_mode=self.network_name, group_add=list(plan.groups) or None,
        )
        name = f"smoke-{self.run_id}-{pod.name}-{plan.name}{suffix}"[:120]
        with self._lock:
            if self._stopping.is_set():
                raise _Stopped
            created = self.client.api.create_container(
                plan.image, command=plan.command, entrypoint=plan.entrypoint, environment=plan.env,
                user=plan.user or "", working_dir=plan.working_dir, hostname=pod.name[:63], name=name, detach=True,
                labels={RUN_LABEL: self.run_id, "image-factory.smoke-pod": pod.name},
                host_config=host_config, networking_config=networking,
            )
            container = self.client.containers.get(created["Id"])
            self._all.append(container)
        return container

    def _start(self, container: Any, where: str) -> None:
        import docker.errors

        try:
            container.start()
        except docker.errors.APIError as exc:  # e.g. the entrypoint is not an executable of the image
            raise SmokeRunFailed(f"{where} cannot start (RunContainerError): {exc.explanation or exc}") from exc

    def _run_to_end(self, pod: PodPlan, plan: ContainerPlan, suffix: str = "") -> tuple[int, str]:
        container = self._create(pod, plan, suffix)
        self._start(container, f"{pod.workload} container {plan.name}")
        remaining = max(1.0, self._deadline - time.monotonic())
        try:
            status = container.wait(timeout=remaining)
        except Exception as exc:
            if self._stopping.is_set():
                raise _Stopped from exc
            raise SmokeRunFailed(f"{pod.name}/{plan.name} did not finish within the run's bound "
                                 f"({self.timeout:.0f}s)\n{_tail(container)}") from exc
        if self._stopping.is_set():
            raise _Stopped
        return int(status.get("StatusCode", 1)), _tail(container)

    def _run_init(self, pod: PodPlan, suffix: str = "", *, restart: bool = True) -> None:
        """Init containers in order, each to success; a failed one is started again after the back-off
        (restartPolicy Always/OnFailure), up to the bound."""
        for plan in pod.init_containers:
            self._note(f"{pod.name}: init container {plan.name} running")
            for restarts in range(self.backoff.max_restarts + 1):
                code, tail = self._run_to_end(pod, plan, f"{suffix}-{restarts}" if restarts else suffix)
                if code == 0:
                    break
                final = import_failure(tail)
                if not restart or restarts == self.backoff.max_restarts or final:
                    raise SmokeRunFailed(
                        f"{pod.workload}: init container {plan.name} exited {code}"
                        + (f" after {restarts} restarts" if restarts else "")
                        + (" (an ImportError: no restart can help)" if final else "")
                        + f" (Init:CrashLoopBackOff)\n{tail}")
                delay = self.backoff.delay(restarts)
                self._note(f"{pod.name}: init container {plan.name} exited {code}; restart {restarts + 1} in "
                           f"{delay:.0f}s (back-off)")
                self._sleep(delay)
            self._note(f"{pod.name}: init container {plan.name} done")

    def _run_job(self, pod: PodPlan) -> None:
        """A Job's pod to completion; a failed try is tried again after the back-off, ``backoffLimit`` times
        (bounded by ``job_retries``)."""
        self._prepare_volumes(pod)
        tries = min(pod.backoff_limit, self.job_retries) + 1
        for attempt in range(1, tries + 1):
            suffix = f"-try{attempt}" if attempt > 1 else ""
            self._note(f"{pod.workload}: try {attempt}/{tries}")
            self._run_init(pod, suffix, restart=False)
            results = [(plan, *self._run_to_end(pod, plan, suffix)) for plan in pod.containers]
            failed = [(plan, code, tail) for plan, code, tail in results if code != 0]
            if not failed:
                self._note(f"{pod.workload}: completed")
                return
            plan, code, tail = failed[0]
            if import_failure(tail):
                raise SmokeRunFailed(f"{pod.workload}: container {plan.name} exited {code} on try {attempt} with an "
                                     f"ImportError, which no retry can help (BackoffLimitExceeded)\n{tail}")
            if attempt == tries:
                raise SmokeRunFailed(f"{pod.workload}: container {plan.name} exited {code} on all {tries} tries "
                                     f"(BackoffLimitExceeded)\n{tail}")
            delay = self.backoff.delay(attempt - 1)
            self._note(f"{pod.workload}: container {plan.name} exited {code}; next try in {delay:.0f}s (back-off)")
            self._sleep(delay)

    def _run_jobs_in_turn(self, jobs: Iterable[PodPlan]) -> None:
        for job in jobs:
            self._run_job(job)

    def _start_pod(self, pod: PodPlan) -> None:
        self._prepare_volumes(pod)
        self._run_init(pod)
        for plan in pod.containers:
            running = _Running(pod, plan, None, "", 0.0)
            self._launch(running)
            with self._lock:
                self._running.append(running)

    def _launch(self, running: _Running) -> None:
        """A new instance of the container (the first, or one after a restart), with fresh probe states."""
        suffix = f"-restart{running.restarts}" if running.restarts else ""
        container = self._create(running.pod, running.plan, suffix)
        self._start(container, f"{running.pod.workload} container {running.plan.name}")
        container.reload()
        now = time.monotonic()
        running.container = container
        running.ip = container.attrs["NetworkSettings"]["Networks"][self.network_name]["IPAddress"]
        running.started = now
        running.probes = [_ProbeState(p, now) for p in running.plan.probes]
        running.restart_at = None
        self._note(f"{running.ident}: started ({running.ip})" + (f", restart {running.restarts}" if running.restarts
                                                                 else "") + "; probes: "
                   + (", ".join(p.describe() for p in running.plan.probes) or "none"))

    def _watch(self, background: list[concurrent.futures.Future]) -> None:
        """Until every Job completed and every container is Ready and passed its liveness probes once: probe,
        restart what exited (after its back-off), and fail on the first Job or pod that cannot get there."""
        in_flight = self._in_flight
        last_alive_check = 0.0
        while True:
            for future in background:
                if future.done() and future.exception() is not None:
                    raise future.exception()
            if time.monotonic() - last_alive_check >= 1.0:
                self._check_alive()
                last_alive_check = time.monotonic()
            with self._lock:
                running = list(self._running)
            pending = [r for r in running if not r.settled(self.min_ready_seconds)]
            unfinished = [f for f in background if not f.done()]
            if not pending and not unfinished:
                return
            now = time.monotonic()
            if now > self._deadline:
                details = "; ".join(
                    f"{r.ident}: " + ("in back-off" if r.restart_at else ", ".join(
                        f"{s.probe.kind} {s.last}" for s in r.probes if not s.satisfied))
                    for r in pending
                )
                raise SmokeRunFailed(f"not ready within {self.timeout:.0f}s: "
                                     f"{details or 'Jobs or pods still starting'}")
            # Probes run independently, as the kubelet's workers do: a slow exec probe holds up no other.
            for state, (owner, future) in list(in_flight.items()):
                if future.done():
                    del in_flight[state]
                    ok, detail = future.result()
                    self._record(owner, state, ok, detail)
            for owner in running:
                for state in self._active(owner):
                    if state.next_due <= now and state not in in_flight:
                        in_flight[state] = (owner, self._pool.submit(self._probe_once, owner, state))
            time.sleep(0.25)

    def _active(self, running: _Running) -> list[_ProbeState]:
        """Probes the kubelet runs now: none in back-off; startup first; readiness and liveness after it."""
        if running.restart_at is not None:
            return []
        if not running.startup_done():
            return [s for s in running.probes if s.probe.kind == "startup" and not s.satisfied]
        return [s for s in running.probes if s.probe.kind != "startup"]

    def _record(self, running: _Running, state: _ProbeState, ok: bool, detail: str) -> None:
        if state not in running.probes:
            return  # a probe of an instance that has been replaced since
        probe = state.probe
        state.last = detail
        state.next_due = time.monotonic() + probe.period
        if ok:
            state.failures = 0
            state.successes += 1
            if state.successes >= probe.success_threshold and not state.satisfied:
                state.satisfied = True
                self._note(f"{running.ident}: {probe.kind} probe passed ({detail})")
            return
        state.successes = 0
        state.failures += 1
        if probe.kind == "readiness":
            if state.satisfied and state.failures >= probe.failure_threshold:
                state.satisfied = False
                self._note(f"{running.ident}: not ready any more ({detail})")
            return
        if state.failures >= probe.failure_threshold:
            # The kubelet kills the container and starts it again (the restart takes the back-off).
            running.last_exit = (f"{probe.describe()} failed {state.failures} times in a row (last: {detail}), "
                                 "so it was killed")
            self._note(f"{running.ident}: {running.last_exit}")
            with contextlib.suppress(Exception):
                running.container.kill()

    def _probe_once(self, running: _Running, state: _ProbeState) -> tuple[bool, str]:
        probe = state.probe
        try:
            if probe.handler == "httpGet":
                port = _port(probe.spec.get("port"), running.plan)
                scheme = str(probe.spec.get("scheme", "HTTP")).lower()
                headers = {h["name"]: h["value"] for h in probe.spec.get("httpHeaders") or []}
                url = f"{scheme}://{running.ip}:{port}{probe.spec.get('path', '/')}"
                answer = requests.get(url, timeout=probe.timeout, headers=headers, verify=False)  # noqa: S501 - kubelet skips TLS checks too
                return 200 <= answer.status_code < 400, f"HTTP {answer.status_code}"
            if probe.handler == "tcpSocket":
                port = _port(probe.spec.get("port"), running.plan)
                with socket.create_connection((running.ip, port), timeout=probe.timeout):
                    return True, f"tcp {port} open"
            return self._exec(running, probe)
        except (requests.RequestException, OSError) as exc:
            return False, type(exc).__name__
        except Exception as exc:  # the container went away under the probe (killed, restarted)
            return False, f"{type(exc).__name__}: {exc}"[:200]

    def _exec(self, running: _Running, probe: Probe) -> tuple[bool, str]:
        api = self.client.api
        exec_id = api.exec_create(running.container.id, list(probe.spec.get("command") or []))["Id"]
        worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            future = worker.submit(api.exec_start, exec_id)
            try:
                output = future.result(timeout=probe.timeout)
            except concurrent.futures.TimeoutError:
                return False, f"timed out after {probe.timeout:.0f}s"
        finally:
            worker.shutdown(wait=False)
        code = api.exec_inspect(exec_id).get("ExitCode")
        text = (output or b"").decode(errors="replace").strip().splitlines()
        return code == 0, f"exit {code}" + (f": {text[-1][:200]}" if text and code != 0 else "")

    def _check_alive(self) -> None:
        """Restart (restartPolicy Always) what exited, after its back-off; fail past the bound of restarts."""
        with self._lock:
            running_now = list(self._running)
        for running in running_now:
            now = time.monotonic()
            if running.restart_at is not None:
                if now >= running.restart_at:
                    running.restarts += 1
                    self._launch(running)
                continue
            running.container.reload()
            if running.container.status not in ("exited", "dead"):
                continue
            code = running.container.attrs["State"].get("ExitCode")
            why = running.last_exit or f"exited with code {code}"
            running.last_exit = ""
            tail = _tail(running.container)
            if import_failure(tail):
                why += ", with an ImportError (no restart can help)"
            if running.restarts >= self.backoff.max_restarts or import_failure(tail):
                raise SmokeRunFailed(
                    f"{running.ident} exited with code {code} (CrashLoopBackOff): {why}"
                    + (f", after {running.restarts} restarts" if running.restarts else "")
                    + f"\n{tail}")
            delay = self.backoff.delay(running.restarts)
            running.restart_at = now + delay
            self._note(f"{running.ident}: {why}; restart {running.restarts + 1} in {delay:.0f}s (back-off)")

    def _check_health(self, health: HealthCheck) -> None:
        targets = [r for r in self._running if health.service in r.pod.aliases]
        if not targets:
            raise SmokeRunFailed(f"health check: no pod serves the Service {health.service}")
        url = f"http://{targets[0].ip}:{health.port}{health.path}"
        payload = poll_health(lambda: requests.get(url, timeout=10), tries=health.tries, interval=health.interval,
                              what=health.service, say=self._note, before_try=self._check_alive)
        self.timeline.append({"event": "health", "health": payload})

    def _save_logs(self) -> None:
        if not self.logs_dir:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for container in self._all:
            with contextlib.suppress(Exception):
                (self.logs_dir / f"{container.name}.log").write_bytes(container.logs())


def _logs(container: Any) -> str:
    with contextlib.suppress(Exception):
        return container.logs().decode(errors="replace")
    return ""


def _port(value: Any, plan: ContainerPlan) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in plan.ports:
        return plan.ports[value]
    raise SmokeRunFailed(f"container {plan.name}: probe port {value!r} is not a named port of the container")


def _tail(container: Any) -> str:
    with contextlib.suppress(Exception):
        text = container.logs(tail=_LOG_TAIL).decode(errors="replace").rstrip()
        return f"--- last lines of {container.name} ---\n{text}" if text else f"({container.name} printed nothing)"
    return ""


def remove_run(client: Any, run_id: str, *, attempts: int = 5, pause: float = 1.0) -> list[str]:
    """Remove every container, volume and network of a smoke run by its label; returns what was removed.

    A worker thread of an ending run may still create a container (a restart after back-off) while this
    runs, and the engine refuses to remove a network with an endpoint left: what is still there is
    removed again, a few times, a moment apart."""
    label = {"label": f"{RUN_LABEL}={run_id}"}
    removed: list[str] = []
    for attempt in range(attempts):
        containers = client.containers.list(all=True, filters=label)
        volumes = client.volumes.list(filters=label)
        networks = client.networks.list(filters=label)
        if not (containers or volumes or networks):
            break
        if attempt:
            time.sleep(pause)
        for container in containers:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
                removed.append(container.name)
        for volume in volumes:
            with contextlib.suppress(Exception):
                volume.remove(force=True)
                removed.append(f"volume {volume.name}")
        for network in networks:
            with contextlib.suppress(Exception):
                network.remove()
                removed.append(f"network {network.name}")
    return removed


def summary_json(result: Mapping[str, Any]) -> str:
    return json.dumps(result, indent=1, default=str)
