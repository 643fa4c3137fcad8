"""The reconcile progress bar: what it draws, and when, on a terminal and in a log."""

from __future__ import annotations

import io

from services.cli.progress import BAR_WIDTH, LINE_SECONDS, ProgressBar


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_line_per_interval_and_one_per_finished_pass() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream, interactive=False, clock=clock)
    bar.start("charges", since_seconds=0, until_seconds=100)
    bar.advance("charges", 100, oldest_seconds=75)
    assert stream.getvalue() == "", "no line before LINE_SECONDS have passed"
    clock.now += LINE_SECONDS
    bar.advance("charges", 100, oldest_seconds=25)
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("charges  [" + "#" * round(0.75 * BAR_WIDTH))
    assert " 75%  200 charges  40/s  drift 0 (0 repaired)  0:05" in line
    bar.done("charges")
    bar.drift(repaired=True)  # the last page's repairs finish after the listing ended
    bar.start("ledger", since_seconds=0, until_seconds=100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "100%  200 charges" in lines[1]
    assert "drift 1 (1 repaired)" in lines[1]
    bar.advance("ledger", 3, oldest_seconds=None)
    bar.close()
    assert stream.getvalue().splitlines()[-1].startswith("ledger   [------")
    assert "3 payments" in stream.getvalue().splitlines()[-1]


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream, interactive=True, clock=clock)
    bar.start("events", since_seconds=0, until_seconds=10)
    clock.now += 1
    bar.advance("events", 5, oldest_seconds=5)
    bar.done("events")
    bar.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[K") >= 2
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "100%  5 events" in text.rsplit("\r\x1b[K", 1)[-1]


def test_pages_of_another_pass_are_ignored() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, interactive=False, clock=Clock())
    bar.advance("charges", 10, oldest_seconds=1)  # nothing started: ignored
    bar.start("events", since_seconds=0, until_seconds=10)
    bar.advance("charges", 10, oldest_seconds=1)
    bar.close()
    assert "0 events" in stream.getvalue()


def test_a_counted_pass_shows_the_share_counted_and_the_callers_detail() -> None:
    stream, clock = io.StringIO(), Clock()
    counts = {"applied": 0}
    bar = ProgressBar(stream, interactive=False, clock=clock, detail=lambda: f"applied {counts['applied']}")
    bar.start_counted("post", total=4_000)
    clock.now += LINE_SECONDS
    counts["applied"] = 990
    bar.advance("post", 1_000)
    (line,) = stream.getvalue().splitlines()
    assert line == "post     [######------------------]  25%  1,000 postings  200/s  applied 990  0:05"
    bar.advance("post", 3_000)
    bar.close()
    assert stream.getvalue().splitlines()[-1].startswith("post     [########################] 100%  4,000 postings")


def test_a_counted_pass_of_nothing_is_complete() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, interactive=False, clock=Clock())
    bar.start_counted("post", total=0)
    bar.advance("post", 0)
    bar.close()
    assert " 100%  0 postings" in stream.getvalue()
