"""Constraints files (``constraints-X.Y.txt``): parse, compare, render. Pure: no git, no network.

A constraints file is pip's: ``name==version`` lines; comments (``#``) and blank lines carry no
meaning for the comparison, so a new header date alone never counts as a change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")
_NORMALIZE = re.compile(r"[-_.]+")


def constraints_file_name(python: str) -> str:
    return f"constraints-{python}.txt"


def constraints_branch(branch: str) -> str:
    """The branch of the source repository that holds a branch's constraints (Airflow's convention)."""
    return f"constraints-{branch}"


def constraints_branches(branch: str, default_branch: str) -> list[str]:
    """Where a branch's constraints are looked for, per Python version, the first that has the file wins:
    the branch's own constraints branch, then (for any other branch) the default branch's. A branch cut
    from main installs main's pins until it has its own, as a pull request installs its target's;
    without them its images would take whatever PyPI has newest."""
    own = constraints_branch(branch)
    return [own] if branch == default_branch else [own, constraints_branch(default_branch)]


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, so ``Flask_Login`` and ``flask-login`` are one package."""
    return _NORMALIZE.sub("-", name).lower()


def parse_pins(text: str) -> dict[str, str]:
    """``{normalized name: version}`` of every ``name==version`` line; everything else is ignored."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if match := _PIN.match(line):
            pins[normalize_name(match.group(1))] = match.group(2)
    return pins


def meaningful_lines(text: str) -> list[str]:
    """The lines that matter: no comments, no blanks, order kept (for "did the file change")."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def files_differ(old: str | None, new: str) -> bool:
    return old is None or meaningful_lines(old) != meaningful_lines(new)


@dataclass(frozen=True)
class PinChange:
    name: str
    old: str | None  # None: not pinned before
    new: str

    def __str__(self) -> str:
        return f"{self.name} {self.old or '(new)'} -> {self.new}"


def upgrades(resolved: Mapping[str, str], current: Mapping[str, str]) -> list[PinChange]:
    """Packages whose newest allowed version differs from the current constraints, sorted by name.

    Only the packages the resolver returned count: the constraints also pin test tooling the CI image
    adds, which the resolution of Airflow alone does not contain.
    """
    changes = []
    for name, version in sorted(resolved.items()):
        key = normalize_name(name)
        if current.get(key) != version:
            changes.append(PinChange(key, current.get(key), version))
    return changes


def render(
    pins: Mapping[str, str], *, python: str, airflow_version: str, sha: str, generated: str, source: str,
    notes: Sequence[str] = (),
) -> str:
    """A constraints file: a comment header (what, when, from which commit), ``notes`` (lines kept as they
    are: the nightly's holds), then sorted pins."""
    header = [
        "#",
        f"# Constraints for Apache Airflow {airflow_version} on Python {python}",
        f"# Generated {generated} from {source}",
        f"# Commit {sha}",
        "# Lines starting with # are ignored when deciding whether the constraints changed.",
        "#",
    ]
    body = [f"{name}=={version}" for name, version in sorted(pins.items(), key=lambda kv: normalize_name(kv[0]))]
    return "\n".join([*header, *notes, *body]) + "\n"


def freeze_to_pins(freeze_output: str) -> dict[str, str]:
    """``pip freeze`` output → pins; editable and direct-URL lines cannot be constraints and are left out."""
    return {
        match.group(1): match.group(2)
        for line in freeze_output.splitlines()
        if (match := _PIN.match(line)) and " @ " not in line
    }


def starting_point(existing: Mapping[str, str], python: str) -> tuple[str, str] | None:
    """The file a Python version compares against: its own, or for a new version the newest other one.

    ``existing`` maps Python version → file text. Returns (version whose file is used, text) or None.
    """
    if python in existing:
        return python, existing[python]
    if not existing:
        return None
    newest = max(existing, key=lambda v: tuple(int(p) for p in v.split(".")))
    return newest, existing[newest]
