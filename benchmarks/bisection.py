"""The bisecting nightly: probes used against log2 of the upgrade set, and what the probes cost a run.

1. Probes (policy/bisection, the DAG's rounds simulated): for upgrade sets of N packages, one planted
   culprit at every position (64 spread evenly for large N), the probes the search runs to its verdict,
   next to 2·log2(N) + 2 (the issue's bound for one culprit).
2. Time: the newest nightly_images run of the stack's in-process Airflow (``make dag``, the tests: the
   SQLite metadata database of $AIRFLOW_HOME) that probed: its wall time over the same run without its
   bisection tasks (rounds, probes, verdict), read from the task instances' start and end dates. Skipped
   with a line saying so when no such run exists (the nightly stack test makes one).

Last line: RESULT bisection_probes_per_log2_n <the most probes per log2(N), at N = 512>
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

from airflow_image_factory.policy.bisection import next_round, probe_budget, verdict_of

SIZES = (8, 32, 128, 512)
SAMPLE = 64
BISECTION_TASKS = ("bisection_round_", "probe_upgrades_", "bisection_verdict")


def probes_to_verdict(upgrades: list[str], culprit: str) -> int:
    probed: list[dict] = []
    while probes := next_round({"3.11": upgrades}, probed):
        probed += [{**p, "passed": culprit not in p["upgraded"]} for p in probes]
    assert verdict_of(upgrades, probed, "3.11").culprits == (culprit,)
    return len(probed)


def probe_counts() -> float:
    worst_ratio = 0.0
    for size in SIZES:
        upgrades = [f"pkg-{i:03d}" for i in range(size)]
        culprits = upgrades[:: max(1, size // SAMPLE)]  # every position, or an even spread of 64
        counts = [probes_to_verdict(upgrades, culprit) for culprit in culprits]
        log2 = math.log2(size)
        worst_ratio = max(counts) / log2
        print(f"N={size:4}  log2 N={log2:4.1f}  probes: min {min(counts)}, max {max(counts)}, "
              f"mean {sum(counts) / len(counts):.1f}  bound 2*log2 N + 2 = {probe_budget(size)}")
    return worst_ratio


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def probe_time_ratio() -> None:
    database = Path(os.environ.get("AIRFLOW_HOME", ".stack/airflow")) / "airflow.db"
    if not database.is_file():
        print(f"time: no metadata database at {database} (run the nightly stack test first)")
        return
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT run_id FROM task_instance WHERE dag_id = 'nightly_images' AND task_id LIKE '%probe_upgrades_%' "
            "AND state = 'success' ORDER BY start_date DESC LIMIT 1"
        ).fetchone()
        if row is None:
            print("time: no nightly_images run that probed (the nightly stack test makes one)")
            return
        tasks = db.execute(
            "SELECT task_id, start_date, end_date FROM task_instance WHERE dag_id = 'nightly_images' AND run_id = ? "
            "AND start_date IS NOT NULL AND end_date IS NOT NULL", (row[0],)
        ).fetchall()
    start = min(_when(s) for _, s, _ in tasks)
    end = max(_when(e) for _, _, e in tasks)
    probing = sum((_when(e) - _when(s)).total_seconds() for task, s, e in tasks
                  if task.rsplit(".", 1)[-1].startswith(BISECTION_TASKS))
    total = (end - start).total_seconds()
    # in-process runs (`airflow dags test`) run one task at a time: the probes' time is all added time
    print(f"time: run {row[0]}: {total:.0f} s, of which {probing:.0f} s bisecting; "
          f"ratio to the same run without probes {total / (total - probing):.2f}")
    print(f"RESULT bisecting_nightly_time_ratio {total / (total - probing):.2f}")


def main() -> int:
    ratio = probe_counts()
    probe_time_ratio()
    print(f"RESULT bisection_probes_per_log2_n {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
