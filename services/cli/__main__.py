"""`creditsctl` (also `python -m services.cli`): the operator's command line for the credits suite.

    creditsctl balance USER
    creditsctl history USER [--limit N | --all] [--page-token TOKEN]
    creditsctl adjust USER AMOUNT --reason TEXT [--key KEY] [--actor NAME]
    creditsctl anonymize USER [--yes]
    creditsctl payment ID | cs_... | pi_... | ch_...
    creditsctl payments USER [--limit N | --all] [--page-token TOKEN]
    creditsctl settle-payment ID | cs_... | pi_... --reason TEXT [--actor NAME]
    creditsctl reconcile [--since ISO | --window DURATION] [--dry-run] [--no-events]
    creditsctl replay-event EVENT_ID [--dry-run]
    creditsctl post --file postings.jsonl|- [--batch-size N] [--atomic]

Every command takes `--json` (one JSON document on stdout instead of tables) and `--timeout-seconds`
(deadline per ledger call, 10). Settings come from the environment: services.cli.settings.

Exit codes (services.cli.errors): 0 done; 1 refused, with the ledger's (or Stripe's) reason on stderr
(reconcile: drift remains for an operator; post: some postings refused); 2 usage or configuration, nothing was
sent; 3 the ledger or Stripe is unavailable: retrying is safe (an adjustment with the same --key is applied at
most once, a re-run of `post` replays what applied); 4 post only: stopped by a call refused as a whole;
130 interrupted (post: Ctrl-C stops after the batch in flight and prints the summary).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TextIO

from services.cli import ledger_commands, post
from services.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, Refused, Unavailable, UsageError
from services.cli.postings_file import BATCH_POSTINGS_MAX
from services.cli.render import Output, to_json
from services.cli.settings import DEADLINE_SECONDS_DEFAULT, LedgerAccess, StripeAccess, log_level
from services.common.config import ConfigError
from services.common.logs import configure_logging, register_secret
from services.ledger import errors
from services.ledger.accounts.validation import REASON_CHARS_MAX

PROG: Final = "creditsctl"
KEY_PREFIX: Final = "creditsctl-"
ACTOR_PREFIX: Final = "creditsctl:"
ROLE_HINTS: Final = {
    "balance": "reader or admin",
    "history": "reader or admin",
    "adjust": "admin",
    "anonymize": "admin",
    "payment": "reader or admin",
    "payments": "reader or admin",
    "settle-payment": "admin",
    "replay-event": "reconciler or payments",
}
EPILOG: Final = (
    "exit codes: 0 done; 1 refused (reason on stderr; reconcile: drift remains; post: some postings refused); "
    "2 usage or configuration; 3 ledger or Stripe unavailable (safe to retry); 4 post stopped by a call refused "
    "as a whole; 130 interrupted. Environment: LEDGER_TARGET, LEDGER_TOKEN; for reconcile "
    "and replay-event also STRIPE_API_KEY (STRIPE_API_BASE, CREDIT_PACKAGES, RECONCILER_*)."
)


def _whole_number(maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to `maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected 1 to {maximum}, got {value}")
        return value

    return parse


_positive_int = _whole_number(ledger_commands.ENTRIES_MAX)
_batch_size = _whole_number(BATCH_POSTINGS_MAX)


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the command is not reset by the command's own parser.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    common.add_argument("--timeout-seconds", type=float, default=argparse.SUPPRESS, help="deadline per ledger call")
    return common


def _add_paging(parser: argparse.ArgumentParser, default_limit: int) -> None:
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--limit", type=_positive_int, default=default_limit, help=f"at most N (default {default_limit})"
    )
    amount.add_argument("--all", action="store_true", help=f"everything (at most {ledger_commands.ENTRIES_MAX})")
    parser.add_argument("--page-token", default="", help="continue from where an earlier listing stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Operate the credits suite.", epilog=EPILOG)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--timeout-seconds", type=float, default=DEADLINE_SECONDS_DEFAULT, help="per ledger call (10)")
    common = _common_options()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = commands.add_parser("balance", parents=[common], help="a user's balance")
    command.add_argument("user")
    command = commands.add_parser("history", parents=[common], help="a user's journal, newest first")
    command.add_argument("user")
    _add_paging(command, ledger_commands.HISTORY_LIMIT_DEFAULT)
    command = commands.add_parser("adjust", parents=[common], help="add (or, negative, take away) credits")
    command.add_argument("user")
    command.add_argument("amount", type=int, help="signed credits: 100 adds, -100 takes away")
    command.add_argument("--reason", required=True, help="why (kept in the journal and admin_actions)")
    command.add_argument("--key", help="idempotency key (default: a fresh one, printed so you can retry with it)")
    command.add_argument("--actor", help="who does this (default: creditsctl:<your user name>)")
    command = commands.add_parser("anonymize", parents=[common], help="erase a user's personal data (GDPR)")
    command.add_argument("user")
    command.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    command = commands.add_parser("payment", parents=[common], help="one payment, by id or Stripe id")
    command.add_argument("id", metavar="ID|cs_...|pi_...|ch_...")
    command = commands.add_parser(
        "settle-payment", parents=[common], help="credit a paid, not credited payment by hand (audited)"
    )
    command.add_argument("id", metavar="ID|cs_...|pi_...")
    command.add_argument("--reason", required=True, help="why (kept in admin_actions and the journal)")
    command.add_argument("--actor", help="who decides this (default: creditsctl:<your user name>)")
    command = commands.add_parser("payments", parents=[common], help="a user's payments, newest first")
    command.add_argument("user")
    _add_paging(command, ledger_commands.PAYMENTS_LIMIT_DEFAULT)
    command = commands.add_parser("reconcile", parents=[common], help="compare Stripe with the ledger now, repair")
    window = command.add_mutually_exclusive_group()
    window.add_argument("--since", metavar="ISO", help="charges created since then (UTC if no zone)")
    window.add_argument("--window", metavar="DURATION", help="this far back, e.g. 36h or 3d (+ overlap)")
    command.add_argument("--dry-run", action="store_true", help="report drift, change nothing")
    command.add_argument("--no-events", action="store_true", help="skip the undelivered-events pass")
    command = commands.add_parser("replay-event", parents=[common], help="apply one Stripe event by id, as a webhook")
    command.add_argument("event_id", metavar="EVENT_ID")
    command.add_argument("--dry-run", action="store_true", help="show what the event would do; apply nothing")
    command = commands.add_parser(
        "post",
        parents=[common],
        help="credits and debits from a JSON-lines file, in batches (re-running it is safe)",
        description="Post a file of credits and debits, one JSON object per line: kind (credit|debit), user_id, "
        "amount, idempotency_key, reason[, reference, metadata]. Every line is checked first; one bad line and "
        "nothing is sent. Credits need the role payments or admin, debits spender.",
    )
    command.add_argument("--file", required=True, metavar="PATH", help="the JSON-lines file; - reads stdin")
    command.add_argument(
        "--batch-size",
        type=_batch_size,
        default=BATCH_POSTINGS_MAX,
        help=f"postings per call, 1 to {BATCH_POSTINGS_MAX} (default; fewer when a call would pass 4 MiB)",
    )
    command.add_argument(
        "--atomic", action="store_true", help="each batch (not the whole file) applies entirely or not at all"
    )
    return parser


def _default_actor() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # No login name (a container user without a passwd entry).
        name = "operator"
    return ACTOR_PREFIX + name


def confirm_anonymize(user_id: str, stdin: TextIO, stderr: TextIO) -> bool:
    """Asks on stderr; only the exact user id typed back confirms."""
    stderr.write(
        f"Anonymize {user_id}? Their personal data (payment emails, customer ids, metadata) is erased for good;\n"
        "balances and the journal stay. Type the user id to confirm: "
    )
    stderr.flush()
    answer = stdin.readline()
    return answer.strip() == user_id


async def _ledger_command(args: argparse.Namespace, access: LedgerAccess) -> Output:
    async with access.client() as client:
        if args.command == "balance":
            return await ledger_commands.balance(client, args.user)
        if args.command == "history":
            limit = ledger_commands.ENTRIES_MAX if args.all else args.limit
            return await ledger_commands.history(client, args.user, limit, args.page_token)
        if args.command == "payments":
            limit = ledger_commands.ENTRIES_MAX if args.all else args.limit
            return await ledger_commands.payments(client, args.user, limit, args.page_token)
        if args.command == "payment":
            return await ledger_commands.payment(client, args.id)
        if args.command == "anonymize":
            return await ledger_commands.anonymize(client, args.user)
        if args.command == "settle-payment":
            return await ledger_commands.settle_payment(client, args.id, args.reason, args.actor)
        assert args.command == "adjust", args.command
        try:
            return await ledger_commands.adjust(client, args.user, args.amount, args.reason, args.key, args.actor)
        except errors.Unavailable as exc:
            raise Unavailable(
                f"{_unavailable(access, exc)}; retry with --key {args.key} (applied at most once)"
            ) from exc


def _unavailable(access: LedgerAccess, exc: errors.LedgerError) -> str:
    return f"the ledger at {access.target} is unavailable ({exc.message})"


def _refused(command: str, exc: errors.LedgerError) -> str:
    hint = ""
    if isinstance(exc, errors.Unauthenticated):
        hint = "; check LEDGER_TOKEN"
    elif isinstance(exc, errors.PermissionDenied):
        hint = f"; this command needs a token with the role {ROLE_HINTS.get(command, 'reconciler')}"
    return f"refused by the ledger: {exc.reason}: {exc.message}{hint}"


async def run(args: argparse.Namespace, environ: Mapping[str, str], stdin: TextIO, stderr: TextIO) -> Output:
    """The command, with foreign errors translated into services.cli.errors."""
    access: LedgerAccess | None = None
    try:
        if args.command == "reconcile":
            return await _reconcile(args, environ, stderr)
        if args.command == "replay-event":
            return await _replay_event(args, environ)
        if args.command == "post":
            access = LedgerAccess.from_env(environ, args.timeout_seconds)
            return await post.post(
                access, args.file, stdin.buffer, stderr, batch_size=args.batch_size, atomic=args.atomic
            )
        if not getattr(args, "user", "x").strip():
            raise UsageError("USER: must not be empty")
        access = LedgerAccess.from_env(environ, args.timeout_seconds)
        if args.command == "adjust":
            _prepare_adjust(args, stderr)
        if args.command == "settle-payment":
            args.actor = _checked_reason_and_actor(args)
        if args.command == "anonymize" and not args.yes and not confirm_anonymize(args.user, stdin, stderr):
            raise UsageError("not confirmed (type the user id exactly, or pass --yes); nothing changed")
        return await _ledger_command(args, access)
    except ConfigError as exc:
        raise UsageError(f"configuration error: {exc}") from exc
    except errors.Unavailable as exc:
        where = _unavailable(access, exc) if access is not None else f"the ledger is unavailable ({exc.message})"
        raise Unavailable(f"{where}; retrying is safe") from exc
    except errors.LedgerError as exc:
        raise Refused(_refused(args.command, exc)) from exc


def _checked_reason_and_actor(args: argparse.Namespace) -> str:
    """The actor (the operator's login name by default), once --reason is known to be text the ledger keeps."""
    if not args.reason.strip() or len(args.reason) > REASON_CHARS_MAX:
        raise UsageError(f"--reason: expected 1 to {REASON_CHARS_MAX} characters of text")
    actor: str = args.actor or _default_actor()
    return actor


def _prepare_adjust(args: argparse.Namespace, stderr: TextIO) -> None:
    args.actor = _checked_reason_and_actor(args)
    if args.key is None:
        args.key = f"{KEY_PREFIX}{uuid.uuid4()}"
        # Before the call: if the answer is lost, the operator retries with this key and nothing applies twice.
        stderr.write(f"{PROG}: adjust: idempotency key {args.key} (to retry safely: --key {args.key})\n")
        stderr.flush()


async def _replay_event(args: argparse.Namespace, environ: Mapping[str, str]) -> Output:
    from services.cli import replay  # Stripe's SDK and the gateway's path: only for this command.

    stripe_access = StripeAccess.from_env(environ)
    register_secret(stripe_access.api_key)
    # A dry run only reads Stripe: it works without ledger settings (and while the ledger is down).
    ledger_access = None if args.dry_run else LedgerAccess.from_env(environ, args.timeout_seconds)
    return await replay.replay_event(ledger_access, stripe_access, args.event_id, dry_run=args.dry_run)


async def _reconcile(args: argparse.Namespace, environ: Mapping[str, str], stderr: TextIO) -> Output:
    from services.cli.progress import ProgressBar
    from services.cli.reconcile import reconcile_now
    from services.reconciler import ReconcilerSettings

    settings = ReconcilerSettings.from_env(environ).with_options(
        dry_run=args.dry_run, since=args.since, window=args.window, events_enabled=False if args.no_events else None
    )
    register_secret(settings.stripe_api_key)
    register_secret(settings.ledger_token)
    return await reconcile_now(settings, ProgressBar(stderr))


def _configure_logging(command: str, environ: Mapping[str, str]) -> None:
    level = log_level(environ, "WARNING" if command == "reconcile" else "ERROR")
    configure_logging(PROG, level)
    token = environ.get("LEDGER_TOKEN", "")
    if token:
        register_secret(token)


def emit(output: Output, as_json: bool, stdout: TextIO, stderr: TextIO) -> int:
    text = to_json(output.document) if as_json else "\n".join(output.lines)
    stdout.write(text + "\n")
    stdout.flush()
    if output.complaint is not None:
        stderr.write(f"{PROG}: {output.complaint}\n")
    return output.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # A usage error exits 2 here, as every error of that kind.
    try:
        _configure_logging(args.command, os.environ)
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        output = asyncio.run(run(args, os.environ, sys.stdin, sys.stderr))
    except CliError as exc:
        print(f"{PROG}: {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return emit(output, args.json, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
