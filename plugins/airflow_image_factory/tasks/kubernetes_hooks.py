"""Thin hooks over the ``kind``, ``helm`` and ``kubectl`` binaries: run one command, raise on failure.

No policy here (which retries, how many health checks): that is :mod:`deploy.manager`.
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
    """``kubectl``: port-forwards and what a failed deploy leaves to read."""

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

    def describe_all(self, namespace: str) -> str:
        return self.run(["get", "all,events", "--namespace", namespace, "-o", "wide"], timeout=120)


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
