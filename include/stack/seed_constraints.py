#!/usr/bin/env python3
"""Seed ``constraints-<branch>`` of the stack's stand-in source repository, as Airflow's own are.

apache/airflow keeps a constraints branch per development branch (``constraints-main``, ...), frozen when
the release was made; every image build installs with it, and only a nightly whose eager upgrade passes
its tests moves it. The stand-in (``seed_sources.py``) is made from a release's sdists, but its
constraints live on GitHub, which the stack cannot reach. Without them every build would install the
newest of everything — today that is celery 5.7, whose ``celery.backends.database`` no longer has the
``retry`` that providers-celery 3.26 imports, so the CeleryExecutor (the chart's default) cannot load.

So this resolves each branch's own dependency metadata (its pyproject files, the stack's regular extras
and additional requirements: the package's settings) for each stack Python version, **as PyPI stood when
the release was uploaded** (``uv pip compile --exclude-newer``), and commits ``constraints-X.Y.txt`` in
Airflow's format (airflow's own distributions left out). The same resolution on every machine, as long
as PyPI keeps its files: the stack's builds are reproducible, and a later upstream release cannot break
them behind the tests' back. Uses the package's own sources, resolver, constraints and git code.

Idempotent: a branch that already has a file for a Python version keeps it (a nightly may have moved it).

Usage: seed_constraints.py --repo .stack/source.git --python 3.11 --python 3.13 [--branch main ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_sources

from airflow_image_factory.clients.git import BranchFiles, branch_head, fetch_commit
from airflow_image_factory.clients.resolver import resolve_sources
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.clients.sources import SourceTree, read_source_tree, write_metadata_wheels
from airflow_image_factory.policy import constraints as cons
from airflow_image_factory.policy.settings import extras_of

AUTHOR = seed_sources.AUTHOR


def seed(repo: str, branches: list[str], pythons: list[str], *, as_of: str, cache_dir: Path) -> list[str]:
    """Commit the missing constraints files; returns one line per branch of what it did. The resolutions
    run at once (each is a uv process waiting on PyPI's metadata), the commits one branch at a time."""
    settings = load_settings()
    extras = extras_of(settings.airflow_extras)
    additional = tuple(settings.additional_python_deps.split())
    done: dict[str, str] = {}
    work: list[tuple[str, str, SourceTree, str, str]] = []  # (branch, its head, its tree, metadata wheels, python)
    with tempfile.TemporaryDirectory(prefix="metadata-wheels-") as wheels_root:
        for branch in branches:
            with BranchFiles(repo, cons.constraints_branch(branch)) as files:
                missing = [p for p in pythons if files.read(cons.constraints_file_name(p)) is None]
            if not missing:
                done[branch] = f"present: {cons.constraints_branch(branch)} ({', '.join(pythons)})"
                continue
            sha = branch_head(repo, branch)
            if sha is None:
                raise SystemExit(f"seed_constraints: {repo} has no branch {branch}")
            # Each branch's tree and metadata wheels once, whatever the number of Pythons.
            tree = read_source_tree(fetch_commit(repo, sha, cache_dir))
            wheels = Path(wheels_root, branch)
            write_metadata_wheels(tree, wheels)
            work += [(branch, sha, tree, str(wheels), python) for python in missing]

        def resolve(branch: str, sha: str, tree: SourceTree, wheels: str, python: str) -> str:
            started = time.monotonic()
            pins = resolve_sources(tree, extras, python=python, metadata_wheels=wheels, additional=additional,
                                   extra_ca_bundle=settings.extra_ca_bundle, uploaded_before=as_of)
            print(f"resolved {branch} for Python {python}: {len(pins)} pins in "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            return cons.render(
                pins, python=python, airflow_version=tree.distributions["apache-airflow"].version, sha=sha,
                generated=as_of, source=f"the branch's dependency metadata as PyPI stood then (the stack's "
                                        f"stand-in for Airflow's own {cons.constraints_branch(branch)})",
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            texts = list(pool.map(lambda item: resolve(*item), work))
    for branch in dict.fromkeys(b for b, *_ in work):
        files_of_branch = {cons.constraints_file_name(python): text
                           for (b, *_, python), text in zip(work, texts, strict=True) if b == branch}
        with BranchFiles(repo, cons.constraints_branch(branch)) as files:
            head = files.commit_and_push(files_of_branch, author=AUTHOR,
                                         message=f"Constraints of {branch} as PyPI stood at {as_of}")
        versions = ", ".join(name.removeprefix("constraints-").removesuffix(".txt") for name in files_of_branch)
        done[branch] = f"created: {cons.constraints_branch(branch)} at {head[:12]} ({versions})"
    return [done[branch] for branch in branches]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--python", action="append", required=True, help="a stack Python version (repeat)")
    parser.add_argument("--branch", action="append", help="default: the stand-in's branches")
    parser.add_argument("--as-of", default=seed_sources.RELEASE_UPLOADED,
                        help="resolve as PyPI stood then (default: the pinned release's upload time)")
    parser.add_argument("--cache", default=None, help="where fetched source trees are kept")
    args = parser.parse_args(argv)
    release = seed_sources.Release(seed_sources.AIRFLOW_VERSION, seed_sources.TASK_SDK_VERSION)
    branches = args.branch or ["main", release.release_branch]
    with tempfile.TemporaryDirectory(prefix="seed-constraints-") as tmp:
        for line in seed(args.repo, branches, args.python, as_of=args.as_of, cache_dir=Path(args.cache or tmp)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
