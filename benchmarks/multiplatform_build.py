"""What a second platform costs a real build here: the slim PROD image of main (its build stage and the
image, every layer built: cache disabled) for linux/amd64 natively and linux/arm64 under QEMU user emulation,
then each platform's verification (the official image's contract and the api-server probe), in one
build_images run on the local stack (`airflow dags test`, nothing pushed).

Needs `make stack` with arm64 (its env file's IMAGE_FACTORY_STACK_PLATFORMS lists linux/arm64); says so and
prints no ratio otherwise. Takes about 25 minutes on 2 cores. The per-platform figures are the step's own
log lines ("Built …: …, N s, … steps cached (linux/arm64)", "Verified … (linux/arm64): … in N s").

Last lines: RESULT emulated_slim_build_ratio <arm64 build seconds / amd64>, RESULT emulated_verify_ratio <…>
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILT = re.compile(r"Built \S+/(prod-slim(?:-build)?)/python\S+: \S+, \d+ MB, ([\d.]+)s, \d+/\d+ steps cached "
                   r"\((linux/\w+)\)")
VERIFIED = re.compile(r"Verified \S+ \((linux/\w+)\): \d+ checks passed in ([\d.]+)s")


def main() -> int:
    if "linux/arm64" not in os.environ.get("IMAGE_FACTORY_STACK_PLATFORMS", "").split():
        print("multiplatform_build: not measured: the stack has no arm64 emulation (make stack says why)")
        return 0
    python = json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11"]'))[0]
    conf = {"branch": "main", "repository": "bench-multiarch/airflow", "python_versions": [python],
            "variants": ["slim"], "platforms": ["linux/amd64", "linux/arm64"], "push": False, "cache": "disabled"}
    done = subprocess.run(["bash", str(REPO_ROOT / "include/stack/run-dag.sh")], capture_output=True, text=True,
                          env={**os.environ, "DAG": "build_images", "CONF": json.dumps(conf)}, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        print(output[-4000:])
        raise SystemExit(f"the build failed ({done.returncode})")
    built: dict[str, float] = {}
    for stage, seconds, platform in BUILT.findall(output):
        built[platform] = built.get(platform, 0.0) + float(seconds)
        print(f"  built {stage} for {platform} in {float(seconds):.0f} s")
    verified = {platform: float(seconds) for platform, seconds in VERIFIED.findall(output)}
    for platform, seconds in verified.items():
        print(f"  verified {platform} in {seconds:.0f} s")
    print(f"RESULT emulated_slim_build_seconds_amd64 {built['linux/amd64']:.0f}")
    print(f"RESULT emulated_slim_build_seconds_arm64 {built['linux/arm64']:.0f}")
    print(f"RESULT emulated_slim_build_ratio {built['linux/arm64'] / built['linux/amd64']:.1f}")
    print(f"RESULT emulated_verify_ratio {verified['linux/arm64'] / verified['linux/amd64']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
