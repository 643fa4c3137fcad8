-- ledger_hold_capture: current definition (last changed by migrations/versions/0003_holds.py).
CREATE OR REPLACE FUNCTION public.ledger_hold_capture(p_user_id text, p_hold_id bigint, p_amount bigint, p_idempotency_key text, p_fingerprint bytea, p_now timestamp with time zone)
 RETURNS hold_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
    v_entry    credit_transactions;
    v_amount   bigint;
    v_balance  bigint;
    v_expired  bigint;
BEGIN
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    v_now := COALESCE(p_now, ledger_now());
    IF hold_expire_due(p_user_id, v_now, NULL) > 0 THEN
        SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id;
    END IF;
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.capture_idempotency_key = p_idempotency_key;
    IF FOUND THEN
        r.hold := v_hold;
        IF v_hold.capture_fingerprint <> p_fingerprint THEN
            r.outcome := 'idempotency_key_reused';
            RETURN r;
        END IF;
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_hold.capture_transaction_id;
        r.entry := v_entry;
        r.outcome := 'replayed';
        RETURN r;
    END IF;
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.id = p_hold_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    r.hold := v_hold;
    v_expired := grant_expired_rest(p_user_id, v_now);
    r.balance := v_account.balance - v_expired;
    r.held := v_account.held;
    IF v_hold.status <> 'active' THEN
        r.outcome := 'hold_not_active';
        RETURN r;
    END IF;
    v_amount := CASE WHEN p_amount = 0 THEN v_hold.amount ELSE p_amount END;
    IF v_amount > v_hold.amount THEN
        r.outcome := 'capture_exceeds_hold';
        RETURN r;
    END IF;
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    -- A capture is a spend: it never takes the balance below zero (SPEC invariant 2). Reachable only when a
    -- refund or chargeback took back credits that were held.
    IF v_account.balance - v_expired < v_amount THEN
        r.outcome := 'insufficient_credits';
        RETURN r;
    END IF;

    UPDATE accounts a SET balance = a.balance - v_amount, held = a.held - v_hold.amount, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_account.balance - v_amount, 'balance_after does not follow from delta';
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, hold_id)
    VALUES (p_user_id, -v_amount, v_balance, 'hold_capture', format('hold:%s:capture', v_hold.id),
            sha256(convert_to(concat_ws('|', 'hold', v_hold.id, 'capture', -v_amount, v_hold.reason), 'UTF8')),
            v_hold.reason, v_hold.id)
    RETURNING t.* INTO v_entry;
    r.spent_paid := grant_burn(v_entry, v_now);
    PERFORM grant_unreserve(p_user_id, ARRAY[v_hold.id]);
    UPDATE holds h SET status = 'captured', captured_amount = v_amount, ended_at = v_now,
                       capture_idempotency_key = p_idempotency_key, capture_fingerprint = p_fingerprint,
                       capture_transaction_id = v_entry.id
     WHERE h.user_id = p_user_id AND h.id = v_hold.id
    RETURNING h.* INTO v_hold;
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, captured_amount, transaction_id, created_at)
    VALUES (p_user_id, v_hold.id, 'captured', -v_hold.amount, v_amount, v_entry.id, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    r.entry := v_entry;
    r.balance := v_balance;
    r.held := v_account.held - v_hold.amount;
    RETURN r;
END
$function$;
