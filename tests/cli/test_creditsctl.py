"""creditsctl end to end: a real subprocess, the real ledger over gRPC, the Stripe stand-in over HTTP.

Each command is tested on its success path (table and `--json` shape) and on its refusals, with the
exit codes the CLI promises: 0 done, 1 refused (the reason on stderr, one line), 2 usage or
configuration (nothing sent), 3 unavailable (safe to retry).
"""

from __future__ import annotations

import socket
import uuid

import pytest

from services.ledger.client import LedgerClient
from tests.cli.conftest import Run, cli_environment, creditsctl
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS
from tests.fakes import stripe_events as se
from tests.fakes.stripe_api import RunningFakeStripe

BALANCE_KEYS = {
    "user_id",
    "balance",
    "held",
    "available",
    "status",
    "update_time",
    "debt",
    "next_expire_time",
    "next_expiring_amount",
    "grants",
}
TRANSACTION_KEYS = {
    "id",
    "create_time",
    "kind",
    "delta",
    "balance_after",
    "reason",
    "reference",
    "idempotency_key",
    "payment_id",
    "admin_action_id",
    "hold_id",
}
PAYMENT_KEYS = {
    "id",
    "user_id",
    "status",
    "package_id",
    "credits",
    "amount_minor",
    "currency",
    "amount_refunded_minor",
    "credits_clawed_back",
    "dispute_status",
    "dispute_id",
    "checkout_session_id",
    "payment_intent_id",
    "charge_id",
    "credit_transaction_id",
    "create_time",
    "update_time",
    "credit_time",
    "anonymized",
    "amount_paid_minor",
    "amount_tax_minor",
    "amount_discount_minor",
    "settle_refusal",
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_with(run: Run, reason: str) -> None:
    """Exit 1 and exactly one stderr line naming the ledger's reason."""
    assert run.code == 1, run
    assert len(run.error_lines) == 1, run.stderr
    assert reason in run.error_lines[0], run.stderr
    assert run.stdout == ""


async def adjust(env: dict[str, str], user_id: str, amount: int, *extra: str) -> Run:
    return await creditsctl("--json", "adjust", user_id, str(amount), "--reason", "goodwill", *extra, env=env)


# --- balance, adjust, history ---


async def test_balance_of_a_new_user_is_zero(operator_env: dict[str, str], user_id: str) -> None:
    run = await creditsctl("balance", user_id, env=operator_env)
    assert run.code == 0, run
    assert user_id in run.stdout
    assert run.stdout.splitlines()[1].split() == ["balance", "0"]
    document = (await creditsctl("balance", user_id, "--json", env=operator_env)).json()
    assert set(document) == BALANCE_KEYS
    assert document["user_id"] == user_id
    assert document["balance"] == 0


async def test_adjust_prints_its_key_and_a_retry_with_it_applies_once(
    operator_env: dict[str, str], user_id: str
) -> None:
    first = await adjust(operator_env, user_id, 150, "--actor", "alice")
    assert first.code == 0, first
    document = first.json()
    key = document["idempotency_key"]
    assert key.startswith("creditsctl-")
    assert f"--key {key}" in first.stderr, "the key is printed before the call, to retry with"
    assert document["replayed"] is False
    assert document["actor"] == "alice"
    assert document["admin_action_id"] > 0
    assert set(document["transaction"]) == TRANSACTION_KEYS
    assert document["transaction"]["delta"] == 150
    assert document["transaction"]["kind"] == "admin_adjustment"
    assert document["transaction"]["balance_after"] == 150

    retry = await adjust(operator_env, user_id, 150, "--actor", "alice", "--key", key)
    assert retry.code == 0, retry
    assert retry.json()["replayed"] is True
    assert retry.stderr == "", "a given key is not printed again"
    assert (await creditsctl("--json", "balance", user_id, env=operator_env)).json()["balance"] == 150


async def test_adjust_table_and_default_actor(operator_env: dict[str, str], user_id: str) -> None:
    run = await creditsctl("adjust", user_id, "25", "--reason", "support ticket 7", env=operator_env)
    assert run.code == 0, run
    assert "adjusted by    +25" in run.stdout
    assert "creditsctl:" in run.stdout, "the actor defaults to the operator's login name"


async def test_adjust_refusals(operator_env: dict[str, str], user_id: str) -> None:
    key = f"key-{uuid.uuid4().hex}"
    assert (await adjust(operator_env, user_id, 10, "--key", key)).code == 0
    refused_with(await adjust(operator_env, user_id, 11, "--key", key), "IDEMPOTENCY_KEY_REUSED")
    refused_with(await adjust(operator_env, user_id, -50, "--key", f"key-{uuid.uuid4().hex}"), "INSUFFICIENT_CREDITS")
    refused_with(await adjust(operator_env, user_id, 5, "--key", "payment:1:purchase"), "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "args",
    [
        ["adjust", "u-1", "0", "--reason", "x"],
        ["adjust", "u-1", "10"],
        ["adjust", "u-1", "ten", "--reason", "x"],
        ["adjust", "u-1", "10", "--reason", "   "],
        ["history", "u-1", "--limit", "0"],
        ["history", "u-1", "--limit", "5", "--all"],
        ["payment", "xyz"],
        ["payments", ""],
        ["frobnicate"],
    ],
    ids=[
        "zero",
        "no-reason",
        "not-a-number",
        "blank-reason",
        "limit-0",
        "limit-and-all",
        "bad-id",
        "empty-user",
        "no-command",
    ],
)
async def test_usage_errors_exit_2_and_send_nothing(operator_env: dict[str, str], args: list[str]) -> None:
    run = await creditsctl(*args, env=operator_env)
    assert run.code == 2, run
    assert run.stdout == ""


async def test_history_newest_first_with_limit_all_and_page_token(operator_env: dict[str, str], user_id: str) -> None:
    for amount in (10, 20, 30):
        assert (await adjust(operator_env, user_id, amount)).code == 0
    limited = await creditsctl("--json", "history", user_id, "--limit", "2", env=operator_env)
    assert limited.code == 0, limited
    page = limited.json()
    assert set(page) == {"user_id", "transactions", "next_page_token"}
    assert [entry["delta"] for entry in page["transactions"]] == [30, 20]
    assert page["next_page_token"]
    rest = await creditsctl("history", user_id, "--page-token", page["next_page_token"], "--json", env=operator_env)
    assert [entry["delta"] for entry in rest.json()["transactions"]] == [10]
    assert rest.json()["next_page_token"] is None
    everything = (await creditsctl("--json", "history", user_id, "--all", env=operator_env)).json()
    assert [entry["balance_after"] for entry in everything["transactions"]] == [60, 30, 10]
    table = await creditsctl("history", user_id, "--limit", "2", env=operator_env)
    assert table.stdout.splitlines()[0].split() == ["ID", "TIME", "KIND", "DELTA", "BALANCE", "REASON", "SOURCE"]
    assert "+30" in table.stdout
    assert "--page-token" in table.stdout.splitlines()[-1]


async def test_history_of_a_user_without_entries(operator_env: dict[str, str], user_id: str) -> None:
    run = await creditsctl("history", user_id, env=operator_env)
    assert run.code == 0
    assert run.stdout.strip() == f"no journal entries for {user_id}"


# --- anonymize ---


async def test_anonymize_asks_for_the_user_id(operator_env: dict[str, str], user_id: str) -> None:
    assert (await adjust(operator_env, user_id, 40)).code == 0
    declined = await creditsctl("anonymize", user_id, env=operator_env, stdin="yes\n")
    assert declined.code == 2, declined
    assert "not confirmed" in declined.error_lines[-1]
    assert "Type the user id to confirm" in declined.stderr
    assert (await creditsctl("--json", "balance", user_id, env=operator_env)).json()["status"] == "active"

    confirmed = await creditsctl("anonymize", user_id, "--json", env=operator_env, stdin=f"{user_id}\n")
    assert confirmed.code == 0, confirmed
    document = confirmed.json()
    assert set(document) == {
        "user_id",
        "already_anonymized",
        "payments_scrubbed_count",
        "metadata_erased_count",
        "balance",
    }
    assert document["already_anonymized"] is False
    assert document["balance"] == 40

    again = await creditsctl("anonymize", user_id, "--yes", "--json", env=operator_env)
    assert again.json()["already_anonymized"] is True
    assert (await creditsctl("--json", "balance", user_id, env=operator_env)).json()["status"] == "anonymized"
    refused_with(await adjust(operator_env, user_id, 5, "--key", f"k-{uuid.uuid4().hex}"), "ACCOUNT_ANONYMIZED")


# --- configuration, authentication, availability ---


async def test_missing_settings_exit_2_naming_the_variable(ledger_target: str) -> None:
    run = await creditsctl("balance", "u-1", env=cli_environment(LEDGER_TOKEN=ALL_ROLES_TOKEN))
    assert run.code == 2
    assert run.error_lines == [
        "creditsctl: balance: configuration error: LEDGER_TARGET: not set; "
        "expected the ledger's host:port (for example ledger:50051)"
    ]
    short = await creditsctl("balance", "u-1", env=cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN="short"))
    assert short.code == 2
    assert "LEDGER_TOKEN" in short.stderr
    assert "short" not in short.stderr.replace("LEDGER_TOKEN", ""), "a token is never echoed"


async def test_unknown_token_and_missing_role_are_refusals(ledger_target: str, user_id: str) -> None:
    unknown = cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN="not-a-token-of-any-caller")
    refused_with(await creditsctl("balance", user_id, env=unknown), "UNAUTHENTICATED")
    assert "check LEDGER_TOKEN" in (await creditsctl("balance", user_id, env=unknown)).stderr
    reader = cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN=ROLE_TOKENS["reader"])
    assert (await creditsctl("balance", user_id, env=reader)).code == 0
    run = await adjust(reader, user_id, 5, "--key", f"k-{uuid.uuid4().hex}")
    refused_with(run, "PERMISSION_DENIED")
    assert "role admin" in run.stderr


async def test_unreachable_ledger_exits_3() -> None:
    env = cli_environment(LEDGER_TARGET=f"127.0.0.1:{closed_port()}", LEDGER_TOKEN=ALL_ROLES_TOKEN)
    run = await creditsctl("balance", "u-1", env=env)
    assert run.code == 3, run
    assert len(run.error_lines) == 1
    assert "unavailable" in run.error_lines[0]
    adjusted = await creditsctl("adjust", "u-1", "5", "--reason", "x", "--key", "my-key-1", env=env)
    assert adjusted.code == 3
    assert "retry with --key my-key-1" in adjusted.error_lines[-1]


async def test_json_may_come_before_or_after_the_command(operator_env: dict[str, str], user_id: str) -> None:
    before = await creditsctl("--json", "balance", user_id, env=operator_env)
    after = await creditsctl("balance", user_id, "--json", env=operator_env)
    assert before.json() == after.json()


# --- payments and replay-event (the fake Stripe) ---


def stripe_env(base: dict[str, str], fake: RunningFakeStripe, **extra: str) -> dict[str, str]:
    return {**base, "STRIPE_API_KEY": fake.api_key, "STRIPE_API_BASE": fake.base_url, **extra}


def purchase_event(fake: RunningFakeStripe, user_id: str, amount_minor: int = 500) -> dict[str, object]:
    event = se.checkout_session_completed(user_id, "small", amount_minor, "eur", customer_email="jane@example.com")
    return fake.state.add_event(event)


async def test_replay_event_applies_once_then_answers_duplicate(
    operator_env: dict[str, str], fake_stripe: RunningFakeStripe, user_id: str
) -> None:
    event = purchase_event(fake_stripe, user_id)
    env = stripe_env(operator_env, fake_stripe, LEDGER_TOKEN=ROLE_TOKENS["payments"])
    first = await creditsctl("replay-event", str(event["id"]), "--json", env=env)
    assert first.code == 0, first
    document = first.json()
    assert set(document) == {
        "event_id",
        "event_type",
        "event_create_time",
        "dry_run",
        "action",
        "outcome",
        "code",
        "credits_delta",
    }
    assert document["event_type"] == "checkout.session.completed"
    assert document["outcome"] == "applied"
    assert document["credits_delta"] == 100
    assert document["action"]["name"] == "settle"
    assert document["action"]["user_id"] == user_id
    assert "jane" not in first.stdout, "no personal data in the output"

    second = await creditsctl("replay-event", str(event["id"]), env=env)
    assert second.code == 0, second
    assert "duplicate" in second.stdout
    assert (await creditsctl("--json", "balance", user_id, env=operator_env)).json()["balance"] == 100


async def test_payment_lookup_by_every_id_and_payments_of_a_user(
    operator_env: dict[str, str], fake_stripe: RunningFakeStripe, user_id: str
) -> None:
    event = purchase_event(fake_stripe, user_id)
    env = stripe_env(operator_env, fake_stripe)
    assert (await creditsctl("replay-event", str(event["id"]), env=env)).code == 0
    listed = await creditsctl("--json", "payments", user_id, env=operator_env)
    assert listed.code == 0, listed
    (payment,) = listed.json()["payments"]
    assert set(payment) == PAYMENT_KEYS
    assert payment["status"] == "credited"
    assert (payment["credits"], payment["amount_minor"], payment["currency"]) == (100, 500, "eur")
    for identifier in (str(payment["id"]), payment["checkout_session_id"], payment["payment_intent_id"]):
        found = await creditsctl("--json", "payment", identifier, env=operator_env)
        assert found.code == 0, found
        assert found.json() == payment
    table = await creditsctl("payment", payment["payment_intent_id"], env=operator_env)
    assert "small: 100 credits for 5.00 EUR" in table.stdout
    assert "jane" not in table.stdout
    rows = await creditsctl("payments", user_id, env=operator_env)
    assert rows.stdout.splitlines()[0].split()[:4] == ["ID", "CREATED", "STATUS", "PACKAGE"]
    assert "5.00 EUR" in rows.stdout
    refused_with(await creditsctl("payment", "pi_doesnotexist", env=operator_env), "NOT_FOUND")


async def test_replay_event_dry_run_changes_nothing(
    operator_env: dict[str, str], fake_stripe: RunningFakeStripe, user_id: str
) -> None:
    event = purchase_event(fake_stripe, user_id)
    stripe_only = stripe_env(cli_environment(), fake_stripe)  # a dry run reads Stripe only: no ledger settings
    run = await creditsctl("replay-event", str(event["id"]), "--dry-run", "--json", env=stripe_only)
    assert run.code == 0, run
    assert run.json()["dry_run"] is True
    assert run.json()["outcome"] is None
    assert run.json()["action"]["credits"] == 100
    assert (await creditsctl("--json", "balance", user_id, env=operator_env)).json()["balance"] == 0


async def test_replay_event_refused_by_the_catalog_exits_1(
    operator_env: dict[str, str], fake_stripe: RunningFakeStripe, user_id: str
) -> None:
    event = purchase_event(fake_stripe, user_id, amount_minor=1)
    run = await creditsctl("replay-event", str(event["id"]), "--json", env=stripe_env(operator_env, fake_stripe))
    assert run.code == 1, run
    assert run.json()["outcome"] == "refused"
    assert run.json()["code"] == "catalog_mismatch"
    assert "catalog_mismatch" in run.error_lines[-1]
    assert (await creditsctl("--json", "balance", user_id, env=operator_env)).json()["balance"] == 0


async def test_replay_event_failures(
    operator_env: dict[str, str], fake_stripe: RunningFakeStripe, user_id: str
) -> None:
    env = stripe_env(operator_env, fake_stripe)
    missing = await creditsctl("replay-event", "evt_doesnotexist", env=env)
    assert missing.code == 1, missing
    assert "Stripe has no event evt_doesnotexist" in missing.error_lines[-1]
    assert (await creditsctl("replay-event", "ch_notanevent", env=env)).code == 2
    no_key = {key: value for key, value in env.items() if key != "STRIPE_API_KEY"}
    run = await creditsctl("replay-event", "evt_x", env=no_key)
    assert run.code == 2
    assert "STRIPE_API_KEY" in run.stderr
    down = stripe_env(operator_env, fake_stripe, STRIPE_API_BASE=f"http://127.0.0.1:{closed_port()}")
    assert (await creditsctl("replay-event", "evt_x", env=down)).code == 3
    event = purchase_event(fake_stripe, user_id)
    reader = stripe_env(operator_env, fake_stripe, LEDGER_TOKEN=ROLE_TOKENS["reader"])
    refused_with(await creditsctl("replay-event", str(event["id"]), env=reader), "PERMISSION_DENIED")


# --- reconcile (a ledger of its own, a fake Stripe account of its own) ---


async def test_reconcile_repairs_a_missing_credit_with_a_progress_bar(
    fresh_ledger_target: str, fake_stripe: RunningFakeStripe, user_id: str
) -> None:
    fake_stripe.state.add_charge(
        amount_minor=500, metadata=se.purchase_metadata(user_id, "small"), payment_intent_id=se.new_id("pi_")
    )
    env = stripe_env(cli_environment(LEDGER_TARGET=fresh_ledger_target), fake_stripe, LEDGER_TOKEN=ALL_ROLES_TOKEN)

    dry = await creditsctl("reconcile", "--dry-run", "--window", "1d", "--json", env=env)
    assert dry.code == 1, dry  # drift found, nothing repaired
    assert dry.json()["summary"]["dry_run"] is True
    assert [item["action"] for item in dry.json()["drift"]] == ["would_repair"]
    assert "remain for an operator" in dry.error_lines[-1]

    run = await creditsctl("reconcile", "--window", "1d", "--json", env=env)
    assert run.code == 0, run
    document = run.json()
    assert set(document) == {"summary", "drift", "drift_items_omitted"}
    assert document["summary"]["completed"] is True
    assert document["summary"]["drift_repaired"] == {"missing_credit": 1}
    (item,) = document["drift"]
    assert (item["kind"], item["action"], item["user_id"], item["credits_delta"]) == (
        "missing_credit",
        "repaired",
        user_id,
        100,
    )
    bars = [line for line in run.stderr.splitlines() if line.startswith("charges")]
    assert bars and "[########################] 100%" in bars[-1], run.stderr
    assert "1 charges" in bars[-1]
    assert "drift 1 (1 repaired)" in bars[-1]

    reader_env = cli_environment(LEDGER_TARGET=fresh_ledger_target, LEDGER_TOKEN=ALL_ROLES_TOKEN)
    assert (await creditsctl("--json", "balance", user_id, env=reader_env)).json()["balance"] == 100
    again = await creditsctl("reconcile", "--window", "1d", env=env)
    assert again.code == 0, again
    assert "0 found" in again.stdout


async def test_reconcile_refusals(fake_stripe: RunningFakeStripe) -> None:
    down = stripe_env(
        cli_environment(LEDGER_TARGET=f"127.0.0.1:{closed_port()}"), fake_stripe, LEDGER_TOKEN=ALL_ROLES_TOKEN
    )
    run = await creditsctl("reconcile", "--window", "1h", "--no-events", env=down)
    assert run.code == 3, run
    assert "could not finish" in run.error_lines[-1]
    assert (await creditsctl("reconcile", "--window", "soon", env=down)).code == 2
    assert (await creditsctl("reconcile", "--window", "1h", "--since", "2020-01-01", env=down)).code == 2


async def test_a_ledger_client_sees_what_the_cli_wrote(ledger: LedgerClient, operator_env: dict[str, str]) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    assert (await adjust(operator_env, user_id, 7)).code == 0
    assert (await ledger.get_balance(user_id)).balance == 7
