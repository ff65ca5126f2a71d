"""What building and checking an arm64 image costs on an amd64 worker through QEMU user emulation.

Airflow's docs say an emulated build is "more than 10 times slower"; this measures it here, on the work
that dominates a PROD image's build and check, the same for both platforms:

  rootfs    a minimal Debian bookworm with Python (mmdebstrap; dpkg's configure scripts run emulated
            for arm64): the Python base image;
  install   a clean ``pip install`` of apache-airflow-core 3.3.2 with its 129 dependencies, pinned once
            on the host by uv so both platforms install the same versions (wheels downloaded, no cache);
  check     ``airflow version`` in the built image (what verify_prod runs first).

Each step runs once per platform, one after the other, on the same engine. Needs the stack's engine,
mmdebstrap, qemu-user-static with binfmt_misc (``update-binfmts --enable qemu-aarch64``), and PyPI.
Where emulation is not set up it says so and prints no ratio.

Last lines: RESULT <metric> <value>
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_image_factory.policy.settings import DEFAULT_DEBIAN

DOCKER = os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or shutil.which("docker") or "docker"
CA_BUNDLE = os.environ.get("IMAGE_FACTORY_EXTRA_CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PLATFORMS = ("amd64", "arm64")
TAG = "airflow-image-factory-bench/emulated"
INSTALL = """\
FROM {base}
COPY requirements.txt /requirements.txt
RUN --mount=type=secret,id=extra_ca python3 -m venv /venv \\
 && PIP_CERT=/run/secrets/extra_ca /venv/bin/pip install --no-cache-dir --quiet -r /requirements.txt
ENV AIRFLOW_HOME=/tmp/airflow
"""


def run(*cmd: str, env: dict[str, str] | None = None, quiet: bool = True) -> float:
    """Seconds ``cmd`` took; its output only when it fails."""
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=quiet, text=True, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed ({done.returncode}):\n{(done.stdout or '')[-2000:]}"
                         f"{(done.stderr or '')[-2000:]}")
    return time.monotonic() - started


def emulation_missing() -> str | None:
    if not shutil.which("mmdebstrap"):
        return "no mmdebstrap (apt-get install mmdebstrap)"
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.is_file() or "enabled" not in entry.read_text():
        return ("no qemu-aarch64 binfmt handler (apt-get install qemu-user-static binfmt-support; "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)")
    return None


def main() -> int:
    why = emulation_missing()
    if why:
        print(f"emulated_build: not measured: {why}")
        return 0
    seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="emulated-build-") as tmp:
        work = Path(tmp)
        (work / "in.txt").write_text("apache-airflow-core==3.3.2\n")
        run(sys.executable, "-m", "uv", "pip", "compile", str(work / "in.txt"), "--python-version", "3.11",
            "--python-platform", "linux", "--quiet", "-o", str(work / "requirements.txt"))
        pins = sum("==" in line for line in (work / "requirements.txt").read_text().splitlines())
        print(f"  pinned {pins} distributions (uv, host)")
        for arch in PLATFORMS:
            times = seconds[arch] = {}
            context = work / arch
            context.mkdir()
            times["rootfs"] = run("mmdebstrap", "--variant=minbase", f"--architectures={arch}",
                                  "--include=python3,python3-venv,python3-pip,ca-certificates", DEFAULT_DEBIAN,
                                  str(context / "rootfs.tar"), MIRROR)
            (context / "Dockerfile").write_text("FROM scratch\nADD rootfs.tar /\nCMD [\"python3\"]\n")
            base = f"{TAG}-base:{arch}"
            run(DOCKER, "build", "--platform", f"linux/{arch}", "--tag", base, str(context),
                env={"DOCKER_BUILDKIT": "1"})
            shutil.copy(work / "requirements.txt", context / "requirements.txt")
            (context / "Dockerfile").write_text(INSTALL.format(base=base))
            image = f"{TAG}:{arch}"
            times["install"] = run(DOCKER, "build", "--no-cache", "--platform", f"linux/{arch}", "--secret",
                                   f"id=extra_ca,src={CA_BUNDLE}", "--tag", image, str(context),
                                   env={"DOCKER_BUILDKIT": "1"})
            times["check"] = run(DOCKER, "run", "--rm", "--platform", f"linux/{arch}", image,
                                 "/venv/bin/airflow", "version")
            print(f"  {arch}: " + ", ".join(f"{step} {value:.1f}s" for step, value in times.items()))
            (context / "rootfs.tar").unlink()
        for arch in PLATFORMS:
            subprocess.run([DOCKER, "rmi", "-f", f"{TAG}:{arch}", f"{TAG}-base:{arch}"], capture_output=True,
                           check=False)
    native, emulated = seconds["amd64"], seconds["arm64"]
    for step in ("rootfs", "install", "check"):
        print(f"RESULT emulated_{step}_ratio {emulated[step] / native[step]:.1f}")
    total_native, total_emulated = sum(native.values()), sum(emulated.values())
    print(f"RESULT emulated_total_seconds_amd64 {total_native:.0f}")
    print(f"RESULT emulated_total_seconds_arm64 {total_emulated:.0f}")
    print(f"RESULT emulated_build_ratio {total_emulated / total_native:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
