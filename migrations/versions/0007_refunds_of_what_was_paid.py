"""Refunds are counted against what the customer was charged, not the catalog price.

A Checkout Session paid with a promotion code or with automatic tax charges other than the pack's price:
0006 records what was paid (`amount_paid_minor`: the session's amount_total, tax included) beside the price
the pack was matched on (`amount_minor`: amount_subtotal). Stripe's refunds and the charge's amount_refunded
are in the charged money, so measuring them against the price claws back too little after a discount (a
full refund of 24.00 on a 25.00 pack took 96 % of the credits) and refuses a full refund with tax (30.00 is
"above the amount" of 25.00).

    charged = COALESCE(amount_paid_minor, amount_minor)      (payment_charged_minor; NULL: paid before 0006,
                                                              or settled from a charge: the charge was the price)
    clawback target = floor(credits x refunded / charged)   as before, in numeric; all credits at refunded >= charged
    REFUNDED        when refunded >= charged > 0

Replaced: payment_clawback_target and payment_status_after (0002; the latter also keeps EXPIRED as it is, as
INIT and FAILED: not paid), payment_apply_refunds, ledger_payment_apply_refunds and payment_merge (0005; the
merge also carries what was paid from the row it deletes, which 0006 left behind). The two checks that bound
the refunded amounts by the price now bound them by what was charged.

A refund larger than the price that arrives before its payment is settled (tax on top, what was paid not yet
known) is refused as refund_exceeds_amount; the reconciler's refund comparison repairs it once the payment is
settled (docs/reconciler.md).

Revision ID: 0007_refunds_of_what_was_paid
Revises: 0006_checkout_outcomes
Create Date: 2026-12-06
"""

import re
from pathlib import Path

from alembic import op

revision = "0007_refunds_of_what_was_paid"
down_revision = "0006_checkout_outcomes"
branch_labels = None
depends_on = None

SCHEMA_SQL = r"""
-- 0001 and 0005 bounded the refunded amounts by the price; a taxed purchase is refunded more than that.
ALTER TABLE payments DROP CONSTRAINT payments_check;
ALTER TABLE payments ADD CONSTRAINT payments_amount_refunded_minor_check
    CHECK (amount_refunded_minor BETWEEN 0 AND COALESCE(amount_paid_minor, amount_minor)) NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_amount_refunded_minor_check;
ALTER TABLE payments DROP CONSTRAINT payments_charge_amount_refunded_minor_check;
ALTER TABLE payments ADD CONSTRAINT payments_charge_amount_refunded_minor_check
    CHECK (charge_amount_refunded_minor BETWEEN 0 AND COALESCE(amount_paid_minor, amount_minor)) NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_charge_amount_refunded_minor_check;
"""

RULES_SQL = r"""
-- What the customer was charged for the payment, in minor units of its currency: the base of its refunds.
CREATE FUNCTION payment_charged_minor(p payments) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(p.amount_paid_minor, p.amount_minor)
$$;

CREATE OR REPLACE FUNCTION payment_clawback_target(p payments) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p.credit_transaction_id IS NULL THEN 0
        WHEN payment_dispute_is_real(p.dispute_status) THEN p.credits
        WHEN payment_charged_minor(p) = 0 THEN 0
        WHEN p.amount_refunded_minor >= payment_charged_minor(p) THEN p.credits
        ELSE div(p.credits::numeric * p.amount_refunded_minor, payment_charged_minor(p))::bigint
    END
$$;

-- INIT, FAILED and EXPIRED are not paid and stay as they are; a paid payment's status follows from its facts.
-- (status::text: EXPIRED was added by 0006, possibly in this same transaction, where the enum literal is refused.)
CREATE OR REPLACE FUNCTION payment_status_after(p payments) RETURNS payment_status LANGUAGE sql IMMUTABLE AS $$
    SELECT (CASE
        WHEN p.status::text IN ('INIT', 'FAILED', 'EXPIRED') THEN p.status::text
        WHEN payment_dispute_is_real(p.dispute_status) THEN 'CHARGEBACK'
        WHEN payment_charged_minor(p) > 0 AND p.amount_refunded_minor >= payment_charged_minor(p) THEN 'REFUNDED'
        WHEN p.credit_transaction_id IS NOT NULL THEN 'CREDITED'
        ELSE 'PAID'
    END)::payment_status
$$;
"""

REFUNDS_SQL = r"""
CREATE OR REPLACE FUNCTION payment_merge(p_by_session payments, p_by_intent payments) RETURNS payment_result
LANGUAGE plpgsql AS $$
DECLARE
    r       payment_result;
    v_keep  payments;
    v_drop  payments;
    v_sums  record;
BEGIN
    r.outcome := 'conflict';
    IF p_by_session.payment_intent_id IS NOT NULL OR p_by_intent.checkout_session_id IS NOT NULL THEN
        r.detail := format('the session belongs to payment %s and the intent to payment %s',
                           p_by_session.id, p_by_intent.id);
        RETURN r;
    END IF;
    IF payment_price_differs(p_by_session, p_by_intent.package_id, p_by_intent.credits,
                             p_by_intent.amount_minor, p_by_intent.currency_code) THEN
        r.detail := format('payments %s and %s have different prices', p_by_session.id, p_by_intent.id);
        RETURN r;
    END IF;
    IF p_by_session.credit_transaction_id IS NOT NULL AND p_by_intent.credit_transaction_id IS NOT NULL THEN
        r.detail := format('payments %s and %s were both credited', p_by_session.id, p_by_intent.id);
        RETURN r;
    END IF;
    IF (p_by_intent.credit_transaction_id IS NOT NULL, payment_is_paid(p_by_intent), -p_by_intent.id)
     > (p_by_session.credit_transaction_id IS NOT NULL, payment_is_paid(p_by_session), -p_by_session.id) THEN
        v_keep := p_by_intent;
        v_drop := p_by_session;
    ELSE
        v_keep := p_by_session;
        v_drop := p_by_intent;
    END IF;
    ASSERT v_drop.credit_transaction_id IS NULL, 'merging away a credited payment';
    ASSERT v_drop.credits_clawed_back = 0, 'merging away a payment with clawbacks';

    UPDATE payment_refunds t SET payment_id = v_keep.id WHERE t.user_id = v_drop.user_id AND t.payment_id = v_drop.id;
    -- payment_save (0002) writes neither the charge snapshot nor what was paid (0006): carried here.
    UPDATE payments t SET charge_amount_refunded_minor = GREATEST(t.charge_amount_refunded_minor,
                                                                  v_drop.charge_amount_refunded_minor),
                          amount_paid_minor = COALESCE(t.amount_paid_minor, v_drop.amount_paid_minor),
                          amount_tax_minor = COALESCE(t.amount_tax_minor, v_drop.amount_tax_minor),
                          amount_discount_minor = COALESCE(t.amount_discount_minor, v_drop.amount_discount_minor),
                          settle_refusal = COALESCE(t.settle_refusal, v_drop.settle_refusal)
     WHERE t.user_id = v_keep.user_id AND t.id = v_keep.id
    RETURNING t.charge_amount_refunded_minor, t.amount_paid_minor, t.amount_tax_minor, t.amount_discount_minor,
              t.settle_refusal
         INTO v_keep.charge_amount_refunded_minor, v_keep.amount_paid_minor, v_keep.amount_tax_minor,
              v_keep.amount_discount_minor, v_keep.settle_refusal;
    DELETE FROM payments t WHERE t.user_id = v_drop.user_id AND t.id = v_drop.id;
    UPDATE processed_events e SET payment_id = v_keep.id WHERE e.payment_id = v_drop.id;
    v_keep.checkout_session_id := COALESCE(v_keep.checkout_session_id, v_drop.checkout_session_id);
    v_keep.payment_intent_id := COALESCE(v_keep.payment_intent_id, v_drop.payment_intent_id);
    v_keep.charge_id := COALESCE(v_keep.charge_id, v_drop.charge_id);
    v_keep.customer_email := COALESCE(v_keep.customer_email, v_drop.customer_email);
    v_keep.customer_id := COALESCE(v_keep.customer_id, v_drop.customer_id);
    v_keep.anonymized := v_keep.anonymized OR v_drop.anonymized;
    SELECT * INTO STRICT v_sums FROM payment_refund_sums(v_keep.user_id, v_keep.id);
    v_keep.amount_refunded_minor := payment_refunded_amount(payment_charged_minor(v_keep),
                                                            v_keep.charge_amount_refunded_minor,
                                                            v_sums.live_minor, v_sums.ended_minor);
    IF payment_dispute_rank(v_drop.dispute_status) > payment_dispute_rank(v_keep.dispute_status) THEN
        v_keep.dispute_status := v_drop.dispute_status;
        v_keep.dispute_id := v_drop.dispute_id;
    END IF;
    IF NOT payment_is_paid(v_keep) AND v_drop.status = 'FAILED' THEN
        v_keep.status := 'FAILED';
    END IF;
    v_keep.created_at := LEAST(v_keep.created_at, v_drop.created_at);
    r.payment := payment_save(v_keep);
    r.outcome := 'found';
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION payment_apply_refunds(p payments) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r         payment_result;
    v_target  bigint := payment_clawback_target(p);
    v_kind    text;
    v_reason  text;
BEGIN
    ASSERT v_target >= 0, 'clawback target below zero';
    ASSERT v_target <= p.credits, 'clawback target above the credits';
    r.credits_moved := p.credits_clawed_back - v_target;
    IF r.credits_moved <> 0 THEN
        ASSERT NOT payment_dispute_is_real(p.dispute_status), 'a refund moved credits under a real dispute';
        IF r.credits_moved > 0 THEN
            v_kind := 'refund_reversal';
            v_reason := format('refund reversal of payment %s: refunds failed or canceled, %s of %s %s minor units '
                               'still refunded', p.id, p.amount_refunded_minor, payment_charged_minor(p),
                               p.currency_code);
        ELSE
            v_kind := 'refund';
            v_reason := format('refund of payment %s: %s of %s %s minor units refunded',
                               p.id, p.amount_refunded_minor, payment_charged_minor(p), p.currency_code);
        END IF;
        p.adjustment_count := p.adjustment_count + 1;
        r.entry := payment_journal(p.user_id, p.id, r.credits_moved, v_kind,
                                   format('payment:%s:adjustment:%s', p.id, p.adjustment_count), v_reason);
        p.credits_clawed_back := v_target;
    END IF;
    p.status := payment_status_after(p);
    r.payment := payment_save(p);
    r.outcome := 'applied';
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION ledger_payment_apply_refunds(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_charge_amount_refunded_minor bigint,
    p_refund_ids text[], p_refund_amounts_minor bigint[], p_refund_statuses text[],
    p_event_id text, p_event_type text, p_payload_sha256 bytea
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
    v_resolved record;
    v_merged   record;
BEGIN
    ASSERT cardinality(p_refund_ids) = cardinality(p_refund_amounts_minor)
       AND cardinality(p_refund_ids) = cardinality(p_refund_statuses), 'refund arrays of different lengths';
    IF p_user_id IS NULL OR (p_session_id IS NULL AND p_intent_id IS NULL) THEN
        SELECT * INTO v_resolved FROM payment_resolve(p_user_id, p_session_id, p_intent_id, p_charge_id);
        IF v_resolved.resolve_outcome <> 'found' THEN
            r.outcome := v_resolved.resolve_outcome;
            r.detail := CASE v_resolved.resolve_outcome
                WHEN 'not_found' THEN 'no payment has these ids'
                ELSE 'these ids name several payments' END;
            RETURN r;
        END IF;
        p_user_id := v_resolved.p_user_id;
        p_session_id := v_resolved.p_session_id;
        p_intent_id := v_resolved.p_intent_id;
    END IF;
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
        IF p_package_id IS NULL THEN
            r.outcome := 'not_found';
            r.detail := 'no such payment, and no price given to record it';
            RETURN r;
        END IF;
        v_payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                    v_account.status = 'active', 'INIT');
    END IF;
    SELECT * INTO STRICT v_merged FROM payment_refunds_merged(v_payment, p_refund_ids, p_refund_amounts_minor,
                                                               p_refund_statuses);
    IF v_merged.outcome = 'conflict' THEN
        r.outcome := 'conflict';
        r.detail := v_merged.detail;
        RETURN r;
    END IF;
    -- One refund, or the charge's total, above what was charged is not Stripe's data. Standing refunds that add
    -- up to more are: a later refund reported before an earlier one's failure (the sum is capped meanwhile).
    IF GREATEST(p_charge_amount_refunded_minor, (SELECT max(a) FROM unnest(p_refund_amounts_minor) AS a))
       > payment_charged_minor(v_payment) THEN
        r.outcome := 'refund_exceeds_amount';
        r.detail := format('a refund or the charge''s amount_refunded exceeds the %s charged for payment %s',
                           payment_charged_minor(v_payment), v_payment.id);
        RETURN r;
    END IF;
    PERFORM payment_refunds_save(v_payment, p_refund_ids, p_refund_amounts_minor, p_refund_statuses);
    IF p_charge_amount_refunded_minor > v_payment.charge_amount_refunded_minor THEN
        UPDATE payments t SET charge_amount_refunded_minor = p_charge_amount_refunded_minor,
                              updated_at = clock_timestamp()
         WHERE t.user_id = v_payment.user_id AND t.id = v_payment.id
        RETURNING t.* INTO STRICT v_payment;
    END IF;
    v_payment.amount_refunded_minor := payment_refunded_amount(
        payment_charged_minor(v_payment), v_payment.charge_amount_refunded_minor, v_merged.live_minor,
        v_merged.ended_minor);
    r := payment_apply_refunds(v_payment);
    v_payment := r.payment;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.credits_moved := -r.credits_moved;  -- answered as credits clawed back (negative: reinstated)
    r.refunds := payment_refunds_json(v_payment.user_id, v_payment.id);
    RETURN r;
END
$$;
"""

DOWNGRADE_SCHEMA_SQL = r"""
DROP FUNCTION payment_charged_minor(payments);
ALTER TABLE payments DROP CONSTRAINT payments_amount_refunded_minor_check;
ALTER TABLE payments ADD CONSTRAINT payments_check CHECK (amount_refunded_minor BETWEEN 0 AND amount_minor);
ALTER TABLE payments DROP CONSTRAINT payments_charge_amount_refunded_minor_check;
ALTER TABLE payments ADD CONSTRAINT payments_charge_amount_refunded_minor_check
    CHECK (charge_amount_refunded_minor BETWEEN 0 AND amount_minor);
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)
    op.execute(RULES_SQL)
    op.execute(REFUNDS_SQL)


def downgrade() -> None:
    # Back to measuring refunds against the price: a payment refunded above its price (tax) cannot go back, and
    # the constraint then fails the downgrade, changing nothing.
    for file_name, names in (
        ("0002_payment_lifecycle.py", ("payment_clawback_target", "payment_status_after")),
        ("0005_refunds.py", ("payment_merge", "payment_apply_refunds", "ledger_payment_apply_refunds")),
    ):
        text = Path(__file__).with_name(file_name).read_text(encoding="utf-8")
        for name in names:
            op.execute(_as_replacement(text, name))
    op.execute(DOWNGRADE_SCHEMA_SQL)


def _as_replacement(revision_text: str, name: str) -> str:
    """One function exactly as an earlier revision wrote it, as CREATE OR REPLACE."""
    found = re.search(rf"^CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?^\$\$;$", revision_text, re.MULTILINE | re.DOTALL)
    assert found is not None, f"{name} is defined there"
    return re.sub(r"^CREATE (?:OR REPLACE )?FUNCTION", "CREATE OR REPLACE FUNCTION", found.group(0), count=1)
