"""The Jepsen-style fault run (see tests/faults/run.py and docs/reliability.md).

    .venv/bin/python -m pytest tests/faults -q                                   # the short run (~60 s of faults)
    FAULTS_SEED=1234 FAULTS_DURATION_SECONDS=1800 .venv/bin/python -m pytest tests/faults -q -s   # the soak

The seed is random unless FAULTS_SEED is set; it is printed, with a one-line repro command, on failure
(and with -s always). The plan (operations, customers' actions, faults and their timing) follows from the
seed; the real processes' interleavings do not, so a repro replays the same plan, not the same schedule.
FAULTS_FOLDER keeps the run's logs and history in a folder of your choice; by default they go to a fresh
folder under the system's temporary directory (not pytest's: as root the cluster runs as pgserver's system
user, which must traverse the path, and pytest keeps its own base folder private to its user), removed
after a run without violations.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Final

import pytest

from tests.faults.run import VIOLATIONS_SHOWN_MAX, FaultsConfig, run_faults

DURATION_SECONDS_DEFAULT: Final = 60.0
SETTLE_SECONDS_MAX: Final = 240.0
SEED: Final = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(1, 2**31))
DURATION_SECONDS: Final = float(os.environ.get("FAULTS_DURATION_SECONDS") or DURATION_SECONDS_DEFAULT)


@pytest.mark.timeout(DURATION_SECONDS + SETTLE_SECONDS_MAX)
async def test_history_under_faults_is_exactly_once_and_matches_stripe() -> None:
    chosen = os.environ.get("FAULTS_FOLDER")
    folder = Path(chosen) / f"seed-{SEED}" if chosen else Path(tempfile.mkdtemp(prefix=f"credits-faults-{SEED}-"))
    report = await run_faults(FaultsConfig(seed=SEED, duration_seconds=DURATION_SECONDS, folder=folder))

    repro = (
        f"FAULTS_SEED={SEED} FAULTS_DURATION_SECONDS={DURATION_SECONDS:g} .venv/bin/python -m pytest tests/faults -q"
    )
    print(f"\nfaults run seed {SEED}: {json.dumps(report.figures, default=str)}\nlogs: {report.folder}")
    shown = "\n".join(report.violations[:VIOLATIONS_SHOWN_MAX])
    assert not report.violations, (
        f"{len(report.violations)} violation(s) with seed {SEED}; logs in {report.folder}\nrepro: {repro}\n{shown}"
    )
    if not chosen:
        shutil.rmtree(folder, ignore_errors=True)
    figures = report.figures
    assert figures["operations"] > 0
    assert figures["batches"] > 0
    assert figures["purchases"] > 0
    assert figures["events_acknowledged"] > 0
