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
failure (every upgrade: fails; then none: passes). The probe with every upgrade is asked alone first: on
a nightly whose upgrades break nothing it is the only probe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from airflow_image_factory.policy.constraints import normalize_name, parse_pins
from airflow_image_factory.policy.constraints import upgrades as pin_changes

ProbeKey = tuple[str, ...]  # the upgraded packages, sorted


def probe_key(upgraded: Iterable[str]) -> ProbeKey:
    return tuple(sorted(set(upgraded)))


@dataclass(frozen=True)
class Verdict:
    """How a search ended. ``kind``:

    * ``culprits``: upgrading exactly ``culprits`` (together) makes the tests fail; everything else is safe;
    * ``upgrades_pass``: the probe with every upgrade passed: nothing to hold back;
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
        [all_passes] = replay.passed_all(everything)
        if all_passes:
            return Step(verdict=Verdict("upgrades_pass"))
        [none_passes] = replay.passed_all(())
        if not none_passes:
            return Step(verdict=Verdict("fails_without_upgrades"))
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


def recorded_hold_lines(text: str) -> list[str]:
    """The lines of ``text`` that record holds: each hold's comment, and the ``!=`` exclusion of a held
    package that had no pin, in their order (carried into the constraints generated from a tested image,
    which ``pip freeze`` alone would lose)."""
    held = set(parse_holds(text))
    return [
        line for line in text.splitlines()
        if line.startswith(HOLD_PREFIX) or (
            "!=" in line and not line.lstrip().startswith("#")
            and normalize_name(line.split("!=", 1)[0].strip()) in held
        )
    ]


def standing_holds(current_text: str, resolved: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The holds of the current constraints over a new resolution.

    A held package whose newest version is still the one that failed stays held: it keeps its current
    pin (or stays out, when it had none) and is no upgrade, so nothing probes it again. A newer version
    is an upgrade candidate again, and its hold is dropped: probes that pass lift it; a failure holds it
    anew. Returns (the resolution with the standing holds applied, the lines recording them)."""
    current = parse_pins(current_text)
    failed = parse_holds(current_text)
    standing = {name for name, version in resolved.items() if failed.get(normalize_name(name)) == version}
    pins = {}
    for name, version in resolved.items():
        key = normalize_name(name)
        if key not in standing:
            pins[key] = version
        elif key in current:
            pins[key] = current[key]
    lines = [line for line in recorded_hold_lines(current_text) if _held_name(line) in standing]
    return pins, lines


def _held_name(line: str) -> str:
    spec = line[len(HOLD_PREFIX):].split(" ", 1)[0] if line.startswith(HOLD_PREFIX) else line
    return normalize_name(spec.replace("!=", "==").split("==", 1)[0].strip())


def with_holds(text: str, current: Mapping[str, str], holds: Sequence[Hold]) -> str:
    """A constraints file of the newest set (``text``) with ``holds`` applied: its comments and
    exclusions as they were, each hold's lines (:func:`hold_lines`), then the pins of :func:`held_pins`."""
    kept = [line for line in text.splitlines() if not parse_pins(line)]
    pins = held_pins(parse_pins(text), current, holds)
    body = [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join([*kept, *hold_lines(holds), *body]) + "\n"


# ---- the nightly's rounds: every Python version's search, stepped together ---------------------------


def results_of(probed: Iterable[Mapping], python: str) -> dict[ProbeKey, bool]:
    """``{probe: passed}`` of one Python version, from the probe tasks' results so far."""
    return {probe_key(p["upgraded"]): bool(p["passed"]) for p in probed if p and p["python"] == python}


def next_round(searches: Mapping[str, Sequence[str]], probed: Iterable[Mapping]) -> list[dict]:
    """The probes of the next round, ``{"python", "upgraded"}`` each, for every version still searching
    (``searches``: Python version -> its upgrade names); empty when every search has its verdict."""
    probed = list(probed)
    return [
        {"python": python, "upgraded": list(probe)}
        for python, upgrades in sorted(searches.items())
        for probe in next_step(upgrades, results_of(probed, python)).probes
    ]


def rounds_needed(upgrade_count: int, *, interacting: int = 1) -> int:
    """Rounds (each runs a step's probes side by side) a search may take: two to confirm (every upgrade,
    then none), then one per halving for each of ``interacting`` culprits; :func:`probe_budget` counts
    the probes."""
    depth = max(1, math.ceil(math.log2(max(upgrade_count, 2))))
    return max(2 + depth, 1 + depth * max(1, interacting))


UNDECIDED = "undecided"  # the rounds ran out, or a probe could not be run: no verdict, nothing held


def verdict_of(upgrades: Sequence[str], probed: Iterable[Mapping], python: str) -> Verdict:
    """The search's verdict from the probes run, or ``undecided`` when it asks for more."""
    step = next_step(upgrades, results_of(probed, python))
    return step.verdict or Verdict(UNDECIDED)


def culprit_holds(verdict: Verdict, current: Mapping[str, str], resolved: Mapping[str, str], run_id: str) -> list[Hold]:
    """The holds a ``culprits`` verdict makes: each culprit kept at its current version (None: new)."""
    return [Hold(name, current.get(name), resolved[name], run_id) for name in verdict.culprits]


def probe_table(probed: Iterable[Mapping]) -> list[str]:
    """The probes as a table a person reads: round, Python version, upgrades it installs, passed."""
    rows = sorted((p for p in probed if p), key=lambda p: (p.get("round", 0), p["python"], len(p["upgraded"])))
    lines = [f"{'ROUND':>5}  {'PYTHON':<7}  {'UPGRADED':>8}  PASSED"]
    lines += [f"{p.get('round', 0):>5}  {p['python']:<7}  {len(p['upgraded']):>8}  {'yes' if p['passed'] else 'no'}"
              for p in rows]
    return lines


def failing_probe(culprits: Sequence[str], probed: Iterable[Mapping], python: str) -> Mapping | None:
    """The probe that proves the culprits: the failing probe of ``python`` with the fewest upgrades that
    holds them all."""
    failing = [p for p in probed if p and p["python"] == python and not p["passed"]
               and set(culprits) <= {normalize_name(n) for n in p["upgraded"]}]
    return min(failing, key=lambda p: len(p["upgraded"]), default=None)


def bisection_summary(
    *, branch: str, run_id: str, verdicts: Mapping[str, Verdict], holds: Mapping[str, Sequence[Hold]],
    probed: Sequence[Mapping],
) -> dict:
    """What a bisecting nightly says, per Python version (verdict, culprits held and the versions that
    failed, the failing output of the probe that proved them) and the probes' table; ``text`` is the
    whole of it as a person reads it (the task log, the asset event)."""
    versions: dict[str, dict] = {}
    lines = [f"Upgrade bisection of {branch} (run {run_id}):"]
    for python, verdict in sorted(verdicts.items()):
        held = [{"name": h.name, "kept": h.kept, "failed": h.failed} for h in holds.get(python, ())]
        # the proof: the smallest failing probe holding the culprits; without culprits, the probe of none
        proof = failing_probe(verdict.culprits, probed, python) if verdict.culprits or \
            verdict.kind == "fails_without_upgrades" else None
        tail = (proof or {}).get("output_tail", "")
        versions[python] = {**verdict.to_dict(), "held": held, "output_tail": tail}
        if held:
            listed = ", ".join(f"{h['name']}=={h['failed']} (kept at {h['kept'] or 'its previous absence'})"
                               for h in held)
            lines.append(f"  Python {python}: culprit{'s' if len(held) > 1 else ''} {listed}; the rest is published")
            lines += [f"    | {line}" for line in tail.splitlines()]
        else:
            lines.append(f"  Python {python}: {_VERDICT_WORDS.get(verdict.kind, verdict.kind)}")
            lines += [f"    | {line}" for line in tail.splitlines()]
    lines += ["Probes:", *(f"  {line}" for line in probe_table(probed))]
    return {"branch": branch, "run_id": run_id, "versions": versions,
            "probes": [{"round": p.get("round", 0), "python": p["python"], "upgraded": len(p["upgraded"]),
                        "passed": bool(p["passed"])} for p in probed if p],
            "text": "\n".join(lines)}


_VERDICT_WORDS = {
    "upgrades_pass": "every upgrade together passed the probe: nothing held",
    "fails_without_upgrades": "the tests fail with the current constraints too: no upgrade is to blame, nothing "
                              "held, nothing built or published",
    UNDECIDED: "no verdict (the rounds ran out, or a probe could not be run): nothing held",
}


def bisection_search(current: str, upgraded: str, ci_image: str) -> dict | None:
    """What the probes of one Python version need (an entry of the nightly plan's ``bisection``): its
    ``current`` constraints file, the ``resolved`` newest pins (``upgraded``: the rebuild's file), the
    ``upgrades`` (names whose version differs) and ``ci_image`` (the published CI image built with
    ``current``, by digest). None when nothing is upgraded: there is nothing to bisect."""
    resolved = parse_pins(upgraded)
    names = [change.name for change in pin_changes(resolved, parse_pins(current))]
    if not names:
        return None
    return {"current": current, "resolved": resolved, "upgrades": names, "ci_image": ci_image}
