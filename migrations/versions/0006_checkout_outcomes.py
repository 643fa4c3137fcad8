"""Checkout outcomes: what a purchase really paid, expired sessions, refused purchases, settlement by hand.

- `payments` records what the customer actually paid (`amount_paid_minor`: the session's amount_total,
  after discounts and with tax), the tax in it and the discount taken off the price, in the payment's
  currency; the price itself (`amount_minor`) stays the catalog's, which the session's amount_subtotal
  matched. NULL until a settlement tells them.
- `payment_status` gains `EXPIRED`: a Checkout Session that expired unpaid (checkout.session.expired)
  ends its INIT payment there. EXPIRED is not paid, like FAILED: a later proof of payment (a late
  checkout.session.completed, in whatever order Stripe delivers) still settles and credits it.
- A settle for an anonymized account keeps the payment PAID and uncredited as before, but is now an
  answer of its own: outcome `purchase_account_anonymized` (PURCHASE_ON_ANONYMIZED_ACCOUNT), the event
  recorded `refused` in the same transaction, and `payments.settle_refusal = 'account_anonymized'` so
  the reconciler and operators list it as paid, not credited (refund it).
- `ledger_payment_settle_manually`: an operator credits a paid, uncredited payment by hand; the purchase
  entry and its admin_actions row (actor, reason) are written in one transaction.

The enum value is added in this migration's transaction, where PostgreSQL refuses to *use* it: the plpgsql
functions below only assign or compare 'EXPIRED' when they run.

This revision replaces no shared helper of 0002 (payment_save, payment_is_paid, payment_status_after,
payment_apply): the new columns are written by payment_record_paid, and EXPIRED is read where it matters
(ledger_payment_settle and ledger_payment_settle_manually turn it into paid), so a revision that changes
those helpers (the refund lifecycle) keeps its version. The refund and dispute paths never meet an EXPIRED
payment: an expired session has no charge; if one ever did, a charge proves payment, and payment_apply
reads it as PAID.

Revision ID: 0006_checkout_outcomes
Revises: 0005_refunds
Create Date: 2026-12-06
"""

import importlib.util
import re
from pathlib import Path
from typing import Any

from alembic import op

revision = "0006_checkout_outcomes"
down_revision = "0005_refunds"
branch_labels = None
depends_on = None

SCHEMA_SQL = r"""
ALTER TYPE payment_status ADD VALUE IF NOT EXISTS 'EXPIRED';
ALTER TABLE payments
    ADD COLUMN amount_paid_minor     bigint CHECK (amount_paid_minor >= 0),
    ADD COLUMN amount_tax_minor      bigint CHECK (amount_tax_minor >= 0),
    ADD COLUMN amount_discount_minor bigint CHECK (amount_discount_minor >= 0),
    ADD COLUMN settle_refusal        text   CHECK (length(settle_refusal) BETWEEN 1 AND 64);
"""

HELPERS_SQL = r"""
-- Records what was paid (the first value told wins: every source agrees on it) and why a paid payment was
-- left uncredited (NULL once credited). One UPDATE, only when something changes; returns the row as stored.
CREATE FUNCTION payment_record_paid(
    p payments, p_amount_paid_minor bigint, p_amount_tax_minor bigint, p_amount_discount_minor bigint,
    p_settle_refusal text
) RETURNS payments LANGUAGE plpgsql AS $$
DECLARE
    v_saved payments;
BEGIN
    IF (p.amount_paid_minor, p.amount_tax_minor, p.amount_discount_minor, p.settle_refusal)
       IS NOT DISTINCT FROM (COALESCE(p.amount_paid_minor, p_amount_paid_minor),
                             COALESCE(p.amount_tax_minor, p_amount_tax_minor),
                             COALESCE(p.amount_discount_minor, p_amount_discount_minor), p_settle_refusal) THEN
        RETURN p;
    END IF;
    UPDATE payments t SET
        amount_paid_minor     = COALESCE(t.amount_paid_minor, p_amount_paid_minor),
        amount_tax_minor      = COALESCE(t.amount_tax_minor, p_amount_tax_minor),
        amount_discount_minor = COALESCE(t.amount_discount_minor, p_amount_discount_minor),
        settle_refusal        = p_settle_refusal,
        updated_at            = clock_timestamp()
     WHERE t.user_id = p.user_id AND t.id = p.id
    RETURNING t.* INTO STRICT v_saved;
    RETURN v_saved;
END
$$;
"""

# 0002's ledger_payment_settle with three more arguments (what was paid) and the anonymized-account refusal.
SETTLE_SQL = r"""
DROP FUNCTION ledger_payment_settle(text, text, text, text, text, bigint, bigint, text, text, text, text, text,
                                    bytea);

-- Settle: INIT, FAILED or EXPIRED -> paid, with the purchase entry when the account is active. Refunds and
-- disputes recorded before the settle are applied right after the purchase entry. A later settle of the same
-- payment credits nothing. What was paid (amount_total, tax, discount) is kept from the first settle that
-- tells it. A settle after FAILED or EXPIRED credits: a settle is proof that Stripe holds the money (see 0002).
--
-- An anonymized account takes no purchase credit: the payment is stored PAID, uncredited, with
-- settle_refusal 'account_anonymized'; the event is recorded 'refused' in this transaction and the answer is
-- 'purchase_account_anonymized', so the caller reports a refusal (the customer paid: refund them).
CREATE FUNCTION ledger_payment_settle(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text,
    p_event_id text, p_event_type text, p_payload_sha256 bytea,
    p_amount_paid_minor bigint, p_amount_tax_minor bigint, p_amount_discount_minor bigint
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
    v_entry    credit_transactions;
    v_credited boolean := false;
BEGIN
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        RETURN payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, p_intent_id);
    END IF;
    r := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor,
                       p_currency_code, p_customer_email, p_customer_id, v_account.status = 'active');
    IF r.outcome = 'conflict' THEN
        RETURN r;
    END IF;
    v_payment := r.payment;
    IF r.outcome = 'missing' THEN
        v_payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                    v_account.status = 'active', 'INIT');
    END IF;
    IF v_payment.status = 'EXPIRED' THEN
        v_payment.status := 'INIT';  -- A late proof of payment: the expired session was paid after all.
    END IF;
    IF NOT payment_is_paid(v_payment) THEN
        v_payment.status := 'PAID';
        IF v_account.status = 'active' THEN
            v_entry := payment_journal(p_user_id, v_payment.id, v_payment.credits, 'purchase',
                                       format('payment:%s:purchase', v_payment.id),
                                       format('purchase of package %s', v_payment.package_id));
            v_payment.credit_transaction_id := v_entry.id;
            v_payment.credited_at := v_entry.created_at;
            v_credited := true;
        END IF;
    END IF;
    r := payment_apply(v_payment);
    v_payment := payment_record_paid(
        r.payment, p_amount_paid_minor, p_amount_tax_minor, p_amount_discount_minor,
        CASE WHEN (r.payment).credit_transaction_id IS NULL THEN 'account_anonymized' END);
    r.payment := v_payment;
    IF v_payment.credit_transaction_id IS NULL THEN
        IF p_event_id IS NOT NULL THEN
            INSERT INTO processed_events (event_id, event_type, outcome, payload_sha256, user_id, payment_id,
                                          payment_intent_id, detail)
            VALUES (p_event_id, p_event_type, 'refused', p_payload_sha256, p_user_id, v_payment.id,
                    v_payment.payment_intent_id,
                    format('account_anonymized: payment %s paid, not credited (the account was anonymized); refund it',
                           v_payment.id))
            ON CONFLICT (event_id) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'event % was recorded concurrently', p_event_id USING ERRCODE = 'serialization_failure';
            END IF;
        END IF;
        r.outcome := 'purchase_account_anonymized';
        r.detail := v_payment.id::text;
        r.credited := false;
        r.credits_moved := 0;
        RETURN r;
    END IF;
    IF NOT v_credited THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_payment.credit_transaction_id;
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.entry := v_entry;
    r.credited := v_credited;
    r.credits_moved := CASE WHEN v_credited THEN v_payment.credits ELSE 0 END;
    RETURN r;
END
$$;
"""

EXPIRE_SQL = r"""
-- Expire: the Checkout Session expired unpaid. Its INIT payment -> EXPIRED; any other status is left as it
-- is (a paid one stays paid whatever the order of events), and a session the ledger never opened changes
-- nothing (no row is made for it: an expired session moved no money). The event is recorded either way.
CREATE FUNCTION ledger_payment_expire(
    p_user_id text, p_session_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
BEGIN
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        RETURN payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, NULL);
    END IF;
    SELECT * INTO v_payment FROM payments t
     WHERE t.user_id = p_user_id AND t.checkout_session_id = p_session_id FOR UPDATE;
    IF v_payment.id IS NOT NULL AND v_payment.status = 'INIT' THEN
        v_payment.status := 'EXPIRED';
        v_payment := payment_save(v_payment);
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.payment := CASE WHEN v_payment.id IS NOT NULL THEN v_payment END;
    r.outcome := 'applied';
    RETURN r;
END
$$;

-- Settle by hand: an operator credits a payment the ledger holds as not credited (INIT, FAILED, EXPIRED, or
-- PAID on an account that was anonymized since: refused). The purchase entry (the same key as an event's
-- settle, so the two can never both credit) and its admin_actions row are written together. A payment
-- credited already answers replayed with its entry. credits_moved answers the admin_actions id.
CREATE FUNCTION ledger_payment_settle_manually(p_payment_id bigint, p_actor text, p_reason text)
RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r           payment_result;
    v_user_id   text;
    v_account   accounts;
    v_payment   payments;
    v_entry     credit_transactions;
    v_admin_id  bigint;
    v_balance   bigint;
    v_reason    text;
BEGIN
    SELECT t.user_id INTO v_user_id FROM payments t WHERE t.id = p_payment_id ORDER BY t.user_id LIMIT 1;
    IF v_user_id IS NULL THEN
        r.outcome := 'not_found';
        r.detail := format('no payment %s', p_payment_id);
        RETURN r;
    END IF;
    v_account := payment_lock_account(v_user_id);
    SELECT * INTO v_payment FROM payments t WHERE t.user_id = v_user_id AND t.id = p_payment_id FOR UPDATE;
    IF v_payment.id IS NULL THEN  -- merged into another row between the two reads
        r.outcome := 'not_found';
        r.detail := format('payment %s was merged into another payment of its user', p_payment_id);
        RETURN r;
    END IF;
    IF v_payment.credit_transaction_id IS NOT NULL THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = v_user_id AND t.id = v_payment.credit_transaction_id;
        r.outcome := 'applied';
        r.payment := v_payment;
        r.entry := v_entry;
        r.replayed := true;
        r.credits_moved := 0;
        RETURN r;
    END IF;
    IF v_account.status <> 'active' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    v_admin_id := nextval(pg_get_serial_sequence('admin_actions', 'id'));
    v_reason := left(format('purchase of package %s, credited by hand: %s', v_payment.package_id, p_reason), 500);
    UPDATE accounts a SET balance = a.balance + v_payment.credits, updated_at = now()
     WHERE a.user_id = v_user_id
    RETURNING a.balance INTO v_balance;
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, payment_id, admin_action_id)
    VALUES (v_user_id, v_payment.credits, v_balance, 'purchase', format('payment:%s:purchase', v_payment.id),
            sha256(convert_to(concat_ws('|', 'payment', v_payment.id, 'purchase', v_payment.credits,
                                        'manual', p_actor, p_reason), 'UTF8')),
            v_reason, v_payment.id, v_admin_id)
    RETURNING t.* INTO v_entry;
    ASSERT v_entry.balance_after = v_account.balance + v_payment.credits, 'balance_after does not follow from delta';
    INSERT INTO admin_actions (id, user_id, actor, delta, reason, transaction_id)
    VALUES (v_admin_id, v_user_id, p_actor, v_payment.credits, p_reason, v_entry.id);
    IF v_payment.status IN ('INIT', 'FAILED', 'EXPIRED') THEN
        v_payment.status := 'PAID';
    END IF;
    v_payment.credit_transaction_id := v_entry.id;
    v_payment.credited_at := v_entry.created_at;
    r := payment_apply(v_payment);
    r.payment := payment_record_paid(r.payment, NULL, NULL, NULL, NULL);
    r.entry := v_entry;
    r.credited := true;
    r.replayed := false;
    r.credits_moved := v_admin_id;
    RETURN r;
END
$$;
"""

DOWNGRADE_SQL = r"""
DROP FUNCTION ledger_payment_settle_manually(bigint, text, text);
DROP FUNCTION ledger_payment_expire(text, text, text, text, bytea);
DROP FUNCTION ledger_payment_settle(text, text, text, text, text, bigint, bigint, text, text, text, text, text,
                                    bytea, bigint, bigint, bigint);
-- EXPIRED has no place in 0005's lifecycle: such a payment ended unpaid, as a FAILED one. PostgreSQL cannot
-- drop an enum value; the label stays unused until 0001's downgrade drops the type.
UPDATE payments SET status = 'FAILED' WHERE status::text = 'EXPIRED';
DROP FUNCTION payment_record_paid(payments, bigint, bigint, bigint, text);
"""

DROP_COLUMNS_SQL = r"""
ALTER TABLE payments
    DROP COLUMN amount_paid_minor,
    DROP COLUMN amount_tax_minor,
    DROP COLUMN amount_discount_minor,
    DROP COLUMN settle_refusal;
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)
    op.execute(HELPERS_SQL)
    op.execute(SETTLE_SQL)
    op.execute(EXPIRE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    op.execute(DROP_COLUMNS_SQL)
    # 0002's settle, exactly as that revision wrote it (0003 and 0004 do not change it).
    payments_0002 = _revision_module("0002_payment_lifecycle.py")
    op.execute(_function_sql(payments_0002.OPEN_SETTLE_FAIL_SQL, "ledger_payment_settle"))


def _revision_module(file_name: str) -> Any:
    path = Path(__file__).with_name(file_name)
    spec = importlib.util.spec_from_file_location(f"credits_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function_sql(sql: str, name: str) -> str:
    """One `CREATE FUNCTION name(...) ... $$;` statement of an earlier revision's SQL, as written there."""
    match = re.search(rf"^CREATE FUNCTION {name}\(.*?^\$\$;$", sql, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, name
    return match.group(0)
