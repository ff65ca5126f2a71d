"""One probe of the nightly's upgrade bisection: the published CI image plus some upgraded packages, tested.

The probe image is built ``FROM`` the branch's published CI ``latest`` pinned by digest (built with the
current constraints) with one more layer that installs the probe's upgrades under the probe's constraints
(``include/bisection/Dockerfile.probe``: the CI image's own ``install_airflow.sh packages``, uv, the extra CA
bundle as a build secret only). Then the run's CI test command runs in it as ``verify_ci`` runs it.
Only that command's failure is a failed probe: a build, engine or registry fault raises (the task's
retries), and upgrades that cannot be installed together raise :class:`ProbeNotInstallable`. The image is
never pushed and leaves the engine whatever happened. No Airflow: the operator hands in the engine.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_image_factory.clients.engine import BuildSpec
from airflow_image_factory.exceptions import BuildFailed, ProbeNotInstallable, VerificationFailed
from airflow_image_factory.policy.image_contract import ImageCheck
from airflow_image_factory.services.verify import run_checks

PROBE_DOCKERFILE = "include/bisection/Dockerfile.probe"
_SCRIPTS = ("include/docker/scripts/with_extra_ca.sh", "include/docker/scripts/install_airflow.sh")
# What uv and pip check say when the upgrades cannot stand with the other pins: not a test failure.
_NOT_INSTALLABLE = ("No solution found when resolving", "has requirement", "is incompatible with")
OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class Probe:
    """What one probe installs over ``ci_image`` (``name@digest``): ``installs`` name -> version (every
    package of the upgrade set: the probe's upgrades at their new versions, the rest at their current
    pins, so the probe does not depend on which of them the CI image happens to hold), under
    ``constraints`` (every other package at its current pin), tagged ``tag`` on the engine."""

    ci_image: str
    tag: str
    installs: Mapping[str, str]
    constraints: Mapping[str, str]


def probe_context(root: Path, target: Path, probe: Probe) -> Path:
    """The probe's build context in ``target``: its Dockerfile and the CI image's two scripts from
    ``root`` (this package's build files), the constraints and the requirements it installs."""
    for entry in (PROBE_DOCKERFILE, *_SCRIPTS):
        Path(target, entry).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / entry, target / entry)
    Path(target, "probe").mkdir()
    Path(target, "probe", "constraints.txt").write_text(_lines(probe.constraints))
    Path(target, "probe", "requirements.txt").write_text(_lines(probe.installs))
    return target


def _lines(pins: Mapping[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def run_probe(
    engine: Any, probe: Probe, checks: Sequence[ImageCheck], *, root: Path, secrets: Mapping[str, str],
    on_line: Callable[[str], None], say: Callable[[str], None], timeout: float = 1800,
) -> dict[str, Any]:
    """Build the probe image, run ``checks`` (the CI test command) in it, remove it. Returns ``passed``,
    the checks' results and the end of the failing output."""
    try:
        with tempfile.TemporaryDirectory(prefix="probe-context-") as tmp:
            context = probe_context(root, Path(tmp), probe)
            say(f"probe {probe.tag}: {len(probe.installs)} package(s) of the upgrade set over {probe.ci_image}")
            try:
                engine.build(
                    BuildSpec(context=context, dockerfile=PROBE_DOCKERFILE, tags=(probe.tag,),
                              build_args={"CI_IMAGE": probe.ci_image}, inline_cache=False, secrets=dict(secrets)),
                    on_line=on_line,
                )
            except BuildFailed as exc:
                if any(marker in str(exc) for marker in _NOT_INSTALLABLE):
                    raise ProbeNotInstallable(
                        f"the probe's {len(probe.installs)} package(s) cannot be installed with the other current "
                        f"pins, so it proves nothing: {exc}"
                    ) from exc
                raise
        try:
            results = run_checks(engine, probe.tag, checks, on_line=on_line, say=say, timeout=timeout)
        except VerificationFailed as failed:
            # The tests failed: what the probe is for. Everything else (the engine, a timeout) raises.
            tail = "\n".join(str(failed).splitlines()[-OUTPUT_TAIL_LINES:])
            return {"passed": False, "checks": [], "output_tail": tail}
        return {"passed": True, "checks": results, "output_tail": ""}
    finally:
        engine.remove(probe.tag)  # never pushed: it has no use after its one test run
