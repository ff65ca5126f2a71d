"""Run a rendered chart's pods on a Docker engine, the way a kubelet would, where no kind is available.

The containers run with the same image, command, args and environment (``valueFrom`` resolved from the
rendered Secrets and ConfigMaps), user and volumes as in the pod spec, on a user-defined network where each
Service's DNS names are network aliases of the pods it selects. Probes are run as Kubernetes runs them:
``httpGet`` against the container's IP, ``exec`` inside the container, ``tcpSocket``; with
``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``, ``failureThreshold`` and startup probes
gating liveness and readiness.

What differs from a cluster, on purpose: one replica per workload; the order is fixed so a small machine
is not swamped (pre-install hooks, StatefulSets until Ready, Jobs to completion, then Deployments) — the
state it converges to is the one a cluster reaches; a container that exits or fails its liveness probe
fails the run at once instead of being restarted; emptyDirs and PersistentVolumeClaims are Docker volumes
removed with the run.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import logging
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from airflow_image_factory.deploy.chart import HEALTH_PATH, Rendered, split_image
from airflow_image_factory.exceptions import SmokeDeployError, SmokeRunFailed

log = logging.getLogger(__name__)

RUN_LABEL = "image-factory.smoke-run"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LOG_TAIL = 40
MAX_JOB_RETRIES = 2  # a deterministic failure (broken entrypoint) is not worth backoffLimit's 6 tries


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
    files: dict[str, dict[str, str]]  # mount path -> {file name: content}
    cap_drop: list[str]
    read_only: bool
    probes: tuple[Probe, ...] = ()


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


_PHASE_PRE_HOOK, _PHASE_STATEFUL, _PHASE_JOBS, _PHASE_SERVICES = range(4)


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
    for mount in spec.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise SmokeRunFailed(f"{where}: volumeMount {mount['name']!r} names no volume of the pod")
        if "secret" in volume:
            files[mount["mountPath"]] = store.all("secret", {"name": volume["secret"].get("secretName"),
                                                             "optional": volume["secret"].get("optional")}, where)
        elif "configMap" in volume:
            files[mount["mountPath"]] = store.all("configmap", volume["configMap"], where)
        else:  # emptyDir, and claims (a smoke run keeps no data): a Docker volume per pod volume
            scratch[mount["mountPath"]] = mount["name"]
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
        hook = Rendered.is_hook(obj)
        hooks = (obj["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        if hook and "pre-install" in hooks:
            phase = _PHASE_PRE_HOOK
        elif kind == "StatefulSet":
            phase = _PHASE_STATEFUL
        elif is_job:
            phase = _PHASE_JOBS
        else:
            phase = _PHASE_SERVICES
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
        ))
    plans.sort(key=lambda p: p.phase)
    return plans


def health_problems(payload: Any) -> list[str]:
    """What is not healthy in an Airflow 3 ``/api/v2/monitor/health`` answer (empty: all healthy)."""
    if not isinstance(payload, Mapping):
        return [f"the health answer is not a JSON object: {payload!r:.200}"]
    problems = []
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        status = (payload.get(component) or {}).get("status")
        if status != "healthy":
            problems.append(f"{component} is {status or 'missing'}")
    return problems


def poll_health(
    fetch: Callable[[], requests.Response], *, tries: int, interval: float, what: str,
    say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
    before_try: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Ask for the health answer up to ``tries`` times, ``interval`` apart, until every component is healthy.

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
            problems = health_problems(payload) if answer.ok else [f"HTTP {answer.status_code}"]
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


@dataclass
class _Running:
    pod: PodPlan
    plan: ContainerPlan
    container: Any
    ip: str
    started: float
    probes: list[_ProbeState] = field(default_factory=list)

    @property
    def ident(self) -> str:
        return f"{self.pod.name}/{self.plan.name}"

    def startup_done(self) -> bool:
        return all(s.satisfied for s in self.probes if s.probe.kind == "startup")

    def ready(self) -> bool:
        return self.startup_done() and all(s.satisfied for s in self.probes if s.probe.kind == "readiness")

    def settled(self) -> bool:
        """Ready, and every liveness probe has passed once (proof it passes, not only that it has not failed)."""
        return self.ready() and all(s.satisfied for s in self.probes if s.probe.kind == "liveness")


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
    ):
        self.client = client
        self.rendered = rendered
        self.namespace = namespace
        self.timeout = timeout
        self.health = health
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.say = on_line or log.info
        self.logs_dir = logs_dir
        self.network_name = f"smoke-{self.run_id}"
        self._running: list[_Running] = []
        self._all: list[Any] = []
        self._volumes: set[str] = set()
        self._in_flight: dict[_ProbeState, tuple[_Running, concurrent.futures.Future]] = {}
        self._tmp = Path(tempfile.gettempdir()) / f"smoke-{self.run_id}"  # Secret/ConfigMap volumes' files
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=12, thread_name_prefix="smoke")
        self._deadline = 0.0
        self.timeline: list[dict[str, Any]] = []

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self._deadline = started + self.timeout
        plans = plan_pods(self.rendered, self.namespace)
        if not plans:
            raise SmokeRunFailed("the rendered chart has no pods to run")
        self.say(f"smoke run {self.run_id}: {len(plans)} pods: " + ", ".join(p.workload for p in plans))
        try:
            self._tmp.mkdir(mode=0o700)
            self.client.networks.create(self.network_name, driver="bridge", labels={RUN_LABEL: self.run_id})
            self._ensure_images(plans)
            for phase in sorted({p.phase for p in plans}):
                batch = [p for p in plans if p.phase == phase]
                jobs = [p for p in batch if p.is_job]
                services = [p for p in batch if not p.is_job]
                for pod in jobs:
                    self._run_job(pod)
                # Pods of one phase start together, as in a cluster (init containers included).
                starts = [self._pool.submit(self._start_pod, pod) for pod in services]
                concurrent.futures.wait(starts)  # all of them, so nothing is created after the cleanup
                for start in starts:
                    start.result()
                if services:
                    self._watch(need_liveness=phase == _PHASE_SERVICES)
            if self.health:
                self._check_health(self.health)
            return {
                "run_id": self.run_id,
                "pods": [p.workload for p in plans],
                "seconds": round(time.monotonic() - started, 1),
                "timeline": self.timeline,
            }
        finally:
            self._save_logs()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.cleanup()

    def cleanup(self) -> None:
        """Remove this run's containers, network and files (also after a crash: by label)."""
        remove_run(self.client, self.run_id)
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------------

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
                name, tag = split_image(plan.image)
                try:
                    self.client.images.pull(name, tag=tag)
                except docker.errors.APIError as exc:
                    raise SmokeRunFailed(f"{pod.name}/{plan.name}: cannot pull {plan.image} (ErrImagePull): "
                                         f"{exc.explanation or exc}") from exc

    def _create(self, pod: PodPlan, plan: ContainerPlan, suffix: str = "") -> Any:
        import docker.types

        binds = {}
        for mount_path, content in plan.files.items():
            folder = self._tmp / f"{pod.name}-{plan.name}-{len(binds)}"
            folder.mkdir(parents=True)
            for fname, text in content.items():
                (folder / fname).write_text(text)
                (folder / fname).chmod(0o644)
            folder.chmod(0o755)
            binds[str(folder)] = {"bind": mount_path, "mode": "ro"}
        networking = self.client.api.create_networking_config(
            {self.network_name: self.client.api.create_endpoint_config(aliases=list(pod.aliases))}
        )
        mounts = []
        for mount_path, volume in plan.scratch.items():
            # A volume (not tmpfs) because Docker fills a new volume with the image's directory and its
            # owner, which images like postgres rely on; named per pod so its containers share it.
            source = f"smoke-{self.run_id}-{pod.name}-{volume}"[:200]
            if source not in self._volumes:
                self.client.volumes.create(source, labels={RUN_LABEL: self.run_id})
                self._volumes.add(source)
            mounts.append(docker.types.Mount(target=mount_path, source=source, type="volume"))
        host_config = self.client.api.create_host_config(
            binds=binds or None, mounts=mounts or None, cap_drop=plan.cap_drop or None,
            read_only=plan.read_only, network_mode=self.network_name,
        )
        name = f"smoke-{self.run_id}-{pod.name}-{plan.name}{suffix}"[:120]
        created = self.client.api.create_container(
            plan.image, command=plan.command, entrypoint=plan.entrypoint, environment=plan.env, user=plan.user or "",
            working_dir=plan.working_dir, hostname=pod.name[:63], name=name, detach=True,
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
            raise SmokeRunFailed(f"{pod.name}/{plan.name} did not finish within the run's bound "
                                 f"({self.timeout:.0f}s)\n{_tail(container)}") from exc
        return int(status.get("StatusCode", 1)), _tail(container)

    def _run_init(self, pod: PodPlan, suffix: str = "") -> None:
        for plan in pod.init_containers:
            self._note(f"{pod.name}: init container {plan.name} running")
            code, tail = self._run_to_end(pod, plan, suffix)
            if code != 0:
                raise SmokeRunFailed(f"{pod.workload}: init container {plan.name} exited {code} "
                                     f"(Init:CrashLoopBackOff)\n{tail}")
            self._note(f"{pod.name}: init container {plan.name} done")

    def _run_job(self, pod: PodPlan) -> None:
        tries = min(pod.backoff_limit, MAX_JOB_RETRIES) + 1
        for attempt in range(1, tries + 1):
            suffix = f"-try{attempt}" if attempt > 1 else ""
            self._note(f"{pod.workload}: try {attempt}/{tries}")
            self._run_init(pod, suffix)
            results = [(plan, *self._run_to_end(pod, plan, suffix)) for plan in pod.containers]
            failed = [(plan, code, tail) for plan, code, tail in results if code != 0]
            if not failed:
                self._note(f"{pod.workload}: completed")
                return
            plan, code, tail = failed[0]
            if attempt == tries:
                raise SmokeRunFailed(f"{pod.workload}: container {plan.name} exited {code} on all {tries} tries "
                                     f"(BackoffLimitExceeded)\n{tail}")
            self._note(f"{pod.workload}: container {plan.name} exited {code}; retrying")

    def _start_pod(self, pod: PodPlan) -> None:
        self._run_init(pod)
        for plan in pod.containers:
            container = self._create(pod, plan)
            self._start(container, f"{pod.workload} container {plan.name}")
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"][self.network_name]["IPAddress"]
            now = time.monotonic()
            running = _Running(pod, plan, container, ip, now, [_ProbeState(p, now) for p in plan.probes])
            self._running.append(running)
            self._note(f"{running.ident}: started ({ip}); probes: "
                       + (", ".join(p.describe() for p in plan.probes) or "none"))

    def _watch(self, *, need_liveness: bool) -> None:
        """Probe every running container until all are Ready (and, last, every liveness probe passed once)."""
        done = (lambda r: r.settled()) if need_liveness else (lambda r: r.ready())
        in_flight = self._in_flight  # kept across phases: a probe still running is not started twice
        last_alive_check = 0.0
        while True:
            if time.monotonic() - last_alive_check >= 1.0:
                self._check_alive()
                last_alive_check = time.monotonic()
            pending = [r for r in self._running if not done(r)]
            if not pending:
                return
            now = time.monotonic()
            if now > self._deadline:
                details = "; ".join(
                    f"{r.ident}: " + ", ".join(f"{s.probe.kind} {s.last}" for s in r.probes if not s.satisfied)
                    for r in pending
                )
                raise SmokeRunFailed(f"not ready within {self.timeout:.0f}s: {details}")
            # Probes run independently, as the kubelet's workers do: a slow exec probe holds up no other.
            for state, (running, future) in list(in_flight.items()):
                if future.done():
                    del in_flight[state]
                    ok, detail = future.result()
                    self._record(running, state, ok, detail)
            for running in self._running:
                for state in self._active(running):
                    if state.next_due <= now and state not in in_flight:
                        in_flight[state] = (running, self._pool.submit(self._probe_once, running, state))
            time.sleep(0.25)

    def _active(self, running: _Running) -> list[_ProbeState]:
        """Probes the kubelet runs now: startup first; readiness and liveness once startup passed."""
        if not running.startup_done():
            return [s for s in running.probes if s.probe.kind == "startup" and not s.satisfied]
        return [s for s in running.probes if s.probe.kind != "startup"]

    def _record(self, running: _Running, state: _ProbeState, ok: bool, detail: str) -> None:
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
            consequence = "killed and restarted" if probe.kind == "liveness" else "killed (startup never passed)"
            raise SmokeRunFailed(
                f"{running.ident}: {probe.describe()} failed {state.failures} times in a row, so Kubernetes "
                f"would have {consequence}; last: {detail}\n{_tail(running.container)}"
            )

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
        for running in self._running:
            running.container.reload()
            if running.container.status in ("exited", "dead"):
                code = running.container.attrs["State"].get("ExitCode")
                raise SmokeRunFailed(f"{running.ident} exited with code {code} (CrashLoopBackOff)\n"
                                     f"{_tail(running.container)}")

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


def remove_run(client: Any, run_id: str) -> list[str]:
    """Remove every container, volume and network of a smoke run by its label; returns what was removed."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
            removed.append(container.name)
    for volume in client.volumes.list(filters={"label": f"{RUN_LABEL}={run_id}"}):
        with contextlib.suppress(Exception):
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
    for network in client.networks.list(filters={"label": f"{RUN_LABEL}={run_id}"}):
        with contextlib.suppress(Exception):
            network.remove()
            removed.append(f"network {network.name}")
    return removed


def summary_json(result: Mapping[str, Any]) -> str:
    return json.dumps(result, indent=1, default=str)
