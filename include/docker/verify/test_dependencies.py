"""The installed dependency set is consistent."""

from __future__ import annotations

import sys


def test_pip_check(run):
    proc = run([sys.executable, "-m", "pip", "check"], timeout=300)
    assert "No broken requirements found" in proc.stdout


def test_runs_in_a_virtualenv():
    # Airflow lives in its own virtualenv, not in the base image's python.
    assert sys.prefix != sys.base_prefix
