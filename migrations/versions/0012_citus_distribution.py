"""Past one database: the schema distributed by `user_id` on Citus; every function fit to run distributed (issue 22).

**Distribution.** `ledger_distribute()` distributes every table by `user_id`, colocated with `accounts` (32 shards),
and makes `processed_events` a reference table (its key is the Stripe event id alone, which is what makes an event
apply once across everything; docs/citus.md says why a reference table rather than a re-keyed one). It does
nothing and answers 0 on PostgreSQL without the citus extension, and skips what is already distributed, so it is
both this migration's step and the command that distributes a database moved onto Citus later (docs/citus.md).
The append-only triggers stay, under `citus.enable_unsafe_triggers` for the time of the call: each looks at its own
row only (it refuses an UPDATE or DELETE of that row), so firing on the shard that holds the row is exactly right.

**Functions.** Citus refuses a VOLATILE function inside an UPDATE of a distributed table: `updated_at =
clock_timestamp()` becomes the clock read into a variable first (payment_save, payment_record_paid,
ledger_payment_apply_refunds, ledger_anonymize: the same instant, one statement's worth earlier);
payment_refunds_save's ON CONFLICT takes the inserted row's updated_at (its default, the clock, read on the
coordinator), since Citus sends a variable there to the shard as a parameter of unknown type, and it is PL/pgSQL:
Citus cannot plan a SQL function's INSERT with parameters. Citus refuses FOR UPDATE over rows of several shards:
the sweepers (ledger_expire_holds, ledger_expire_grants) now lock one account at a time, still SKIP LOCKED, in
ascending user id, still bounded by p_limit. hold_expire_due (every debit, reserve, capture and release) first
reads whether anything is due: its data-modifying statement is one Citus runs in steps, with a transaction on every
worker, and most calls have nothing to expire. On plain PostgreSQL all of it behaves as before.

Downgrade restores the functions as 0011 left them and drops ledger_distribute; tables stay where they are
(distribution is placement, not schema: `undistribute_table` brings them back to the coordinator).

Revision ID: 0012_citus_distribution
Revises: 0011_credit_grants
Create Date: 2026-12-06
"""

import re
from pathlib import Path

from alembic import op

revision = "0012_citus_distribution"
down_revision = "0011_credit_grants"
branch_labels = None
depends_on = None

TYPES_SQL = r"""
-- One grant as GetBalance lists it (services/ledger/accounts/store.py): a worker cannot send back an anonymous record.
CREATE TYPE grant_shown AS (
    id bigint, category text, priority integer, expires_at timestamptz, amount bigint, live bigint, reserved bigint,
    transaction_id bigint, payment_id bigint, created_at timestamptz);
"""

# The append-only guards name their table in their argument: on Citus a row trigger fires on the shard, whose
# TG_TABLE_NAME is the shard's (credit_transactions_102040), and the refusal must name the table.
APPEND_ONLY_TABLES = ("admin_actions", "credit_transactions", "grant_movements", "hold_events")
TRIGGERS_SQL = (
    r"""
CREATE OR REPLACE FUNCTION refuse_change_to_append_only_table() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', COALESCE(TG_ARGV[0], TG_TABLE_NAME), TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""
    + "".join(
        f"""
DROP TRIGGER {table}_append_only ON {table};
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('{table}');
"""
        for table in APPEND_ONLY_TABLES
    )
    + """
DROP TRIGGER holds_no_delete ON holds;
CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('holds');
"""
)

FUNCTIONS_SQL = r"""
CREATE FUNCTION ledger_distribute() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_table  text;
    v_done   integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN 0;
    END IF;
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    FOREACH v_table IN ARRAY ARRAY[
        'accounts', 'credit_transactions', 'transaction_metadata', 'admin_actions', 'payments', 'payment_refunds',
        'holds', 'hold_events', 'credit_grants', 'grant_movements', 'hold_grants'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = v_table::regclass);
        PERFORM create_distributed_table(
            v_table, 'user_id', colocate_with => CASE v_table WHEN 'accounts' THEN 'default' ELSE 'accounts' END);
        v_done := v_done + 1;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = 'processed_events'::regclass) THEN
        PERFORM create_reference_table('processed_events');
        v_done := v_done + 1;
    END IF;
    -- New sessions take payment_events_lock() before recording an event (the ledger opens its pool after this).
    EXECUTE format('ALTER DATABASE %I SET credits.events_lock = on', current_database());
    PERFORM set_config('credits.events_lock', 'on', false);
    PERFORM set_config('citus.enable_unsafe_triggers', 'off', true);
    RETURN v_done;
END
$$;

CREATE OR REPLACE FUNCTION payment_record_paid(p payments, p_amount_paid_minor bigint, p_amount_tax_minor bigint,
    p_amount_discount_minor bigint, p_settle_refusal text)
 RETURNS payments
 LANGUAGE plpgsql
AS $$
DECLARE
    v_saved payments;
    v_now   timestamptz := clock_timestamp();
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
        updated_at            = v_now
     WHERE t.user_id = p.user_id AND t.id = p.id
    RETURNING t.* INTO STRICT v_saved;
    RETURN v_saved;
END
$$;

CREATE OR REPLACE FUNCTION payment_save(p payments)
 RETURNS payments
 LANGUAGE plpgsql
AS $$
DECLARE
    v_saved payments;
    v_now   timestamptz := clock_timestamp();
BEGIN
    UPDATE payments t SET
        checkout_session_id   = p.checkout_session_id,
        payment_intent_id     = p.payment_intent_id,
        charge_id             = p.charge_id,
        status                = p.status,
        amount_refunded_minor = p.amount_refunded_minor,
        credits_clawed_back   = p.credits_clawed_back,
        dispute_id            = p.dispute_id,
        dispute_status        = p.dispute_status,
        adjustment_count      = p.adjustment_count,
        credit_transaction_id = p.credit_transaction_id,
        customer_email        = p.customer_email,
        customer_id           = p.customer_id,
        anonymized            = p.anonymized,
        created_at            = p.created_at,
        credited_at           = p.credited_at,
        grant_valid_days      = p.grant_valid_days,
        updated_at            = v_now
     WHERE t.user_id = p.user_id AND t.id = p.id AND t IS DISTINCT FROM p
    RETURNING t.* INTO v_saved;
    IF v_saved.id IS NULL THEN
        RETURN p;
    END IF;
    RETURN v_saved;
END
$$;

CREATE OR REPLACE FUNCTION ledger_payment_apply_refunds(p_user_id text, p_session_id text, p_intent_id text,
    p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_charge_amount_refunded_minor bigint, p_refund_ids text[],
    p_refund_amounts_minor bigint[], p_refund_statuses text[], p_event_id text, p_event_type text,
    p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_open     record;
    v_merged   record;
    v_now      timestamptz := clock_timestamp();
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
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
                              updated_at = v_now
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

CREATE OR REPLACE FUNCTION ledger_anonymize(p_user_id text)
 RETURNS TABLE(already_anonymized boolean, payments_scrubbed_count integer, metadata_erased_count integer,
    balance bigint)
 LANGUAGE plpgsql
AS $$
DECLARE
    v_account   accounts%ROWTYPE;
    v_already   boolean;
    v_payments  integer;
    v_metadata  integer;
    v_now       timestamptz := clock_timestamp();
BEGIN
    -- An unknown user is recorded as anonymized too, so nothing can be credited to it later.
    INSERT INTO accounts (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    v_already := v_account.status = 'anonymized';
    UPDATE accounts a SET status = 'anonymized', updated_at = now()
     WHERE a.user_id = p_user_id AND a.status <> 'anonymized';
    UPDATE payments p SET customer_email = NULL, customer_id = NULL, anonymized = true, updated_at = v_now
     WHERE p.user_id = p_user_id AND (p.customer_email IS NOT NULL OR p.customer_id IS NOT NULL OR NOT p.anonymized);
    GET DIAGNOSTICS v_payments = ROW_COUNT;
    DELETE FROM transaction_metadata m WHERE m.user_id = p_user_id;
    GET DIAGNOSTICS v_metadata = ROW_COUNT;
    RETURN QUERY SELECT v_already, v_payments, v_metadata, v_account.balance;
END
$$;

CREATE OR REPLACE FUNCTION payment_refunds_save(p payments, p_refund_ids text[], p_amounts_minor bigint[],
    p_statuses text[])
 RETURNS void
 LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO payment_refunds AS t (user_id, refund_id, payment_id, amount_minor, status)
    SELECT p.user_id, g.refund_id, p.id, g.amount_minor, g.status
      FROM unnest(p_refund_ids, p_amounts_minor, p_statuses) AS g(refund_id, amount_minor, status)
    ON CONFLICT (user_id, refund_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
     WHERE payment_refund_rank(excluded.status) > payment_refund_rank(t.status);
END
$$;

CREATE OR REPLACE FUNCTION hold_expire_due(p_user_id text, p_now timestamp with time zone, p_limit integer)
 RETURNS integer
 LANGUAGE plpgsql
AS $$
DECLARE
    v_count     integer;
    v_released  bigint;
    v_ids       bigint[];
BEGIN
    -- Most calls find nothing due: a plain read says so on the user's shard. The statement below is one Citus
    -- plans in steps, sending its intermediate results to every worker (a transaction on each).
    IF NOT EXISTS (SELECT 1 FROM holds h
                    WHERE h.user_id = p_user_id AND h.status = 'active' AND h.expires_at <= p_now) THEN
        RETURN 0;
    END IF;
    WITH due AS (
        SELECT h.id FROM holds h
         WHERE h.user_id = p_user_id AND h.status = 'active' AND h.expires_at <= p_now
         ORDER BY h.expires_at, h.id
         LIMIT p_limit
    ), expired AS (
        UPDATE holds h SET status = 'expired', ended_at = h.expires_at
          FROM due
         WHERE h.user_id = p_user_id AND h.id = due.id AND h.status = 'active'
        RETURNING h.id, h.amount
    ), events AS (
        INSERT INTO hold_events AS e (user_id, hold_id, kind, held_delta, created_at)
        SELECT p_user_id, x.id, 'expired', -x.amount, p_now FROM expired x
        RETURNING e.held_delta, e.hold_id
    )
    SELECT count(*), COALESCE(-sum(events.held_delta), 0), array_agg(events.hold_id)
      INTO v_count, v_released, v_ids FROM events;
    IF v_count > 0 THEN
        UPDATE accounts a SET held = a.held - v_released WHERE a.user_id = p_user_id;
        PERFORM grant_unreserve(p_user_id, v_ids);
    END IF;
    RETURN v_count;
END
$$;

-- On Citus processed_events is a reference table: a write to it takes a cluster-wide lock at the moment of the
-- write, after the call has locked its accounts, and two settle batches of overlapping users then wait on each
-- other (one for an account the other holds, the other for that lock). Every call that records an event takes
-- this lock first, before any account; ledger_distribute() turns it on. On one PostgreSQL it does nothing.
CREATE FUNCTION payment_events_lock() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('credits.events_lock', true) = 'on' THEN
        PERFORM pg_advisory_xact_lock(7322201);  -- the ledger's only advisory lock
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION ledger_payment_settle(p_user_id text, p_session_id text, p_intent_id text,
    p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea,
    p_amount_paid_minor bigint, p_amount_tax_minor bigint, p_amount_discount_minor bigint,
    p_grant_valid_days integer DEFAULT 0)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
    v_entry    credit_transactions;
    v_credited boolean := false;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
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
    IF p_grant_valid_days > 0 AND v_payment.grant_valid_days <> p_grant_valid_days
       AND NOT payment_is_paid(v_payment) THEN
        -- How long the pack's credits stay valid (the catalog's valid_days), known by the time it is paid.
        UPDATE payments p SET grant_valid_days = p_grant_valid_days
         WHERE p.user_id = v_payment.user_id AND p.id = v_payment.id;
        v_payment.grant_valid_days := p_grant_valid_days;
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

CREATE OR REPLACE FUNCTION ledger_payment_expire(p_user_id text, p_session_id text, p_event_id text,
    p_event_type text, p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
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

CREATE OR REPLACE FUNCTION ledger_payment_fail(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text,
    p_customer_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
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
                                    v_account.status = 'active', 'FAILED');
    ELSIF v_payment.status = 'INIT' THEN
        v_payment.status := 'FAILED';
        v_payment := payment_save(v_payment);
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.payment := v_payment;
    r.outcome := 'applied';
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION ledger_payment_dispute(p_user_id text, p_session_id text, p_intent_id text,
    p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_dispute_id text, p_dispute_status text, p_event_id text,
    p_event_type text, p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_open     record;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
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

CREATE OR REPLACE FUNCTION ledger_event_record(p_event_id text, p_event_type text, p_payload_sha256 bytea,
    p_outcome text, p_detail text, p_user_id text, p_intent_id text)
 RETURNS TABLE(result text, recorded_outcome text)
 LANGUAGE plpgsql
AS $$
DECLARE
    v_payment_id  bigint;
    v_event       processed_events;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    SELECT t.id INTO v_payment_id FROM payments t
     WHERE t.payment_intent_id = p_intent_id AND (p_user_id IS NULL OR t.user_id = p_user_id)
     ORDER BY t.id
     LIMIT 1;
    INSERT INTO processed_events AS e (event_id, event_type, outcome, payload_sha256, user_id, payment_id,
                                       payment_intent_id, detail)
    VALUES (p_event_id, p_event_type, p_outcome, p_payload_sha256, p_user_id, v_payment_id, p_intent_id, p_detail)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING e.* INTO v_event;
    IF v_event.event_id IS NOT NULL THEN
        result := 'applied';
        recorded_outcome := p_outcome;
        RETURN NEXT;
        RETURN;
    END IF;
    v_event := payment_event_find(p_event_id);
    result := CASE WHEN v_event.payload_sha256 = p_payload_sha256 THEN 'duplicate_event'
                   ELSE 'event_payload_mismatch' END;
    recorded_outcome := v_event.outcome;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION ledger_payment_open(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text,
    p_customer_id text)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    v_account := payment_lock_account(p_user_id);
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    r := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                       p_amount_minor, p_currency_code, p_customer_email, p_customer_id, true);
    IF r.outcome = 'conflict' THEN
        RETURN r;
    END IF;
    r.replayed := r.outcome = 'found';
    IF NOT r.replayed THEN
        r.payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id, true, 'INIT');
    END IF;
    r.outcome := 'applied';
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := COALESCE(p_now, ledger_now());
    v_users    text[];
    v_user     text;
    v_expired  integer := 0;
BEGIN
    SELECT array_agg(DISTINCT d.user_id ORDER BY d.user_id) INTO v_users FROM (
        SELECT h.user_id FROM holds h
         WHERE h.status = 'active' AND h.expires_at <= v_now
         ORDER BY h.expires_at
         LIMIT p_limit
    ) d;
    -- One account at a time (on Citus, one shard per lock); an account locked by a call now is left to a later sweep.
    FOREACH v_user IN ARRAY COALESCE(v_users, '{}') LOOP
        EXIT WHEN v_expired >= p_limit;
        PERFORM 1 FROM accounts a WHERE a.user_id = v_user FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_expired := v_expired + hold_expire_due(v_user, v_now, p_limit - v_expired);
    END LOOP;
    RETURN v_expired;
END
$$;

CREATE OR REPLACE FUNCTION ledger_expire_grants(p_now timestamptz, p_limit integer,
                                                OUT expired bigint, OUT expired_paid bigint, OUT grants integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := COALESCE(p_now, ledger_now());
    v_users    text[];
    v_user     text;
    v_balance  bigint;
    v_done     record;
BEGIN
    expired := 0;
    expired_paid := 0;
    grants := 0;
    SELECT array_agg(DISTINCT d.user_id ORDER BY d.user_id) INTO v_users FROM (
        SELECT g.user_id FROM credit_grants g
         WHERE g.remaining > g.reserved AND g.expires_at <= v_now
         ORDER BY g.expires_at
         LIMIT p_limit
    ) d;
    -- One account at a time (on Citus, one shard per lock); an account locked by a call now is left to a later sweep.
    FOREACH v_user IN ARRAY COALESCE(v_users, '{}') LOOP
        SELECT a.balance INTO v_balance FROM accounts a WHERE a.user_id = v_user FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO STRICT v_done FROM grant_expire_due(v_user, v_now, v_balance);
        IF v_done.grants > 0 THEN
            UPDATE accounts a SET balance = a.balance - v_done.expired, updated_at = now() WHERE a.user_id = v_user;
            expired := expired + v_done.expired;
            expired_paid := expired_paid + v_done.expired_paid;
            grants := grants + v_done.grants;
        END IF;
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    op.execute(TYPES_SQL)
    op.execute(TRIGGERS_SQL)
    op.execute(FUNCTIONS_SQL)
    op.execute("SELECT ledger_distribute()")


# Each function restored on downgrade: the revision that last wrote it.
RESTORED_FROM = {
    "payment_record_paid": "0006_checkout_outcomes.py",
    "payment_save": "0011_credit_grants.py",
    "ledger_payment_apply_refunds": "0008_payment_change_opening.py",
    "ledger_anonymize": "0001_ledger_schema.py",
    "payment_refunds_save": "0005_refunds.py",
    "ledger_expire_holds": "0003_holds.py",
    "hold_expire_due": "0011_credit_grants.py",
    "ledger_payment_settle": "0011_credit_grants.py",
    "ledger_payment_expire": "0006_checkout_outcomes.py",
    "ledger_payment_fail": "0002_payment_lifecycle.py",
    "ledger_payment_dispute": "0008_payment_change_opening.py",
    "ledger_event_record": "0002_payment_lifecycle.py",
    "ledger_payment_open": "0002_payment_lifecycle.py",
    "ledger_expire_grants": "0011_credit_grants.py",
    "refuse_change_to_append_only_table": "0001_ledger_schema.py",
}


# One statement per execute: Citus refuses a SET among several commands sent at once.
DOWNGRADE_STATEMENTS = (
    "DROP FUNCTION ledger_distribute()",
    "DROP FUNCTION payment_events_lock()",
    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET credits.events_lock', current_database()); END $$",
    "DROP TYPE grant_shown",
    "SET LOCAL citus.enable_unsafe_triggers = on",  # a placeholder setting on plain PostgreSQL, harmless
    *(
        statement
        for table in APPEND_ONLY_TABLES
        for statement in (
            f"DROP TRIGGER {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table()",
        )
    ),
    "DROP TRIGGER holds_no_delete ON holds",
    "CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds"
    " FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table()",
)


def downgrade() -> None:
    for statement in DOWNGRADE_STATEMENTS:
        op.execute(statement)
    for name, revision_file in RESTORED_FROM.items():
        text = Path(__file__).with_name(revision_file).read_text(encoding="utf-8")
        op.execute(_as_replacement(text, name))


def _as_replacement(revision_text: str, name: str) -> str:
    """One function exactly as an earlier revision wrote it, as CREATE OR REPLACE."""
    pattern = rf"^CREATE (?:OR REPLACE )?FUNCTION (?:public\.)?{name}\(.*?\bAS (\$\w*\$)$.*?^\1;+$"
    found = re.search(pattern, revision_text, re.MULTILINE | re.DOTALL)
    assert found is not None, f"{name} not found"
    definition = re.sub(r";+$", ";", found.group(0))
    return re.sub(r"^CREATE (?:OR REPLACE )?FUNCTION", "CREATE OR REPLACE FUNCTION", definition, count=1)
