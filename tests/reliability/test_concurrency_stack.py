"""Two build_images runs of one branch at once: the published latest set is all from one run.

Both runs (different commits of the branch ``reliability-conc``) build, test and push their ``:SHA``
images in parallel; their promotions are serialised by the per-(registry, repository, branch)
promotion lock, so whichever promotes last owns every latest - never CI from one run and PROD from
the other. (That other branches never wait is shown in test_promotion_lock.py, with real processes.)
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.reliability.conftest import CONC_BRANCH, CONC_REPOSITORY, PYTHON, revision_of

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _lock_times(output: str) -> tuple[datetime, datetime]:
    def at(event: str) -> datetime:
        match = re.search(rf"^(\S+Z) .*promotion lock {event}", output, re.MULTILINE)
        assert match, f"no 'promotion lock {event}' line"
        return datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))

    return at("acquired"), at("released")


def test_both_runs_pass(concurrent_auth_runs):
    for name, run in concurrent_auth_runs.runs.items():
        assert run.returncode == 0, f"{name}:\n{run.output[-6000:]}"


def test_latest_set_is_all_from_one_run(concurrent_auth_runs):
    client = concurrent_auth_runs.registry.client()
    owners = set()
    for kind in ("ci", "prod", "prod-build", "ci-manifest"):
        owners.add(revision_of(client, f"{CONC_REPOSITORY}/{CONC_BRANCH}/{kind}/python{PYTHON}", "latest"))
    assert len(owners) == 1, owners
    [sha] = owners
    assert sha in concurrent_auth_runs.shas.values()
    for kind in ("ci", "prod"):
        path = f"{CONC_REPOSITORY}/{CONC_BRANCH}/{kind}/python{PYTHON}"
        assert client.manifest_digest(path, "latest") == client.manifest_digest(path, sha)
    # and both runs really pushed their own :SHA images (so a mix was possible)
    other = next(s for s in concurrent_auth_runs.shas.values() if s != sha)
    for kind in ("ci", "prod"):
        path = f"{CONC_REPOSITORY}/{CONC_BRANCH}/{kind}/python{PYTHON}"
        assert client.manifest_digest(path, other) not in (None, client.manifest_digest(path, sha))


def test_promotions_did_not_overlap(concurrent_auth_runs):
    windows = sorted(_lock_times(run.output) for run in concurrent_auth_runs.runs.values())
    (_, first_released), (second_acquired, _) = windows
    assert first_released <= second_acquired, windows
    # one lock file for the branch, in the configured directory
    assert len(list(concurrent_auth_runs.lock_dir.glob("*.lock"))) == 1
