"""The commands that talk only to the ledger: balance, history, adjust, anonymize, payment, payments,
settle-payment.

Each takes a LedgerClient and plain arguments and returns an Output; ledger refusals propagate as
services.ledger.errors.LedgerError (services.cli.__main__ turns them into exit codes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.cli.errors import UsageError
from services.cli.render import Output, enum_name, fields, money, signed, table, timestamp
from services.ledger.accounts.validation import PAGE_SIZE_MAX as TRANSACTIONS_PAGE_SIZE_MAX
from services.ledger.client import LedgerClient
from services.ledger.payments.validation import PAYMENTS_PAGE_SIZE_MAX

HISTORY_LIMIT_DEFAULT: Final = 20
PAYMENTS_LIMIT_DEFAULT: Final = 50
ENTRIES_MAX: Final = 100_000  # `--all` stops here and prints the page token to continue from.
GRANT_COLUMNS: Final = ("GRANT", "CATEGORY", "PRIORITY", "REMAINING/AMOUNT", "RESERVED", "EXPIRES")
PAYMENT_ID_PREFIXES: Final = {"cs_": "checkout_session_id", "pi_": "payment_intent_id", "ch_": "charge_id"}

Item = TypeVar("Item")
PageFetcher = Callable[[int, str], Awaitable[tuple[Sequence[Item], str]]]


async def collect_pages(
    fetch: PageFetcher[Item], limit: int, page_size_max: int, page_token: str
) -> tuple[list[Item], str]:
    """Up to `limit` items, page after page from `page_token`; also the token to continue from ('' at the end)."""
    assert 1 <= limit <= ENTRIES_MAX, limit
    items: list[Item] = []
    token = page_token
    for _ in range(limit):  # Every page but the last adds at least one item: at most `limit` pages.
        page, token = await fetch(min(page_size_max, limit - len(items)), token)
        items.extend(page)
        if not token or not page or len(items) >= limit:
            break
    return items, token


# --- balance and history ---


async def balance(client: LedgerClient, user_id: str) -> Output:
    response = await client.get_balance(user_id)
    grants = [grant_document(grant) for grant in response.grants]
    document = {
        "user_id": response.user_id or user_id,
        "balance": response.balance,
        "held": response.held,
        "available": response.available,
        "status": enum_name(pb.AccountStatus.Name(response.status), "ACCOUNT_STATUS_"),
        "update_time": timestamp(response.update_time),
        "debt": response.debt,
        "next_expire_time": timestamp(response.next_expire_time),
        "next_expiring_amount": response.next_expiring_amount,
        "grants": grants,
    }
    lines = fields(
        [
            ("user", document["user_id"]),
            ("balance", response.balance),
            ("held", response.held),
            ("available", response.available),
            ("status", document["status"]),
            ("updated", document["update_time"]),
            ("debt", response.debt),
            ("next expiry", _next_expiry(document)),
        ]
    )
    return Output(document, lines + _grants_table(grants))


def grant_document(grant: pb.Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "category": enum_name(_enum_value_name(pb.GrantCategory, grant.category), "GRANT_CATEGORY_"),
        "priority": grant.priority,
        "amount": grant.amount,
        "remaining": grant.remaining,
        "reserved": grant.reserved,
        "expire_time": timestamp(grant.expire_time),
        "create_time": timestamp(grant.create_time),
        "transaction_id": grant.transaction_id,
        "payment_id": grant.payment_id or None,
    }


def _enum_value_name(enum: Any, value: int) -> str:
    """The value's name; a value newer than this build shows as its number rather than failing the command."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


def _next_expiry(document: dict[str, Any]) -> str | None:
    if document["next_expire_time"] is None:
        return None
    return f"{document['next_expiring_amount']} credits at {document['next_expire_time']}"


def _grants_table(grants: Sequence[dict[str, Any]]) -> list[str]:
    if not grants:
        return ["", "no grants with credits left"]
    rows = [
        (
            grant["id"],
            grant["category"],
            grant["priority"],
            f"{grant['remaining']}/{grant['amount']}",
            grant["reserved"],
            grant["expire_time"] or "never",
        )
        for grant in grants
    ]
    return ["", *table(GRANT_COLUMNS, rows, right=(0, 2, 3, 4))]


def transaction_document(entry: pb.Transaction) -> dict[str, Any]:
    return {
        "id": entry.id,
        "create_time": timestamp(entry.create_time),
        "kind": enum_name(pb.TransactionKind.Name(entry.kind), "TRANSACTION_KIND_"),
        "delta": entry.delta,
        "balance_after": entry.balance_after,
        "reason": entry.reason,
        "reference": entry.reference or None,
        "idempotency_key": entry.idempotency_key,
        "payment_id": entry.payment_id or None,
        "admin_action_id": entry.admin_action_id or None,
        "hold_id": entry.hold_id or None,
    }


def _source(entry: dict[str, Any]) -> str | None:
    for name, label in (("payment_id", "payment"), ("admin_action_id", "admin action"), ("hold_id", "hold")):
        if entry[name]:
            return f"{label} {entry[name]}"
    return entry["reference"]


async def history(client: LedgerClient, user_id: str, limit: int, page_token: str = "") -> Output:
    async def fetch(page_size: int, token: str) -> tuple[Sequence[pb.Transaction], str]:
        response = await client.list_transactions(user_id, page_size=page_size, page_token=token)
        return response.transactions, response.next_page_token

    entries, next_token = await collect_pages(fetch, limit, TRANSACTIONS_PAGE_SIZE_MAX, page_token)
    documents = [transaction_document(entry) for entry in entries]
    document = {"user_id": user_id, "transactions": documents, "next_page_token": next_token or None}
    rows = [
        (e["id"], e["create_time"], e["kind"], signed(e["delta"]), e["balance_after"], e["reason"], _source(e))
        for e in documents
    ]
    lines = table(["ID", "TIME", "KIND", "DELTA", "BALANCE", "REASON", "SOURCE"], rows, right=(0, 3, 4))
    if not documents:
        lines = [f"no journal entries for {user_id}"]
    if next_token:
        lines.append(f"(more: --all, a larger --limit, or --page-token {next_token})")
    return Output(document, lines)


# --- admin actions ---


async def adjust(client: LedgerClient, user_id: str, amount: int, reason: str, key: str, actor: str) -> Output:
    if amount == 0:
        raise UsageError("adjust: AMOUNT must not be 0 (credits, signed: 100 adds, -100 takes away)")
    response = await client.admin_adjust(user_id, amount, key, actor, reason)
    entry = transaction_document(response.transaction)
    document = {
        "user_id": user_id,
        "idempotency_key": key,
        "actor": actor,
        "replayed": response.replayed,
        "admin_action_id": response.admin_action_id or None,
        "transaction": entry,
    }
    replayed = "yes: applied earlier with this key; nothing changed now" if response.replayed else "no"
    lines = fields(
        [
            ("user", user_id),
            ("adjusted by", signed(entry["delta"])),
            ("balance after", entry["balance_after"]),
            ("journal entry", f"{entry['id']} at {entry['create_time']}"),
            ("admin action", document["admin_action_id"]),
            ("actor", actor),
            ("key", key),
            ("replayed", replayed),
        ]
    )
    return Output(document, lines)


async def anonymize(client: LedgerClient, user_id: str) -> Output:
    response = await client.anonymize(user_id)
    document = {
        "user_id": response.user_id or user_id,
        "already_anonymized": response.already_anonymized,
        "payments_scrubbed_count": response.payments_scrubbed_count,
        "metadata_erased_count": response.metadata_erased_count,
        "balance": response.balance,
    }
    lines = fields(
        [
            ("user", document["user_id"]),
            ("anonymized", "already, earlier (nothing changed now)" if response.already_anonymized else "now"),
            ("payments scrubbed", response.payments_scrubbed_count),
            ("metadata erased", response.metadata_erased_count),
            ("balance (kept)", response.balance),
        ]
    )
    return Output(document, lines)


# --- payments ---


def payment_lookup(identifier: str) -> dict[str, Any]:
    """GetPayment's arguments for a payment id (digits) or a Stripe id (cs_..., pi_..., ch_...)."""
    text = identifier.strip()
    if text.isascii() and text.isdigit() and int(text) > 0:
        return {"payment_id": int(text)}
    for prefix, name in PAYMENT_ID_PREFIXES.items():
        if text.startswith(prefix) and len(text) > len(prefix):
            return {name: text}
    raise UsageError(f"payment: expected a payment id (digits), cs_..., pi_... or ch_..., got {identifier[:60]!r}")


def payment_document(payment: pb.Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "user_id": payment.user_id,
        "status": enum_name(pb.PaymentStatus.Name(payment.status), "PAYMENT_STATUS_"),
        "package_id": payment.package_id,
        "credits": payment.credits,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency_code,
        "amount_refunded_minor": payment.amount_refunded_minor,
        "credits_clawed_back": payment.credits_clawed_back,
        "dispute_status": enum_name(pb.DisputeStatus.Name(payment.dispute_status), "DISPUTE_STATUS_"),
        "dispute_id": payment.dispute_id or None,
        "checkout_session_id": payment.checkout_session_id or None,
        "payment_intent_id": payment.payment_intent_id or None,
        "charge_id": payment.charge_id or None,
        "credit_transaction_id": payment.credit_transaction_id or None,
        "create_time": timestamp(payment.create_time),
        "update_time": timestamp(payment.update_time),
        "credit_time": timestamp(payment.credit_time),
        "anonymized": payment.anonymized,
        "amount_paid_minor": _optional(payment, "amount_paid_minor"),
        "amount_tax_minor": _optional(payment, "amount_tax_minor"),
        "amount_discount_minor": _optional(payment, "amount_discount_minor"),
        "settle_refusal": payment.settle_refusal or None,
    }


def _optional(payment: pb.Payment, name: str) -> int | None:
    value: int = getattr(payment, name)
    return value if payment.HasField(name) else None


def _paid_line(document: dict[str, Any]) -> str | None:
    """What the customer actually paid, tax and discount apart (None until a settlement told it)."""
    if document["amount_paid_minor"] is None:
        return None
    currency = document["currency"]
    parts = [
        f"{name} {money(document[key], currency)}"
        for name, key in (("tax", "amount_tax_minor"), ("discount", "amount_discount_minor"))
        if document[key]
    ]
    paid = money(document["amount_paid_minor"], currency)
    return f"{paid} ({', '.join(parts)})" if parts else paid


def _not_credited_line(document: dict[str, Any]) -> str | None:
    if document["settle_refusal"] is None or document["credit_transaction_id"] is not None:
        return None
    return f"paid, not credited ({document['settle_refusal']}): refund it in Stripe"


async def payment(client: LedgerClient, identifier: str) -> Output:
    response = await client.get_payment(**payment_lookup(identifier))
    document = payment_document(response.payment)
    amount = money(document["amount_minor"], document["currency"])
    refunded = money(document["amount_refunded_minor"], document["currency"])
    lines = fields(
        [
            ("payment", document["id"]),
            ("user", document["user_id"]),
            ("status", document["status"]),
            ("package", f"{document['package_id']}: {document['credits']} credits for {amount}"),
            ("paid", _paid_line(document)),
            ("not credited", _not_credited_line(document)),
            ("refunded", f"{refunded} ({document['credits_clawed_back']} credits clawed back)"),
            ("dispute", f"{document['dispute_status']} ({document['dispute_id']})" if document["dispute_id"] else None),
            ("checkout session", document["checkout_session_id"]),
            ("payment intent", document["payment_intent_id"]),
            ("charge", document["charge_id"]),
            ("credit entry", document["credit_transaction_id"]),
            ("created", document["create_time"]),
            ("credited", document["credit_time"]),
            ("updated", document["update_time"]),
            ("anonymized", "yes" if document["anonymized"] else "no"),
        ]
    )
    return Output(document, lines)


async def settle_payment(client: LedgerClient, identifier: str, reason: str, actor: str) -> Output:
    """Credit a paid, uncredited payment by hand (SettlePaymentManually: the entry and admin_actions together)."""
    lookup = payment_lookup(identifier)
    payment_id = lookup.get("payment_id")
    if payment_id is None:
        payment_id = (await client.get_payment(**lookup)).payment.id
    response = await client.settle_payment_manually(payment_id, actor, reason)
    entry = transaction_document(response.transaction)
    settled = payment_document(response.payment)
    document = {
        "payment": settled,
        "actor": actor,
        "replayed": response.replayed,
        "admin_action_id": response.admin_action_id or None,
        "transaction": entry,
    }
    replayed = "yes: credited earlier; nothing changed now" if response.replayed else "no"
    lines = fields(
        [
            ("payment", payment_id),
            ("user", settled["user_id"]),
            ("status", settled["status"]),
            ("credited", signed(entry["delta"])),
            ("balance after", entry["balance_after"]),
            ("journal entry", f"{entry['id']} at {entry['create_time']}"),
            ("admin action", document["admin_action_id"]),
            ("actor", actor),
            ("replayed", replayed),
        ]
    )
    return Output(document, lines)


async def payments(client: LedgerClient, user_id: str, limit: int, page_token: str = "") -> Output:
    async def fetch(page_size: int, token: str) -> tuple[Sequence[pb.Payment], str]:
        response = await client.list_payments(user_id=user_id, page_size=page_size, page_token=token)
        return response.payments, response.next_page_token

    found, next_token = await collect_pages(fetch, limit, PAYMENTS_PAGE_SIZE_MAX, page_token)
    documents = [payment_document(item) for item in found]
    document = {"user_id": user_id, "payments": documents, "next_page_token": next_token or None}
    rows = [
        (
            p["id"],
            p["create_time"],
            p["status"],
            p["package_id"],
            p["credits"],
            money(p["amount_minor"], p["currency"]),
            money(p["amount_refunded_minor"], p["currency"]) if p["amount_refunded_minor"] else None,
            p["dispute_status"],
            p["payment_intent_id"] or p["checkout_session_id"],
        )
        for p in documents
    ]
    headers = ["ID", "CREATED", "STATUS", "PACKAGE", "CREDITS", "AMOUNT", "REFUNDED", "DISPUTE", "STRIPE ID"]
    lines = table(headers, rows, right=(0, 4, 5, 6)) if documents else [f"no payments for {user_id}"]
    if next_token:
        lines.append(f"(more: --all, a larger --limit, or --page-token {next_token})")
    return Output(document, lines)
