"""Rebuilds of a branch's images through the DAG itself, as ratios of a cold build of the same images.

Run after `make run` (`make bench`). Every number comes from real `build_images` runs (`airflow dags
test`, the DAG's own operators and build args) for one Python version of a bench branch that starts at
main's head, on the stack's engine and registry:

  cold      cache "disabled": every layer built (BuildKit's download caches may be warm: the ratio is
            conservative); publishes the branch's latest images, the cache of the next runs;
  fresh     the engine's build cache pruned, every local image of the branch and every fetched
            commit removed, as on a fresh worker; the DAG's defaults: each build's content key is
            published already, so the build step reuses that image (manifests and config blobs read,
            no layer pulled) instead of building (its first commit fetch is the printed fetch time);
  rebuild   a fresh worker again, with "rebuild": true: every image is built, and the registry's
            latest images are its cache (cache "pulled");
  changed   a Python-only change to airflow-core committed on the branch; cache "pulled".

The time is the sum of the three build steps (CI, PROD build stage, PROD) as each reports it (a build,
or a reuse), plus the compiled UI's image where a run built it (the cold run always does).
Targets: fresh/cold <= 0.05, changed/cold <= 0.10 (Breeze documents > 12 min cold vs < 1 min cached
for its CI image). Also printed: the build context's size and the fetch time of one commit.

Last lines: RESULT <metric> <value>
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.dag_runs import run_dag  # noqa: E402 - the same runner the stack tests use

BRANCH = "bench/rebuild"
_BUILT = re.compile(r"Built (\S+): \S+, [\d.]+ MB, ([\d.]+)s, (\d+)/(\d+) steps cached")
# The compiled UI's own image (REPO/ui-assets:<content key>), built before a PROD build stage that needs it.
_UI_BUILT = re.compile(r"Built (\S+/ui-assets:[0-9a-f]+): \S+ in ([\d.]+)s")
# A build step that found its content key published and reused that image.
_REUSED = re.compile(r"Reused (\S+): \S+, ([\d.]+)s, content key")


def git(*args: str, cwd: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=env).stdout.strip()


def build(name: str, conf: dict) -> tuple[float, str]:
    result = run_dag("build_images", conf, name=f"bench-{name}")
    if result.returncode != 0:
        raise SystemExit(f"{name}: the run failed; see {result.log_path}")
    builds = _BUILT.findall(result.output)
    reused = _REUSED.findall(result.output)
    if len(builds) + len(reused) != 3:
        raise SystemExit(f"{name}: expected 3 build steps, found {builds} built, {reused} reused; "
                         f"see {result.log_path}")
    ui = _UI_BUILT.findall(result.output)
    seconds = sum(float(b[1]) for b in builds) + sum(float(r[1]) for r in reused) + sum(float(u[1]) for u in ui)
    for image, duration, cached, steps in builds:
        print(f"  {name}: {image.rsplit('/', 2)[-2]} {duration}s, {cached}/{steps} steps cached")
    for image, duration in reused:
        print(f"  {name}: {image.rsplit('/', 2)[-2]} {duration}s, reused {image} (content key published)")
    for _, duration in ui:
        print(f"  {name}: ui-assets {duration}s (the compiled UI, built and pushed by content key)")
    print(f"{name}: {seconds:.1f}s of builds")
    return seconds, result.output


def fresh_worker(registry: str) -> None:
    """What a new worker lacks: the engine's build cache, the branch's local images, fetched commits."""
    from airflow_image_factory.clients.settings_loader import load_settings
    from airflow_image_factory.tasks.operators import sources_cache_dir

    shutil.rmtree(sources_cache_dir(load_settings()), ignore_errors=True)
    docker = os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or "docker"
    subprocess.run([docker, "builder", "prune", "-af"], check=True, capture_output=True)
    listed = subprocess.run([docker, "images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    # An untagged leftover of an earlier run (name:<none>) can only be removed by its ID.
    ours = sorted({ident if ref.endswith(":<none>") else ref
                   for ident, ref in (line.split(" ", 1) for line in listed)
                   if ref.startswith(f"{registry}/apache/airflow/{BRANCH}/")})
    if ours:
        subprocess.run([docker, "rmi", "-f", *ours], check=True, capture_output=True)


def main() -> int:
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    source = os.environ["IMAGE_FACTORY_SOURCE_REPO"]
    version = json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11"]'))[0]
    git("--git-dir", source, "branch", "-f", BRANCH, "main")
    conf = {"branch": BRANCH, "python_versions": [version]}
    try:
        cold, cold_log = build("cold", {**conf, "cache": "disabled"})
        fresh_worker(registry)
        fresh, fresh_log = build("fresh", conf)
        fresh_worker(registry)
        rebuild, _ = build("rebuild", {**conf, "rebuild": True})
        with tempfile.TemporaryDirectory() as tmp:
            git("clone", "-q", "--branch", BRANCH, source, tmp)
            module = Path(tmp, "airflow-core/src/airflow/image_factory_bench.py")
            module.write_text('"""A Python-only change made by benchmarks/warm_rebuild.py."""\nVALUE = 1\n')
            git("add", "-A", cwd=tmp)
            git("commit", "-q", "-m", "A Python-only change", cwd=tmp)
            git("push", "-q", "origin", BRANCH, cwd=tmp)
        changed, _ = build("changed", conf)
    finally:
        git("--git-dir", source, "branch", "-D", BRANCH)
    context = re.search(r"Build context: (\d+) source files, ([\d.]+) MB", cold_log)
    # The fresh worker's first fetch: its commit cache was emptied, so this is one commit over the wire.
    fetch = re.search(r"Sources of \S+ at \S+: \S+ \(([\d.]+)s\)", fresh_log)
    print(f"cold {cold:.1f}s, fresh worker {fresh:.1f}s, fresh worker with rebuild {rebuild:.1f}s, "
          f"Python-only change {changed:.1f}s")
    if context:
        print(f"RESULT build_context_megabytes {float(context.group(2)):.1f}")
        print(f"RESULT build_context_files {context.group(1)}")
    if fetch:
        print(f"RESULT commit_fetch_seconds {float(fetch.group(1)):.2f}")
    print(f"RESULT python_change_to_cold_build_time_ratio {changed / cold:.4f}")
    print(f"RESULT fresh_worker_rebuild_to_cold_build_time_ratio {rebuild / cold:.4f}")
    print(f"RESULT fresh_worker_to_cold_build_time_ratio {fresh / cold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
