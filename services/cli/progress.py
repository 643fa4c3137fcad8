"""A text progress bar on stderr, one line per pass: for `creditsctl reconcile`

    charges   [################--------]  67%  12,345 charges  2,310/s  drift 3 (2 repaired)  0:05

and for `creditsctl post` (a pass with a known total; the caller supplies the text after the rate)

    post     [######------------------]  25%  2,000 postings  9,850/s  applied 1,990  replayed 0  refused 10  0:00

Stripe's lists carry no total, but they come newest first and the pass knows its window: the bar is
the share of that window covered so far (how far back the oldest `created` seen reaches). A pass
started with `start_counted` knows its total: the bar is the share counted. The counts are exact. On a
terminal the line is redrawn in place, at most every REDRAW_SECONDS; anywhere else (a pipe, a CI log)
a plain line is written every LINE_SECONDS of a long pass and when each pass ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

BAR_WIDTH: Final = 24
REDRAW_SECONDS: Final = 0.1
LINE_SECONDS: Final = 5.0
STAGE_UNITS: Final = {"events": "events", "charges": "charges", "ledger": "payments", "post": "postings"}


@dataclass
class _Stage:
    name: str
    since_seconds: float
    until_seconds: float
    started: float
    count: int = 0
    covered: float = 0.0
    total: int | None = None  # known for a counted pass: `covered` is then count / total


class ProgressBar:
    """Draws the run's progress; `start`, `advance` and `done` per pass, `drift` per drift item."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        detail: Callable[[], str] | None = None,
    ) -> None:
        """`detail`: the text after the rate (default: reconcile's drift counts)."""
        self.stream = stream
        self.detail = detail or self._drift_detail
        self.interactive = stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.stage: _Stage | None = None
        self.drift_found = 0
        self.drift_repaired = 0
        self.last_drawn = -float("inf")
        self.line_open = False

    def start(self, name: str, since_seconds: float, until_seconds: float) -> None:
        """A pass begins over [since, until] (epoch seconds); the previous one's final line is drawn now."""
        if self.stage is not None and self.stage.name == name:
            return  # the same pass, seen again (the ledger pass reports each of its pages)
        if self.stage is not None:
            self._draw(force=True)
            self._end_line()
        self.stage = _Stage(name, since_seconds, max(until_seconds, since_seconds + 1), self.clock())
        self.last_drawn = self.clock() if not self.interactive else -float("inf")
        self._draw()

    def start_counted(self, name: str, total: int) -> None:
        """A pass of `total` items begins (the bar shows the share counted by `advance`)."""
        assert total >= 0, total
        self.start(name, 0.0, 1.0)
        assert self.stage is not None
        self.stage.total = total

    def advance(self, name: str, count: int, oldest_seconds: float | None = None) -> None:
        """`count` more objects of pass `name`, the oldest created at `oldest_seconds` (None: unknown)."""
        stage = self.stage
        if stage is None or stage.name != name:
            return
        stage.count += count
        if stage.total is not None:
            stage.covered = min(1.0, stage.count / stage.total) if stage.total else 1.0
        elif oldest_seconds is not None:
            span = stage.until_seconds - stage.since_seconds
            stage.covered = max(stage.covered, min(1.0, (stage.until_seconds - oldest_seconds) / span))
        self._draw()

    def done(self, name: str) -> None:
        """The pass has listed everything. Its last page may still be in work (the run fetches ahead), so
        its final line waits for the next pass, or for `close`."""
        stage = self.stage
        if stage is None or stage.name != name:
            return
        stage.covered = 1.0
        self._draw()

    def drift(self, repaired: bool) -> None:
        self.drift_found += 1
        self.drift_repaired += int(repaired)
        self._draw()

    def close(self) -> None:
        """Draws the last pass's final line (a run that stopped half-way leaves its last state visible); once."""
        if self.stage is not None:
            self._draw(force=True)
        self._end_line()
        self.stage = None

    def render(self) -> str:
        stage = self.stage
        assert stage is not None
        filled = round(stage.covered * BAR_WIDTH)
        elapsed = max(self.clock() - stage.started, 1e-9)
        minutes, seconds = divmod(int(elapsed), 60)
        unit = STAGE_UNITS.get(stage.name, "items")
        return (
            f"{stage.name:<8} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {round(stage.covered * 100):3d}%  "
            f"{stage.count:,} {unit}  {stage.count / elapsed:,.0f}/s  {self.detail()}  {minutes}:{seconds:02d}"
        )

    def _drift_detail(self) -> str:
        return f"drift {self.drift_found} ({self.drift_repaired} repaired)"

    def _draw(self, force: bool = False) -> None:
        if self.stage is None:
            return
        now = self.clock()
        interval = REDRAW_SECONDS if self.interactive else LINE_SECONDS
        if not force and now - self.last_drawn < interval:
            return
        self.last_drawn = now
        if self.interactive:
            self.stream.write("\r\x1b[K" + self.render())
            self.line_open = True
        else:
            self.stream.write(self.render() + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.stream.flush()
            self.line_open = False
