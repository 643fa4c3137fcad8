"""Why creditsctl stopped. Each class carries its exit code; every message is one line, safe to print
(but `post`'s refusal of a bad file: a line per bad line of the file, after the first).

    CliError            exit code
    ├── UsageError      2   a bad argument or setting, or a confirmation not given: nothing was sent
    ├── Refused         1   the ledger (or Stripe) refused the request: the message carries its reason
    └── Unavailable     3   the ledger or Stripe could not be reached in time: safe to retry (same key)

Foreign exceptions (services.ledger.errors, services.stripe_bridge.errors, ConfigError) are translated
into these where the command meets them, `raise ... from exc`; services.cli.__main__ prints them.
tests/cli/test_stripe_boundary.py injects each of Stripe's failures at the seam and requires one of these.

`creditsctl post` answers with a summary and an exit code rather than an exception once batches are sent
(services.cli.post): 0 every posting applied or replayed; EXIT_REFUSED (1) some postings refused, every batch
answered; EXIT_UNAVAILABLE (3) stopped, the ledger unavailable; EXIT_STOPPED (4) stopped, a call refused as a
whole (the token's roles, ...); EXIT_INTERRUPTED (130) stopped by Ctrl-C. Stopped runs are safe to re-run:
the keys replay.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_STOPPED: Final = 4  # post only: a call refused as a whole stopped the run (fix the cause, re-run the file)
EXIT_INTERRUPTED: Final = 130  # Ctrl-C, as shells report SIGINT


class CliError(Exception):
    """A command could not do what was asked; `exit_code` says which kind of failure."""

    exit_code: int = EXIT_REFUSED


class UsageError(CliError):
    """A bad argument or setting, or a confirmation not given; nothing was sent."""

    exit_code = EXIT_USAGE


class Refused(CliError):
    """The ledger or Stripe refused the request; the message carries the reason."""

    exit_code = EXIT_REFUSED


class Unavailable(CliError):
    """The ledger or Stripe could not be reached in time; retrying is safe."""

    exit_code = EXIT_UNAVAILABLE
