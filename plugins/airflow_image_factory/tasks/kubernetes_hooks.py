"""Hooks to the kind cluster: the cncf-kubernetes provider's ``KubernetesHook`` for its API (:class:`ClusterHook`:
pods, events, logs), and thin hooks over the ``kind``, ``helm`` and ``kubectl`` binaries (run one command, raise
on failure) where the provider has nothing: it has no kind or helm hook, and no port-forward to a local port.

No policy here (which retries, how many health checks): that is :mod:`airflow_image_factory.tasks.kind_manager`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk import BaseHook

from airflow_image_factory.exceptions import DeployToolError, HelmWaitTimeout

# The one Helm failure a retry can fix (pods slow to become ready); anything else fails at once.
HELM_WAIT_TIMEOUT = "timed out waiting for the condition"


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise DeployToolError(f"{name} is not on PATH; install it, or use smoke_mode=docker")
    return path


class _CliHook(BaseHook):
    binary_name = ""

    def __init__(self, *, binary: str | None = None, kubeconfig: str | None = None,
                 on_line: Callable[[str], None] | None = None):
        super().__init__()
        self.binary = binary or tool(self.binary_name)
        self.kubeconfig = kubeconfig
        self.on_line = on_line or self.log.info

    def get_conn(self) -> str:
        return self.binary

    def env(self) -> dict[str, str] | None:
        """The cluster of this hook: its kubeconfig, never the worker's default one."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig} if self.kubeconfig else None

    def run(self, args: Sequence[str], *, timeout: float = 900, input_text: str | None = None) -> str:
        command = [self.binary, *args]
        self.on_line("$ " + " ".join(command))
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input_text,
                                    env=self.env(), check=False)
        except subprocess.TimeoutExpired as exc:
            raise DeployToolError(f"{' '.join(command[:3])} ran longer than {timeout:.0f}s") from exc
        for line in (result.stdout + result.stderr).splitlines()[-200:]:
            self.on_line(line)
        if result.returncode != 0:
            self.raise_for(command, result)
        return result.stdout

    def raise_for(self, command: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        raise DeployToolError(f"{' '.join(command[:3])} exited {result.returncode}: {result.stderr.strip()[-2000:]}")


class KindHook(_CliHook):
    """``kind``: clusters, image loading, log export."""

    binary_name = "kind"
    hook_name = "kind"

    def create_cluster(self, name: str, *, config: Path, node_image: str = "", wait: str = "300s") -> None:
        args = ["create", "cluster", "--name", name, "--config", str(config), "--wait", wait]
        if node_image:
            args += ["--image", node_image]
        self.run(args, timeout=900)

    def clusters(self) -> list[str]:
        return [line.strip() for line in self.run(["get", "clusters"]).splitlines() if line.strip()]

    def kubeconfig_of(self, name: str) -> str:
        return self.run(["get", "kubeconfig", "--name", name])

    def load_image(self, name: str, image: str, *, docker_cli: str = "docker") -> None:
        """``docker save`` + ``kind load image-archive``: avoids kind's digest errors with multi-platform images."""
        with tempfile.TemporaryDirectory(prefix="kind-image-") as tmp:
            archive = Path(tmp) / "image.tar"
            saved = subprocess.run([docker_cli, "save", "--output", str(archive), image], capture_output=True,
                                   text=True, timeout=900, check=False)
            if saved.returncode != 0:
                raise DeployToolError(f"docker save {image} failed: {saved.stderr.strip()}")
            self.run(["load", "image-archive", str(archive), "--name", name], timeout=900)

    def export_logs(self, name: str, directory: Path) -> None:
        self.run(["export", "logs", str(directory), "--name", name], timeout=600)

    def delete_cluster(self, name: str) -> None:
        self.run(["delete", "cluster", "--name", name], timeout=600)


class HelmHook(_CliHook):
    """``helm`` install/upgrade with values from a file (never secrets on the command line)."""

    binary_name = "helm"
    hook_name = "helm"

    def _release(self, verb: str, release: str, chart: Path, values: Mapping[str, Any], *, namespace: str,
                 timeout: str, extra: Sequence[str] = ()) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(values, handle)
            handle.flush()
            return self.run([verb, release, str(chart), "--namespace", namespace, "--values", handle.name,
                             "--wait", "--timeout", timeout, *extra], timeout=_seconds(timeout) + 120)

    def install(self, release: str, chart: Path, values: Mapping[str, Any], *, namespace: str,
                timeout: str = "10m0s") -> str:
        return self._release("install", release, chart, values, namespace=namespace, timeout=timeout,
                             extra=["--create-namespace"])

    def upgrade(self, release: str, chart: Path, values: Mapping[str, Any], *, namespace: str,
                timeout: str = "10m0s") -> str:
        return self._release("upgrade", release, chart, values, namespace=namespace, timeout=timeout)

    def uninstall(self, release: str, *, namespace: str) -> None:
        self.run(["uninstall", release, "--namespace", namespace, "--wait"], timeout=600)

    def raise_for(self, command: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        if HELM_WAIT_TIMEOUT in result.stderr:
            raise HelmWaitTimeout(f"{' '.join(command[:3])}: {HELM_WAIT_TIMEOUT}")
        super().raise_for(command, result)


class KubectlHook(_CliHook):
    """``kubectl port-forward``, which the health check goes through.

    Not :class:`ClusterHook`: the Kubernetes Python client's port-forward (``kubernetes.stream.portforward``)
    opens one pod's port as a socket object inside this process, where ``kubectl port-forward svc/...`` picks a
    ready pod behind the Service and listens on a local TCP port that ``requests`` (and a person repeating the
    check) can use as is. A local relay over the client's socket would be ours to write and keep.
    """

    binary_name = "kubectl"
    hook_name = "kubectl"

    @contextlib.contextmanager
    def port_forward(self, target: str, remote_port: int, *, namespace: str) -> Iterator[int]:
        """``kubectl port-forward`` to a free local port for the ``with`` block; yields that port."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        command = [self.binary, "port-forward", target, f"{local}:{remote_port}", "--namespace", namespace]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=self.env())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    output = process.stdout.read() if process.stdout else ""
                    raise DeployToolError(f"kubectl port-forward {target} exited: {output.strip()}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                    break
                time.sleep(0.5)
            yield local
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()


class ClusterHook(KubernetesHook):
    """The kind cluster's API through the cncf-kubernetes provider's ``KubernetesHook``, with that cluster's
    kubeconfig (never the worker's default one, nor a Connection). Nothing connects before the first call,
    so making one needs no cluster."""

    hook_name = "kind cluster"

    def __init__(self, *, kubeconfig: str):
        super().__init__(conn_id=None, kubernetes_conn_id=None, config_file=kubeconfig)

    def describe_all(self, namespace: str) -> str:
        """What a failed deploy leaves to read: each pod's phase, ready containers and restarts, then the
        namespace's events."""
        core = self.core_v1_client
        lines = []
        for pod in core.list_namespaced_pod(namespace).items:
            statuses = pod.status.container_statuses or []
            ready = sum(1 for status in statuses if status.ready)
            restarts = sum(status.restart_count or 0 for status in statuses)
            lines.append(f"pod/{pod.metadata.name}: {pod.status.phase}, {ready}/{len(statuses)} ready, "
                         f"{restarts} restart(s)")
        for event in core.list_namespaced_event(namespace).items:
            thing = event.involved_object
            lines.append(f"event {event.type} {event.reason} {thing.kind.lower()}/{thing.name}: {event.message}")
        return "\n".join(lines)

    def unready_logs(self, namespace: str, *, tail_lines: int = 40) -> dict[str, str]:
        """The last ``tail_lines`` of every container that is not ready, as ``pod/container`` → text."""
        core = self.core_v1_client
        logs = {}
        for pod in core.list_namespaced_pod(namespace).items:
            for status in pod.status.container_statuses or []:
                if not status.ready:
                    logs[f"{pod.metadata.name}/{status.name}"] = core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, container=status.name, tail_lines=tail_lines)
        return logs


def _seconds(duration: str) -> float:
    """Helm's duration (``10m0s``, ``90s``, ``1h``) in seconds."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in duration:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise ValueError(f"not a duration: {duration!r}")
    return total + (float(number) if number else 0.0)
