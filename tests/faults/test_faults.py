"""The Jepsen-style fault run (see tests/faults/run.py and docs/reliability.md).

    .venv/bin/python -m pytest tests/faults -q                                   # the short run (~60 s of faults)
    FAULTS_SEED=1234 FAULTS_DURATION_SECONDS=1800 .venv/bin/python -m pytest tests/faults -q -s   # the soak

The seed is random unless FAULTS_SEED is set; it is printed, with a one-line repro command, on failure
(and with -s always). The plan (operations, customers' actions, faults and their timing) follows from the
seed; the real processes' interleavings do not, so a repro replays the same plan, not the same schedule.
FAULTS_FOLDER keeps the run's logs and history somewhere other than pytest's temporary folder.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Final

import pytest

from tests.faults.run import VIOLATIONS_SHOWN_MAX, FaultsConfig, run_faults

DURATION_SECONDS_DEFAULT: Final = 60.0
SETTLE_SECONDS_MAX: Final = 240.0
SEED: Final = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(1, 2**31))
DURATION_SECONDS: Final = float(os.environ.get("FAULTS_DURATION_SECONDS") or DURATION_SECONDS_DEFAULT)


@pytest.mark.timeout(DURATION_SECONDS + SETTLE_SECONDS_MAX)
async def test_history_under_faults_is_exactly_once_and_matches_stripe(tmp_path: Path) -> None:
    folder = Path(os.environ["FAULTS_FOLDER"]) / f"seed-{SEED}" if os.environ.get("FAULTS_FOLDER") else tmp_path
    report = await run_faults(FaultsConfig(seed=SEED, duration_seconds=DURATION_SECONDS, folder=folder))

    repro = (
        f"FAULTS_SEED={SEED} FAULTS_DURATION_SECONDS={DURATION_SECONDS:g} .venv/bin/python -m pytest tests/faults -q"
    )
    print(f"\nfaults run seed {SEED}: {json.dumps(report.figures, default=str)}\nlogs: {report.folder}")
    shown = "\n".join(report.violations[:VIOLATIONS_SHOWN_MAX])
    assert not report.violations, (
        f"{len(report.violations)} violation(s) with seed {SEED}; logs in {report.folder}\nrepro: {repro}\n{shown}"
    )
    figures = report.figures
    assert figures["operations"] > 0
    assert figures["purchases"] > 0
    assert figures["events_acknowledged"] > 0
