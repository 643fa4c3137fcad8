"""The payment lifecycle: open, settle, fail, refund, dispute and record_event as server-side functions.

One call per RPC, each one transaction and one round trip (the house style of ledger_post).

Locking: every mutation first locks the user's `accounts` row (created if missing), the same row
ledger_post and ledger_anonymize lock. A per-user lock is needed because two racing events about one
payment may share no payment id (a checkout.session.completed knows the session and the intent, a
charge.refunded only the intent, an opened row only the session): the user id is the one key they all
know. The account row is chosen over pg_advisory_xact_lock(hash(user_id)) because it is the lock the
journal writers already take: one lock order for everyone (account row, then payment rows, then the
journal), so a settle cannot deadlock with an Anonymize or a Debit of the same user, and Anonymize
cannot slip between the "is the account active?" check and the purchase credit.

The payment state is cumulative, so the final state is a function of the facts seen, not of their
order (SPEC invariant 5): the purchase is credited once (credit_transaction_id), amount_refunded_minor
only grows, the dispute status only moves up its rank, and after each change the journal is brought
to the clawback target (payment_clawback_target) by one entry of the difference.

Revision ID: 0002_payment_lifecycle
Revises: 0001_ledger_schema
Create Date: 2026-11-27
"""

from alembic import op

revision = "0002_payment_lifecycle"
down_revision = "0001_ledger_schema"
branch_labels = None
depends_on = None

SCHEMA_SQL = r"""
-- RecordEvent keeps the intent an ignored or refused event was about, even when no payment row exists.
ALTER TABLE processed_events ADD COLUMN payment_intent_id text CHECK (length(payment_intent_id) <= 255);
CREATE INDEX processed_events_payment_id_idx ON processed_events (payment_id) WHERE payment_id IS NOT NULL;
-- GetPayment by the ledger's id or by session id, without the user id.
CREATE INDEX payments_id_idx ON payments (id);
CREATE INDEX payments_checkout_session_id_idx ON payments (checkout_session_id);
-- ListPayments of one user, newest first.
CREATE INDEX payments_user_id_created_at_idx ON payments (user_id, created_at, id);

-- What every payment function answers. outcome: 'applied' | 'duplicate_event' | a refusal
-- ('conflict', 'not_found', 'event_payload_mismatch', 'refund_exceeds_amount', 'account_anonymized');
-- internal helpers also use 'found' / 'missing'.
CREATE TYPE payment_result AS (
    outcome        text,
    detail         text,
    payment        payments,
    entry          credit_transactions,
    credited       boolean,
    credits_moved  bigint,
    replayed       boolean
);
"""

# Pure functions of a payment row: the rules, in one place.
RULES_SQL = r"""
-- A dispute status only moves up this rank; won and lost are final (same top rank).
CREATE FUNCTION payment_dispute_rank(p_status text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status
        WHEN 'warning_needs_response' THEN 1
        WHEN 'warning_under_review'   THEN 2
        WHEN 'warning_closed'         THEN 3
        WHEN 'needs_response'         THEN 4
        WHEN 'under_review'           THEN 5
        WHEN 'won'                    THEN 6
        WHEN 'lost'                   THEN 6
        ELSE 0
    END
$$;

-- A real chargeback (not an inquiry, not won): the credits are taken back while it lasts.
CREATE FUNCTION payment_dispute_is_real(p_status text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(p_status IN ('needs_response', 'under_review', 'lost'), false)
$$;

-- The credits that must be clawed back, given everything known: never more than was credited.
-- credits x refunded / amount can exceed bigint (1e9 x 1e12), hence numeric; div() floors (all >= 0).
CREATE FUNCTION payment_clawback_target(p payments) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p.credit_transaction_id IS NULL THEN 0
        WHEN payment_dispute_is_real(p.dispute_status) THEN p.credits
        WHEN p.amount_minor = 0 THEN 0
        WHEN p.amount_refunded_minor >= p.amount_minor THEN p.credits
        ELSE div(p.credits::numeric * p.amount_refunded_minor, p.amount_minor)::bigint
    END
$$;

-- INIT and FAILED are not paid and stay as they are; a paid payment's status follows from its facts.
CREATE FUNCTION payment_status_after(p payments) RETURNS payment_status LANGUAGE sql IMMUTABLE AS $$
    SELECT (CASE
        WHEN p.status IN ('INIT', 'FAILED') THEN p.status::text
        WHEN payment_dispute_is_real(p.dispute_status) THEN 'CHARGEBACK'
        WHEN p.amount_minor > 0 AND p.amount_refunded_minor >= p.amount_minor THEN 'REFUNDED'
        WHEN p.credit_transaction_id IS NOT NULL THEN 'CREDITED'
        ELSE 'PAID'
    END)::payment_status
$$;

-- True when a price is given and differs from the payment's.
CREATE FUNCTION payment_price_differs(
    p payments, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text
) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p_package_id IS NOT NULL
       AND (p.package_id, p.credits, p.amount_minor, p.currency_code)
           IS DISTINCT FROM (p_package_id, p_credits, p_amount_minor, p_currency_code)
$$;

CREATE FUNCTION payment_is_paid(p payments) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p.status NOT IN ('INIT', 'FAILED')
$$;
"""

# Row-level helpers. All of them assume the caller holds the user's account lock.
ROWS_SQL = r"""
-- The per-user lock (see the module docstring): the account row, created when missing.
CREATE FUNCTION payment_lock_account(p_user_id text) RETURNS accounts LANGUAGE plpgsql AS $$
DECLARE
    v_account accounts;
BEGIN
    INSERT INTO accounts (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    RETURN v_account;
END
$$;

-- Writes every mutable field of p; a row equal to the stored one is not touched (stale events change
-- nothing, not even updated_at).
CREATE FUNCTION payment_save(p payments) RETURNS payments LANGUAGE plpgsql AS $$
DECLARE
    v_saved payments;
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
        updated_at            = clock_timestamp()
     WHERE t.user_id = p.user_id AND t.id = p.id AND t IS DISTINCT FROM p
    RETURNING t.* INTO v_saved;
    IF v_saved.id IS NULL THEN
        RETURN p;
    END IF;
    RETURN v_saved;
END
$$;

CREATE FUNCTION payment_insert(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_pii_allowed boolean, p_status payment_status
) RETURNS payments LANGUAGE plpgsql AS $$
DECLARE
    v_payment payments;
BEGIN
    INSERT INTO payments AS t (user_id, checkout_session_id, payment_intent_id, charge_id, package_id, credits,
                               amount_minor, currency_code, status, customer_email, customer_id, anonymized)
    VALUES (p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor,
            p_currency_code, p_status,
            CASE WHEN p_pii_allowed THEN p_customer_email END,
            CASE WHEN p_pii_allowed THEN p_customer_id END,
            NOT p_pii_allowed)
    RETURNING t.* INTO v_payment;
    RETURN v_payment;
END
$$;

-- Appends one journal entry of a payment and moves the balance; may go below zero (refunds and
-- chargebacks: SPEC invariant 2). The key derives from the payment id, the fingerprint from the entry.
CREATE FUNCTION payment_journal(
    p_user_id text, p_payment_id bigint, p_delta bigint, p_kind text, p_key text, p_reason text
) RETURNS credit_transactions LANGUAGE plpgsql AS $$
DECLARE
    v_before  bigint;
    v_balance bigint;
    v_entry   credit_transactions;
BEGIN
    SELECT a.balance INTO STRICT v_before FROM accounts a WHERE a.user_id = p_user_id;
    UPDATE accounts a SET balance = a.balance + p_delta, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_before + p_delta, 'balance_after does not follow from delta';
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, payment_id)
    VALUES (p_user_id, p_delta, v_balance, p_kind, p_key,
            sha256(convert_to(concat_ws('|', 'payment', p_payment_id, p_kind, p_delta, p_key, p_reason), 'UTF8')),
            p_reason, p_payment_id)
    RETURNING t.* INTO v_entry;
    RETURN v_entry;
END
$$;

-- Brings the journal to the payment's clawback target with one entry of the difference, derives the
-- status, and saves. credits_moved: negative for a clawback, positive for a reinstatement.
CREATE FUNCTION payment_apply(p payments) RETURNS payment_result LANGUAGE plpgsql AS $$
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
        ASSERT r.credits_moved < 0 OR p.dispute_status = 'won', 'credits reinstated without a won dispute';
        IF r.credits_moved > 0 THEN
            v_kind := 'chargeback_reversal';
            v_reason := format('chargeback reversal of payment %s: dispute won', p.id);
        ELSIF payment_dispute_is_real(p.dispute_status) THEN
            v_kind := 'chargeback';
            v_reason := format('chargeback of payment %s: dispute %s', p.id, p.dispute_status);
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

-- Two rows turned out to be one payment: one known by its session only (opened at checkout), one by
-- its intent only (a refund, a dispute or a payment_intent.succeeded that came first). Keeps the
-- credited (else paid, else older) row, folds the other's facts into it and deletes the other. Both
-- credited cannot be merged without a double credit having happened: that is a conflict to report.
CREATE FUNCTION payment_merge(p_by_session payments, p_by_intent payments) RETURNS payment_result
LANGUAGE plpgsql AS $$
DECLARE
    r       payment_result;
    v_keep  payments;
    v_drop  payments;
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

    DELETE FROM payments t WHERE t.user_id = v_drop.user_id AND t.id = v_drop.id;
    UPDATE processed_events e SET payment_id = v_keep.id WHERE e.payment_id = v_drop.id;
    v_keep.checkout_session_id := COALESCE(v_keep.checkout_session_id, v_drop.checkout_session_id);
    v_keep.payment_intent_id := COALESCE(v_keep.payment_intent_id, v_drop.payment_intent_id);
    v_keep.charge_id := COALESCE(v_keep.charge_id, v_drop.charge_id);
    v_keep.customer_email := COALESCE(v_keep.customer_email, v_drop.customer_email);
    v_keep.customer_id := COALESCE(v_keep.customer_id, v_drop.customer_id);
    v_keep.anonymized := v_keep.anonymized OR v_drop.anonymized;
    v_keep.amount_refunded_minor := GREATEST(v_keep.amount_refunded_minor, v_drop.amount_refunded_minor);
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

-- Finds (and locks) the user's payment named by the session and/or intent id; outcome 'found',
-- 'missing' or 'conflict'. Checks the given ids and price against the row, fills in the ids the row
-- lacked (and the customer's data when allowed), merging two rows that this call proves are one.
CREATE FUNCTION payment_match(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_pii_allowed boolean
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r             payment_result;
    v_by_session  payments;
    v_by_intent   payments;
    v_payment     payments;
BEGIN
    SELECT * INTO v_by_session FROM payments t
     WHERE t.user_id = p_user_id AND t.checkout_session_id = p_session_id FOR UPDATE;
    SELECT * INTO v_by_intent FROM payments t
     WHERE t.user_id = p_user_id AND t.payment_intent_id = p_intent_id FOR UPDATE;
    IF v_by_session.id IS NULL AND v_by_intent.id IS NULL THEN
        r.outcome := 'missing';
        RETURN r;
    END IF;
    IF v_by_session.id IS NOT NULL AND v_by_intent.id IS NOT NULL AND v_by_session.id <> v_by_intent.id THEN
        r := payment_merge(v_by_session, v_by_intent);
        IF r.outcome <> 'found' THEN
            RETURN r;
        END IF;
        v_payment := r.payment;
    ELSIF v_by_session.id IS NOT NULL THEN
        v_payment := v_by_session;
    ELSE
        v_payment := v_by_intent;
    END IF;

    r.outcome := 'conflict';
    r.payment := v_payment;
    IF p_session_id IS NOT NULL AND v_payment.checkout_session_id <> p_session_id THEN
        r.detail := format('payment %s has another checkout session', v_payment.id);
        RETURN r;
    END IF;
    IF p_intent_id IS NOT NULL AND v_payment.payment_intent_id <> p_intent_id THEN
        r.detail := format('payment %s has another payment intent', v_payment.id);
        RETURN r;
    END IF;
    IF payment_price_differs(v_payment, p_package_id, p_credits, p_amount_minor, p_currency_code) THEN
        r.detail := format('payment %s has another package, credits, amount or currency', v_payment.id);
        RETURN r;
    END IF;
    v_payment.checkout_session_id := COALESCE(v_payment.checkout_session_id, p_session_id);
    v_payment.payment_intent_id := COALESCE(v_payment.payment_intent_id, p_intent_id);
    -- The first charge id seen is kept: the only charges events name are the succeeded one.
    v_payment.charge_id := COALESCE(v_payment.charge_id, p_charge_id);
    IF p_pii_allowed AND NOT v_payment.anonymized THEN
        v_payment.customer_email := COALESCE(v_payment.customer_email, p_customer_email);
        v_payment.customer_id := COALESCE(v_payment.customer_id, p_customer_id);
    END IF;
    r.payment := payment_save(v_payment);
    r.outcome := 'found';
    RETURN r;
END
$$;

CREATE FUNCTION payment_event_find(p_event_id text) RETURNS processed_events LANGUAGE sql STABLE AS $$
    SELECT * FROM processed_events e WHERE e.event_id = p_event_id
$$;

-- The answer to an event id seen before: the same payload is a duplicate (nothing more happens, the
-- current payment is returned), another payload is refused.
CREATE FUNCTION payment_event_replay(
    p_event processed_events, p_payload_sha256 bytea, p_user_id text, p_session_id text, p_intent_id text
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_entry    credit_transactions;
BEGIN
    IF p_event.payload_sha256 <> p_payload_sha256 THEN
        r.outcome := 'event_payload_mismatch';
        r.detail := format('event %s was processed before with other data', p_event.event_id);
        RETURN r;
    END IF;
    SELECT * INTO v_payment FROM payments t
     WHERE t.user_id = p_user_id
       AND (t.id = p_event.payment_id OR t.checkout_session_id = p_session_id OR t.payment_intent_id = p_intent_id)
     ORDER BY t.id IS NOT DISTINCT FROM p_event.payment_id DESC, t.id
     LIMIT 1;
    IF FOUND THEN
        r.payment := v_payment;
        SELECT * INTO v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_payment.credit_transaction_id;
        IF FOUND THEN
            r.entry := v_entry;
        END IF;
    END IF;
    r.outcome := 'duplicate_event';
    r.credited := false;
    r.credits_moved := 0;
    RETURN r;
END
$$;

-- Records an applied event in the transaction of its effect. The event id was checked absent under the
-- account lock; a RecordEvent (which takes no account lock) may still have inserted it meanwhile. Then
-- the whole transaction is rolled back as a serialization failure: the caller's retry sees a duplicate.
CREATE FUNCTION payment_event_applied(
    p_event_id text, p_event_type text, p_payload_sha256 bytea, p_user_id text, p_payment_id bigint,
    p_intent_id text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_event_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO processed_events (event_id, event_type, outcome, payload_sha256, user_id, payment_id, payment_intent_id)
    VALUES (p_event_id, p_event_type, 'applied', p_payload_sha256, p_user_id, p_payment_id, p_intent_id)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % was recorded concurrently', p_event_id USING ERRCODE = 'serialization_failure';
    END IF;
END
$$;
"""

# The RPCs. Each: lock the user, answer a seen event id, match the payment, apply, record the event.
OPEN_SETTLE_FAIL_SQL = r"""
CREATE FUNCTION ledger_payment_open(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
BEGIN
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

-- Settle: INIT or FAILED -> paid, with the purchase entry when the account is active (an anonymized
-- account's payment stays PAID, uncredited, for an operator). Refunds and disputes recorded before the
-- settle are applied right after the purchase entry. A later settle of the same payment credits nothing.
--
-- A settle after FAILED credits the payment: a settle is proof that Stripe holds the money (a paid
-- session, a succeeded intent or charge), while a failure is one attempt's report. Stripe cannot both
-- fail and succeed one async Checkout payment, so seeing both means an earlier attempt failed (a
-- declined card retried on the same intent) or the reconciler repairs a missing credit; in both cases
-- the money is there. It also keeps invariant 5 unconditional: fail+settle in either order -> CREDITED.
CREATE FUNCTION ledger_payment_settle(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text,
    p_event_id text, p_event_type text, p_payload_sha256 bytea
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
    v_payment := r.payment;
    IF NOT v_credited AND v_payment.credit_transaction_id IS NOT NULL THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_payment.credit_transaction_id;
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.entry := CASE WHEN v_entry.id IS NOT NULL THEN v_entry END;
    r.credited := v_credited;
    r.credits_moved := CASE WHEN v_credited THEN v_payment.credits ELSE 0 END;
    RETURN r;
END
$$;

-- Fail: INIT -> FAILED; a payment paid already (or failed already) is left as it is.
CREATE FUNCTION ledger_payment_fail(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text,
    p_event_id text, p_event_type text, p_payload_sha256 bytea
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
"""

REFUND_DISPUTE_SQL = r"""
-- Refund: records Stripe's cumulative amount_refunded (a smaller or equal one is stale and changes
-- nothing) and claws back credits x refunded / amount. A refund before the settle is recorded on an
-- INIT payment (created from the given price when missing) and clawed back when the settle comes.
CREATE FUNCTION ledger_payment_refund(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_amount_refunded_minor bigint,
    p_event_id text, p_event_type text, p_payload_sha256 bytea
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
    IF p_amount_refunded_minor > v_payment.amount_minor THEN
        r.outcome := 'refund_exceeds_amount';
        r.detail := format('amount_refunded_minor %s exceeds the amount %s of payment %s',
                           p_amount_refunded_minor, v_payment.amount_minor, v_payment.id);
        RETURN r;
    END IF;
    v_payment.amount_refunded_minor := GREATEST(v_payment.amount_refunded_minor, p_amount_refunded_minor);
    r := payment_apply(v_payment);
    v_payment := r.payment;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.credits_moved := -r.credits_moved;  -- answered as credits clawed back
    RETURN r;
END
$$;

-- Without a user id (or without session and intent ids) the payment is found by its ids alone; it
-- must exist then, and exactly one payment may match. Sets the OUT ids to the row's.
CREATE FUNCTION payment_resolve(
    INOUT p_user_id text, INOUT p_session_id text, INOUT p_intent_id text, p_charge_id text,
    OUT resolve_outcome text
) LANGUAGE plpgsql AS $$
DECLARE
    v_found  payments;
BEGIN
    SELECT * INTO v_found FROM payments t
     WHERE (p_user_id IS NULL OR t.user_id = p_user_id)
       AND (t.payment_intent_id = p_intent_id OR t.charge_id = p_charge_id OR t.checkout_session_id = p_session_id)
     ORDER BY t.id
     LIMIT 1;
    IF NOT FOUND THEN
        resolve_outcome := 'not_found';
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM payments t
                WHERE (p_user_id IS NULL OR t.user_id = p_user_id) AND t.id <> v_found.id
                  AND (t.payment_intent_id = p_intent_id OR t.charge_id = p_charge_id
                       OR t.checkout_session_id = p_session_id)) THEN
        resolve_outcome := 'conflict';
        RETURN;
    END IF;
    p_user_id := v_found.user_id;
    IF p_session_id IS NULL AND p_intent_id IS NULL THEN
        p_session_id := v_found.checkout_session_id;
        p_intent_id := v_found.payment_intent_id;
    END IF;
    resolve_outcome := 'found';
END
$$;

-- Dispute: the status only moves up its rank (won and lost are final; a stale status changes nothing).
-- A real dispute claws back every credit (CHARGEBACK); won reinstates down to the refund-based target;
-- inquiries (warning_*) move no money.
CREATE FUNCTION ledger_payment_dispute(
    p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text,
    p_customer_email text, p_customer_id text, p_dispute_id text, p_dispute_status text,
    p_event_id text, p_event_type text, p_payload_sha256 bytea
) RETURNS payment_result LANGUAGE plpgsql AS $$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
    v_resolved record;
BEGIN
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

-- RecordEvent: an event that moved no money (ignored type, refused data). No account lock: it only
-- inserts its own processed_events row; a concurrent insert of the same id is waited for by the
-- unique index, then answered as a duplicate (or a payload mismatch).
CREATE FUNCTION ledger_event_record(
    p_event_id text, p_event_type text, p_payload_sha256 bytea, p_outcome text, p_detail text,
    p_user_id text, p_intent_id text
) RETURNS TABLE (result text, recorded_outcome text) LANGUAGE plpgsql AS $$
DECLARE
    v_payment_id  bigint;
    v_event       processed_events;
BEGIN
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
"""

DOWNGRADE_SQL = r"""
DROP FUNCTION ledger_event_record(text, text, bytea, text, text, text, text);
DROP FUNCTION ledger_payment_dispute(text, text, text, text, text, bigint, bigint, text, text, text, text, text,
                                     text, text, bytea);
DROP FUNCTION payment_resolve(text, text, text, text);
DROP FUNCTION ledger_payment_refund(text, text, text, text, text, bigint, bigint, text, text, text, bigint,
                                    text, text, bytea);
DROP FUNCTION ledger_payment_fail(text, text, text, text, text, bigint, bigint, text, text, text, text, text, bytea);
DROP FUNCTION ledger_payment_settle(text, text, text, text, text, bigint, bigint, text, text, text, text, text,
                                    bytea);
DROP FUNCTION ledger_payment_open(text, text, text, text, text, bigint, bigint, text, text, text);
DROP FUNCTION payment_event_applied(text, text, bytea, text, bigint, text);
DROP FUNCTION payment_event_replay(processed_events, bytea, text, text, text);
DROP FUNCTION payment_event_find(text);
DROP FUNCTION payment_match(text, text, text, text, text, bigint, bigint, text, text, text, boolean);
DROP FUNCTION payment_merge(payments, payments);
DROP FUNCTION payment_apply(payments);
DROP FUNCTION payment_journal(text, bigint, bigint, text, text, text);
DROP FUNCTION payment_insert(text, text, text, text, text, bigint, bigint, text, text, text, boolean, payment_status);
DROP FUNCTION payment_save(payments);
DROP FUNCTION payment_lock_account(text);
DROP FUNCTION payment_is_paid(payments);
DROP FUNCTION payment_price_differs(payments, text, bigint, bigint, text);
DROP FUNCTION payment_status_after(payments);
DROP FUNCTION payment_clawback_target(payments);
DROP FUNCTION payment_dispute_is_real(text);
DROP FUNCTION payment_dispute_rank(text);
DROP TYPE payment_result;
DROP INDEX payments_user_id_created_at_idx;
DROP INDEX payments_checkout_session_id_idx;
DROP INDEX payments_id_idx;
DROP INDEX processed_events_payment_id_idx;
ALTER TABLE processed_events DROP COLUMN payment_intent_id;
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)
    op.execute(RULES_SQL)
    op.execute(ROWS_SQL)
    op.execute(OPEN_SETTLE_FAIL_SQL)
    op.execute(REFUND_DISPUTE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
