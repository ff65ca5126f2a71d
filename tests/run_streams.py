"""`make test`: the suite as pytest processes at once on the one stack (tests/support/streams.py), each
with its own tests.

Why: on a 2-core machine one stream leaves about a third of the CPU idle (pushes through loopback
proxies, registry round trips, the real scheduler's latency, containers starting). The streams share
nothing a test writes: each module is in one stream only (``tests/support/streams.py``), the
session fixtures that build images (``main_build``, ``official_build``) are in different streams, each
stream has its own SQLite metadata database for its ``airflow dags test`` runs, and each uses its own
image repositories, as the modules always did.

Usage: ``python tests/run_streams.py [pytest args]``; exits non-zero when any stream fails. Each stream's
output is shown line by line with its name, and kept whole in ``test-artifacts/pytest-<stream>.log``.
Plain ``pytest`` still runs everything in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.streams import STREAM_VARIABLE, STREAMS  # noqa: E402

ARTIFACTS = REPO_ROOT / "test-artifacts"


def _relay(name: str, process: subprocess.Popen, log: Path, lock: threading.Lock) -> None:
    width = max(len(stream) for stream in STREAMS)
    with log.open("w") as kept:
        assert process.stdout is not None
        for line in process.stdout:
            kept.write(line)
            kept.flush()
            with lock:
                sys.stdout.write(f"[{name:<{width}}] {line}")
                sys.stdout.flush()


def main(argv: list[str]) -> int:
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    lock = threading.Lock()
    running = []
    for name in STREAMS:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", *argv], cwd=REPO_ROOT, env={**os.environ, STREAM_VARIABLE: name},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        relay = threading.Thread(target=_relay, args=(name, process, ARTIFACTS / f"pytest-{name}.log", lock))
        relay.start()
        running.append((name, process, relay))
    codes = {}
    for name, process, relay in running:
        codes[name] = process.wait()
        relay.join()
    minutes = (time.monotonic() - started) / 60
    for name, code in codes.items():
        print(f"stream {name}: {'passed' if code == 0 else f'FAILED (exit {code})'}")
    print(f"the streams took {minutes:.1f} min")
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
