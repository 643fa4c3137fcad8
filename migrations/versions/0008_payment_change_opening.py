"""The refund and the dispute functions share their opening (issue 18): written once, in payment_open_for_event.

ledger_payment_apply_refunds (0007) and ledger_payment_dispute (0002) began with the same 30 lines: find the
payment the ids name, lock its user, answer a redelivered event as before, match the payment or record it from
the price given. That opening is now one function; both call it and go on as before. Nothing else changes:
the same outcomes, the same rows, the same locks in the same order (the whole payments and webhook suites
pass before and after). The current definitions are read in migrations/sql/payments/.

Revision ID: 0008_payment_change_opening
Revises: 0007_refunds_of_what_was_paid
Create Date: 2026-12-06
"""

import re
from pathlib import Path

from alembic import op

revision = "0008_payment_change_opening"
down_revision = "0007_refunds_of_what_was_paid"
branch_labels = None
depends_on = None

OPENING_SQL = r"""
-- The opening that a refund and a dispute share: find the payment the ids name (when the user or both of the
-- session and the intent are missing), lock its user, answer a redelivered event as the first delivery was
-- answered, match the payment (or record it, INIT, from the price given). done: the caller answers `answer` as
-- it is; otherwise `answer` is the match and `target` the payment to change, with the ids resolved.
CREATE FUNCTION payment_open_for_event(
    INOUT p_user_id text, INOUT p_session_id text, INOUT p_intent_id text, p_charge_id text, p_package_id text,
    p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text,
    p_event_id text, p_payload_sha256 bytea, OUT done boolean, OUT answer payment_result, OUT target payments
) LANGUAGE plpgsql AS $$
DECLARE
    v_account  accounts;
    v_event    processed_events;
    v_resolved record;
BEGIN
    done := true;
    IF p_user_id IS NULL OR (p_session_id IS NULL AND p_intent_id IS NULL) THEN
        SELECT * INTO v_resolved FROM payment_resolve(p_user_id, p_session_id, p_intent_id, p_charge_id);
        IF v_resolved.resolve_outcome <> 'found' THEN
            answer.outcome := v_resolved.resolve_outcome;
            answer.detail := CASE v_resolved.resolve_outcome
                WHEN 'not_found' THEN 'no payment has these ids'
                ELSE 'these ids name several payments' END;
            RETURN;
        END IF;
        p_user_id := v_resolved.p_user_id;
        p_session_id := v_resolved.p_session_id;
        p_intent_id := v_resolved.p_intent_id;
    END IF;
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        answer := payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, p_intent_id);
        RETURN;
    END IF;
    answer := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                            p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                            v_account.status = 'active');
    IF answer.outcome = 'conflict' THEN
        RETURN;
    END IF;
    target := answer.payment;
    IF answer.outcome = 'missing' THEN
        IF p_package_id IS NULL THEN
            answer.outcome := 'not_found';
            answer.detail := 'no such payment, and no price given to record it';
            RETURN;
        END IF;
        target := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                 p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                 v_account.status = 'active', 'INIT');
    END IF;
    done := false;
END
$$;
"""

CALLERS_SQL = r"""
CREATE OR REPLACE FUNCTION ledger_payment_dispute(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint,
    p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text,
    p_dispute_id text, p_dispute_status text, p_event_id text, p_event_type text, p_payload_sha256 bytea
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_open     record;
BEGIN
    SELECT * INTO STRICT v_open FROM payment_open_for_event(
        p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor, p_currency_code,
        p_customer_email, p_customer_id, p_event_id, p_payload_sha256);
    IF v_open.done THEN
        RETURN v_open.answer;
    END IF;
    p_user_id := v_open.p_user_id;
    p_session_id := v_open.p_session_id;
    p_intent_id := v_open.p_intent_id;
    r := v_open.answer;
    v_payment := v_open.target;
    IF payment_dispute_rank(p_dispute_status) > payment_dispute_rank(v_payment.dispute_status) THEN
        v_payment.dispute_status := p_dispute_status;
        v_payment.dispute_id := p_dispute_id;
    END IF;
    r := payment_apply(v_payment);
    v_payment := r.payment;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION ledger_payment_apply_refunds(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint,
    p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text,
    p_charge_amount_refunded_minor bigint, p_refund_ids text[], p_refund_amounts_minor bigint[],
    p_refund_statuses text[], p_event_id text, p_event_type text, p_payload_sha256 bytea
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_open     record;
    v_merged   record;
BEGIN
    ASSERT cardinality(p_refund_ids) = cardinality(p_refund_amounts_minor)
       AND cardinality(p_refund_ids) = cardinality(p_refund_statuses), 'refund arrays of different lengths';
    SELECT * INTO STRICT v_open FROM payment_open_for_event(
        p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor, p_currency_code,
        p_customer_email, p_customer_id, p_event_id, p_payload_sha256);
    IF v_open.done THEN
        RETURN v_open.answer;
    END IF;
    p_user_id := v_open.p_user_id;
    p_session_id := v_open.p_session_id;
    p_intent_id := v_open.p_intent_id;
    r := v_open.answer;
    v_payment := v_open.target;
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

# What downgrade puts back: each function as the migration that last defined it wrote it.
RESTORED = (
    ("0002_payment_lifecycle.py", "ledger_payment_dispute"),
    ("0007_refunds_of_what_was_paid.py", "ledger_payment_apply_refunds"),
)
OPENING_ARGUMENTS = "text, text, text, text, text, bigint, bigint, text, text, text, text, bytea"


def upgrade() -> None:
    op.execute(OPENING_SQL)
    op.execute(CALLERS_SQL)


def downgrade() -> None:
    for file_name, name in RESTORED:
        text = Path(__file__).with_name(file_name).read_text(encoding="utf-8")
        op.execute(_as_replacement(text, name))
    op.execute(f"DROP FUNCTION payment_open_for_event({OPENING_ARGUMENTS})")


def _as_replacement(revision_text: str, name: str) -> str:
    """One function exactly as an earlier revision wrote it, as CREATE OR REPLACE."""
    pattern = rf"^CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?^\$\$;$"
    found = re.search(pattern, revision_text, re.MULTILINE | re.DOTALL)
    assert found is not None, f"{name} not found"
    return re.sub(r"^CREATE (?:OR REPLACE )?FUNCTION", "CREATE OR REPLACE FUNCTION", found.group(0), count=1)
