"""Refunds tracked one by one: a refund that fails or is canceled gives the credits back.

Since API version 2024-10-28.acacia Stripe sends `refund.created` / `refund.updated` / `refund.failed` for
every refund, and `charge.refund.updated` on older versions; a card refund can fail after it was created
(`failure_reason`, `failure_balance_transaction`): the merchant keeps the money, so the user must get the
credits back. The cumulative `charge.amount_refunded` of `charge.refunded` cannot say that on its own: it
drops when a refund fails, and a stale snapshot (a later-created event can arrive first) would put it back.

So the ledger keeps two kinds of facts, each of which only moves one way, and derives the refunded amount:
- payment_refunds: one row per Stripe refund id, with its amount (immutable at Stripe) and its status,
  which only moves up payment_refund_rank (requires_action < pending < succeeded < failed = canceled;
  failed and canceled are final). A stale refund event therefore changes nothing.
- payments.charge_amount_refunded_minor: the largest cumulative amount_refunded any charge snapshot showed.

    refunded = LEAST(amount, GREATEST(live, charge_amount_refunded - ended))
      live  = the sum of the known refunds that are requires_action, pending or succeeded
      ended = the sum of the known refunds that failed or were canceled

`live` may exceed the amount for a while: a later refund reported before an earlier one's failure (the
charge was refundable again once the first failed). That is capped, not refused, or the later refund would be
lost; only one refund (or the charge's total) above the amount is refused as not Stripe's data.

Why this is right in any order: every refund a charge snapshot counted is now live (in `live`) or ended;
if the ledger has seen it end, it is in `ended`. So once every event has arrived the charge term is never
above the truth, and `live` is the truth whenever every refund is known by its id (always on 2024-10-28+,
where refund.created is sent for each). A charge snapshot alone (API versions before refund.* events) still
claws back as before. What the events cannot tell (an old API version that never names a refund that later
failed) the reconciler repairs from Stripe's refund list (docs/reconciler.md).

requires_action counts as refunded: the merchant has issued the refund, Stripe counts it in the charge's
amount_refunded, and credits for money on its way back must not stay spendable; canceled gives them back.

The clawed-back credits follow that amount both ways, floor(credits x refunded / amount) as before;
a decrease (a refund failed or was canceled) is journaled as kind `refund_reversal`, once (the status of a
refund ends once). One call per event (ledger_payment_apply_refunds), locking the user's account row first.

Revision ID: 0005_refunds
Revises: 0004_post_batch
Create Date: 2026-12-06
"""

import re
from pathlib import Path

from alembic import op

revision = "0005_refunds"
down_revision = "0004_post_batch"
branch_labels = None
depends_on = None

SCHEMA_SQL = r"""
-- NOT VALID then VALIDATE: the journal is not locked against writes while it is scanned.
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN (
    'purchase', 'spend', 'grant', 'refund', 'chargeback', 'chargeback_reversal', 'admin_adjustment',
    'hold_capture', 'refund_reversal')) NOT VALID;
ALTER TABLE credit_transactions VALIDATE CONSTRAINT credit_transactions_kind_check;

-- Until now amount_refunded_minor was the largest charge snapshot: that is what it stays for old payments.
ALTER TABLE payments ADD COLUMN charge_amount_refunded_minor bigint NOT NULL DEFAULT 0;
UPDATE payments SET charge_amount_refunded_minor = amount_refunded_minor WHERE amount_refunded_minor > 0;
ALTER TABLE payments ADD CONSTRAINT payments_charge_amount_refunded_minor_check
    CHECK (charge_amount_refunded_minor BETWEEN 0 AND amount_minor);

CREATE TABLE payment_refunds (
    user_id       text        NOT NULL,
    refund_id     text        NOT NULL CHECK (length(refund_id) BETWEEN 1 AND 255),
    payment_id    bigint      NOT NULL,
    amount_minor  bigint      NOT NULL CHECK (amount_minor > 0),
    status        text        NOT NULL CHECK (status IN ('requires_action', 'pending', 'succeeded', 'failed',
                                                         'canceled')),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, refund_id),
    FOREIGN KEY (user_id, payment_id) REFERENCES payments (user_id, id)
);
CREATE INDEX payment_refunds_payment_idx ON payment_refunds (user_id, payment_id);

-- ApplyRefund answers the payment's refunds with it (the other functions leave this NULL).
ALTER TYPE payment_result ADD ATTRIBUTE refunds jsonb;
"""

RULES_SQL = r"""
-- A refund's status only moves up this rank; failed and canceled are final (same top rank).
CREATE FUNCTION payment_refund_rank(p_status text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status
        WHEN 'requires_action' THEN 1
        WHEN 'pending'         THEN 2
        WHEN 'succeeded'       THEN 3
        WHEN 'failed'          THEN 4
        WHEN 'canceled'        THEN 4
        ELSE 0
    END
$$;

-- A refund whose money goes (or went) back to the customer: its credits are clawed back.
CREATE FUNCTION payment_refund_is_live(p_status text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p_status IN ('requires_action', 'pending', 'succeeded')
$$;

-- The refunded amount the clawback follows (see the module docstring), from the given refund rows.
CREATE FUNCTION payment_refunded_amount(
    p_amount_minor bigint, p_charge_amount_refunded_minor bigint, p_live_minor bigint, p_ended_minor bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT LEAST(p_amount_minor, GREATEST(p_live_minor, p_charge_amount_refunded_minor - p_ended_minor, 0))
$$;

-- The payment's refunds as JSON (refund_id, amount_minor, status), oldest first; NULL when there are none.
CREATE FUNCTION payment_refunds_json(p_user_id text, p_payment_id bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_agg(jsonb_build_object('refund_id', r.refund_id, 'amount_minor', r.amount_minor,
                                        'status', r.status) ORDER BY r.created_at, r.refund_id)
      FROM payment_refunds r
     WHERE r.user_id = p_user_id AND r.payment_id = p_payment_id
$$;

-- The payment's refund rows summed: (live, ended).
CREATE FUNCTION payment_refund_sums(p_user_id text, p_payment_id bigint, OUT live_minor bigint, OUT ended_minor bigint)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(r.amount_minor) FILTER (WHERE payment_refund_is_live(r.status)), 0)::bigint,
           COALESCE(sum(r.amount_minor) FILTER (WHERE NOT payment_refund_is_live(r.status)), 0)::bigint
      FROM payment_refunds r
     WHERE r.user_id = p_user_id AND r.payment_id = p_payment_id
$$;
"""

# payment_merge of 0002 with the refund facts folded in: the refund rows move to the kept payment (before the
# other row is deleted), the charge snapshot is the larger one, and the refunded amount is derived again.
MERGE_SQL = r"""
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
    UPDATE payments t SET charge_amount_refunded_minor = GREATEST(t.charge_amount_refunded_minor,
                                                                  v_drop.charge_amount_refunded_minor)
     WHERE t.user_id = v_keep.user_id AND t.id = v_keep.id
    RETURNING t.charge_amount_refunded_minor INTO v_keep.charge_amount_refunded_minor;
    DELETE FROM payments t WHERE t.user_id = v_drop.user_id AND t.id = v_drop.id;
    UPDATE processed_events e SET payment_id = v_keep.id WHERE e.payment_id = v_drop.id;
    v_keep.checkout_session_id := COALESCE(v_keep.checkout_session_id, v_drop.checkout_session_id);
    v_keep.payment_intent_id := COALESCE(v_keep.payment_intent_id, v_drop.payment_intent_id);
    v_keep.charge_id := COALESCE(v_keep.charge_id, v_drop.charge_id);
    v_keep.customer_email := COALESCE(v_keep.customer_email, v_drop.customer_email);
    v_keep.customer_id := COALESCE(v_keep.customer_id, v_drop.customer_id);
    v_keep.anonymized := v_keep.anonymized OR v_drop.anonymized;
    SELECT * INTO STRICT v_sums FROM payment_refund_sums(v_keep.user_id, v_keep.id);
    v_keep.amount_refunded_minor := payment_refunded_amount(v_keep.amount_minor, v_keep.charge_amount_refunded_minor,
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
"""

# payment_resolve of 0002 read the matching payments in two statements (two snapshots): a merge committing
# between them (the session's row and the intent's row becoming one) made one payment look like two, and a
# refund or dispute event arriving then was refused. One statement, one snapshot.
RESOLVE_SQL = r"""
CREATE OR REPLACE FUNCTION payment_resolve(
    INOUT p_user_id text, INOUT p_session_id text, INOUT p_intent_id text, p_charge_id text,
    OUT resolve_outcome text
) LANGUAGE plpgsql AS $$
DECLARE
    v_found  payments[];
BEGIN
    SELECT array_agg(t ORDER BY t.id) INTO v_found FROM payments t
     WHERE (p_user_id IS NULL OR t.user_id = p_user_id)
       AND (t.payment_intent_id = p_intent_id OR t.charge_id = p_charge_id OR t.checkout_session_id = p_session_id);
    IF v_found IS NULL THEN
        resolve_outcome := 'not_found';
        RETURN;
    END IF;
    IF cardinality(v_found) > 1 THEN
        resolve_outcome := 'conflict';
        RETURN;
    END IF;
    p_user_id := v_found[1].user_id;
    IF p_session_id IS NULL AND p_intent_id IS NULL THEN
        p_session_id := v_found[1].checkout_session_id;
        p_intent_id := v_found[1].payment_intent_id;
    END IF;
    resolve_outcome := 'found';
END
$$;
"""

APPLY_SQL = r"""
-- payment_apply (0002) for a refund call: brings the journal to the clawback target with one entry of the
-- difference; a decrease (refunds failed or canceled, no dispute involved: a refund call changes no dispute)
-- is kind refund_reversal.
CREATE FUNCTION payment_apply_refunds(p payments) RETURNS payment_result LANGUAGE plpgsql AS $$
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
                               'still refunded', p.id, p.amount_refunded_minor, p.amount_minor, p.currency_code);
        ELSE
            v_kind := 'refund';
            v_reason := format('refund of payment %s: %s of %s %s minor units refunded',
                               p.id, p.amount_refunded_minor, p.amount_minor, p.currency_code);
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

-- Checks the given refunds against the payment's known ones and answers the sums the payment would have
-- with them: outcome 'found', or 'conflict' (a refund id known with another amount or on another payment).
CREATE FUNCTION payment_refunds_merged(
    p payments, p_refund_ids text[], p_amounts_minor bigint[], p_statuses text[]
) RETURNS TABLE (outcome text, detail text, live_minor bigint, ended_minor bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_known  payment_refunds;
BEGIN
    SELECT t.* INTO v_known FROM payment_refunds t
      JOIN unnest(p_refund_ids, p_amounts_minor) AS g(refund_id, amount_minor) ON g.refund_id = t.refund_id
     WHERE t.user_id = p.user_id AND (t.payment_id <> p.id OR t.amount_minor <> g.amount_minor)
     LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT 'conflict'::text,
            format('refund %s is known with amount %s on payment %s', v_known.refund_id, v_known.amount_minor,
                   v_known.payment_id), 0::bigint, 0::bigint;
        RETURN;
    END IF;
    RETURN QUERY
    WITH merged AS (
        SELECT t.amount_minor, t.status FROM payment_refunds t
         WHERE t.user_id = p.user_id AND t.payment_id = p.id AND t.refund_id <> ALL (p_refund_ids)
        UNION ALL
        SELECT g.amount_minor,
               CASE WHEN payment_refund_rank(g.status) > payment_refund_rank(t.status) OR t.status IS NULL
                    THEN g.status ELSE t.status END
          FROM unnest(p_refund_ids, p_amounts_minor, p_statuses) AS g(refund_id, amount_minor, status)
          LEFT JOIN payment_refunds t ON t.user_id = p.user_id AND t.refund_id = g.refund_id
    )
    SELECT 'found'::text, NULL::text,
           COALESCE(sum(m.amount_minor) FILTER (WHERE payment_refund_is_live(m.status)), 0)::bigint,
           COALESCE(sum(m.amount_minor) FILTER (WHERE NOT payment_refund_is_live(m.status)), 0)::bigint
      FROM merged m;
END
$$;

-- Writes the given refunds: new ids inserted, known ones moved up their status rank (never down).
CREATE FUNCTION payment_refunds_save(
    p payments, p_refund_ids text[], p_amounts_minor bigint[], p_statuses text[]
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO payment_refunds AS t (user_id, refund_id, payment_id, amount_minor, status)
    SELECT p.user_id, g.refund_id, p.id, g.amount_minor, g.status
      FROM unnest(p_refund_ids, p_amounts_minor, p_statuses) AS g(refund_id, amount_minor, status)
    ON CONFLICT (user_id, refund_id) DO UPDATE SET status = excluded.status, updated_at = clock_timestamp()
     WHERE payment_refund_rank(excluded.status) > payment_refund_rank(t.status)
$$;
"""

REFUND_SQL = r"""
-- Refunds: a charge snapshot's cumulative amount_refunded (0: none given) and/or refunds by id (amount,
-- status), in one call per Stripe event. Without a user id (a refund object carries no metadata) the payment
-- is found by its ids and must exist; with a user and a price a missing payment is recorded INIT (as 0002's
-- refund did) and clawed back when the settle comes. Stale facts change nothing; see the module docstring.
CREATE FUNCTION ledger_payment_apply_refunds(
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
    -- One refund, or the charge's total, above the amount is not Stripe's data. Standing refunds that add up
    -- to more are: a later refund reported before an earlier one's failure (the sum is capped meanwhile).
    IF GREATEST(p_charge_amount_refunded_minor, (SELECT max(a) FROM unnest(p_refund_amounts_minor) AS a))
       > v_payment.amount_minor THEN
        r.outcome := 'refund_exceeds_amount';
        r.detail := format('a refund or the charge''s amount_refunded exceeds the amount %s of payment %s',
                           v_payment.amount_minor, v_payment.id);
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
        v_payment.amount_minor, v_payment.charge_amount_refunded_minor, v_merged.live_minor, v_merged.ended_minor);
    r := payment_apply_refunds(v_payment);
    v_payment := r.payment;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.credits_moved := -r.credits_moved;  -- answered as credits clawed back (negative: reinstated)
    r.refunds := payment_refunds_json(v_payment.user_id, v_payment.id);
    RETURN r;
END
$$;

-- 0002's ApplyRefund (a charge snapshot only) now goes through the refund facts too, so nothing can write
-- amount_refunded_minor without them.
DROP FUNCTION ledger_payment_refund(text, text, text, text, text, bigint, bigint, text, text, text, bigint,
                                    text, text, bytea);
"""

DOWNGRADE_SQL = r"""
DROP FUNCTION ledger_payment_apply_refunds(text, text, text, text, text, bigint, bigint, text, text, text, bigint,
                                           text[], bigint[], text[], text, text, bytea);
DROP FUNCTION payment_refunds_save(payments, text[], bigint[], text[]);
DROP FUNCTION payment_refunds_merged(payments, text[], bigint[], text[]);
DROP FUNCTION payment_apply_refunds(payments);
DROP FUNCTION payment_refund_sums(text, bigint);
DROP FUNCTION payment_refunds_json(text, bigint);
DROP FUNCTION payment_refunded_amount(bigint, bigint, bigint, bigint);
DROP FUNCTION payment_refund_is_live(text);
DROP FUNCTION payment_refund_rank(text);
DROP TABLE payment_refunds;
ALTER TYPE payment_result DROP ATTRIBUTE refunds;
ALTER TABLE payments DROP COLUMN charge_amount_refunded_minor;
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN (
    'purchase', 'spend', 'grant', 'refund', 'chargeback', 'chargeback_reversal', 'admin_adjustment',
    'hold_capture'));
"""

_PAYMENTS_MIGRATION = Path(__file__).with_name("0002_payment_lifecycle.py")


def _function_of_0002(name: str, *, replace: bool) -> str:
    """The frozen text of one function as migration 0002 created it (for the downgrade to restore it)."""
    text = _PAYMENTS_MIGRATION.read_text(encoding="utf-8")
    found = re.search(rf"^CREATE FUNCTION {name}\(.*?^\$\$;$", text, re.MULTILINE | re.DOTALL)
    assert found is not None, f"0002 defines {name}"
    sql = found.group(0)
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1) if replace else sql


def upgrade() -> None:
    op.execute(SCHEMA_SQL)
    op.execute(RULES_SQL)
    op.execute(MERGE_SQL)
    op.execute(RESOLVE_SQL)
    op.execute(APPLY_SQL)
    op.execute(REFUND_SQL)


def downgrade() -> None:
    # A journal holding refund_reversal entries cannot go back: the journal is append-only, and 0004's kind
    # check refuses them (the downgrade then fails, changing nothing).
    op.execute(_function_of_0002("ledger_payment_refund", replace=False))
    op.execute(_function_of_0002("payment_merge", replace=True))
    op.execute(_function_of_0002("payment_resolve", replace=True))
    op.execute(DOWNGRADE_SQL)
