"""Which upgraded packages break the tests: the probes to run next, and what their results prove.

Pure: a probe is a set of upgraded package names (every other package at the branch's current
constraints); its result (passed or not) is handed in. The search is written as plain recursion and
replayed from the start over the results known so far, so its whole state is that mapping of probes to
results (an XCom a later task can carry) and a step either asks for the probes it is missing, at most
two at once (they build side by side in the pool), or ends with a verdict.

The algorithm finds a minimal failing subset of the upgrades, with context (the upgrades kept on while
one part is searched): split the candidates in two halves and probe each with the context; the half
that fails alone holds the culprit; when neither fails alone the culprits interact across the halves,
so the first half is searched with the second kept on, then the second with the first half's culprits
kept on. One culprit among N upgrades takes 2·ceil(log2 N) probes after the two that confirm the
failure (every upgrade: fails; none: passes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from airflow_image_factory.policy.constraints import normalize_name

ProbeKey = tuple[str, ...]  # the upgraded packages, sorted


def probe_key(upgraded: Iterable[str]) -> ProbeKey:
    return tuple(sorted(set(upgraded)))


@dataclass(frozen=True)
class Verdict:
    """How a search ended. ``kind``:

    * ``culprits``: upgrading exactly ``culprits`` (together) makes the tests fail; everything else is safe;
    * ``not_reproduced``: the probe with every upgrade passed (the nightly's failure came from elsewhere);
    * ``fails_without_upgrades``: the branch's current constraints fail too: no upgrade is to blame.
    """

    kind: str
    culprits: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "culprits": list(self.culprits)}


@dataclass(frozen=True)
class Step:
    """The next thing to do: run ``probes`` (then step again with their results), or stop at ``verdict``."""

    probes: tuple[ProbeKey, ...] = ()
    verdict: Verdict | None = None


class _Missing(Exception):
    def __init__(self, probes: Sequence[ProbeKey]):
        super().__init__(probes)
        self.probes = tuple(probes)


@dataclass
class _Replay:
    results: Mapping[ProbeKey, bool]  # probe -> passed

    def passed_all(self, *probes: Iterable[str]) -> list[bool]:
        keys = [probe_key(p) for p in probes]
        missing = list(dict.fromkeys(k for k in keys if k not in self.results))
        if missing:
            raise _Missing(missing)
        return [self.results[k] for k in keys]


def _halves(candidates: ProbeKey) -> tuple[ProbeKey, ProbeKey]:
    middle = len(candidates) // 2
    return candidates[:middle], candidates[middle:]


def _minimal_failing(replay: _Replay, candidates: ProbeKey, context: ProbeKey) -> ProbeKey:
    """A minimal M within ``candidates`` such that context + M fails (known: context + candidates fails,
    context alone passes)."""
    if len(candidates) == 1:
        return candidates
    first, second = _halves(candidates)
    first_passes, second_passes = replay.passed_all(context + first, context + second)
    if not first_passes:
        return _minimal_failing(replay, first, context)
    if not second_passes:
        return _minimal_failing(replay, second, context)
    # neither half fails alone: the culprits interact across them
    in_first = _minimal_failing(replay, first, probe_key(context + second))
    in_second = _minimal_failing(replay, second, probe_key(context + in_first))
    return probe_key(in_first + in_second)


def next_step(upgrades: Iterable[str], results: Mapping[Iterable[str], bool]) -> Step:
    """What to do next, given the probes run so far (``results``: upgraded packages -> passed)."""
    everything = probe_key(normalize_name(name) for name in upgrades)
    replay = _Replay({probe_key(normalize_name(n) for n in k): bool(v) for k, v in results.items()})
    try:
        none_passes, all_passes = replay.passed_all((), everything)
        if not none_passes:
            return Step(verdict=Verdict("fails_without_upgrades"))
        if all_passes:
            return Step(verdict=Verdict("not_reproduced"))
        return Step(verdict=Verdict("culprits", _minimal_failing(replay, everything, ())))
    except _Missing as missing:
        return Step(probes=missing.probes)


def probe_budget(upgrade_count: int, *, interacting: int = 1) -> int:
    """Probes a search of ``upgrade_count`` upgrades may need with up to ``interacting`` culprits acting
    together: the two confirmations, then two per halving for each culprit (a bound, not the count)."""
    depth = max(1, math.ceil(math.log2(max(upgrade_count, 2))))
    return 2 + 2 * depth * max(1, interacting)


def probe_pins(current: Mapping[str, str], resolved: Mapping[str, str], upgraded: Iterable[str]) -> dict[str, str]:
    """One probe's constraints: the branch's current pins, with the ``upgraded`` packages at their
    resolved (newest) versions. A package new in the resolution and not upgraded in this probe is left
    out, so pip keeps it at whatever the rest allows."""
    chosen = {normalize_name(name) for name in upgraded}
    pins = {normalize_name(name): version for name, version in current.items()}
    for name, version in resolved.items():
        if normalize_name(name) in chosen:
            pins[normalize_name(name)] = version
    return pins


HOLD_PREFIX = "# held back: "


@dataclass(frozen=True)
class Hold:
    """A culprit kept at its previous version in the committed constraints, and why."""

    name: str
    kept: str | None  # the version kept (None: the package is new, and its failing version is excluded)
    failed: str
    run_id: str

    def comment(self) -> str:
        return f"{HOLD_PREFIX}{self.name}=={self.failed} failed the tests (run {self.run_id})"

    def pin_line(self) -> str:
        return f"{self.name}=={self.kept}" if self.kept else f"{self.name}!={self.failed}"


def held_pins(resolved: Mapping[str, str], current: Mapping[str, str], holds: Sequence[Hold]) -> dict[str, str]:
    """The pins a nightly commits when ``holds`` were found: the resolution, every culprit at its kept
    version (a new culprit left out: its exclusion is a ``!=`` line of :func:`hold_lines`)."""
    held = {h.name: h for h in holds}
    pins = {}
    for name, version in resolved.items():
        key = normalize_name(name)
        if key in held:
            if held[key].kept:
                pins[key] = held[key].kept
        else:
            pins[key] = version
    return pins


def hold_lines(holds: Sequence[Hold]) -> list[str]:
    """The comment naming each hold, and the ``!=`` exclusion of a held package that had no pin."""
    lines = []
    for hold in sorted(holds, key=lambda h: h.name):
        lines.append(hold.comment())
        if not hold.kept:
            lines.append(hold.pin_line())
    return lines


def parse_holds(text: str) -> dict[str, str]:
    """``{package: the version that failed}`` of the holds a constraints file records, so a later nightly
    retries only a newer version of a held package."""
    holds = {}
    for line in text.splitlines():
        if line.startswith(HOLD_PREFIX):
            spec = line[len(HOLD_PREFIX):].split(" ", 1)[0]
            name, _, failed = spec.partition("==")
            if name and failed:
                holds[normalize_name(name)] = failed
    return holds
