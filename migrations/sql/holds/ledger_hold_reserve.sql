-- ledger_hold_reserve: current definition (last changed by migrations/versions/0003_holds.py).
CREATE OR REPLACE FUNCTION public.ledger_hold_reserve(p_user_id text, p_amount bigint, p_idempotency_key text, p_fingerprint bytea, p_reason text, p_ttl_seconds integer, p_active_max integer, p_now timestamp with time zone)
 RETURNS hold_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
    v_expired  bigint;
BEGIN
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        -- No account: nothing to hold, and no hold of this key can exist (a hold needs its account).
        r.outcome := 'insufficient_credits';
        r.balance := 0;
        r.held := 0;
        RETURN r;
    END IF;
    v_now := COALESCE(p_now, ledger_now());
    IF hold_expire_due(p_user_id, v_now, NULL) > 0 THEN
        SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id;
    END IF;
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        r.outcome := CASE WHEN v_hold.request_fingerprint = p_fingerprint THEN 'replayed'
                          ELSE 'idempotency_key_reused' END;
        r.hold := v_hold;
        RETURN r;
    END IF;
    v_expired := grant_expired_rest(p_user_id, v_now);
    r.balance := v_account.balance - v_expired;
    r.held := v_account.held;
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    IF v_account.balance - v_expired - v_account.held < p_amount THEN
        r.outcome := 'insufficient_credits';
        RETURN r;
    END IF;
    IF (SELECT count(*) FROM holds h WHERE h.user_id = p_user_id AND h.status = 'active') >= p_active_max THEN
        r.outcome := 'too_many_active_holds';
        RETURN r;
    END IF;
    INSERT INTO holds AS h (user_id, amount, idempotency_key, request_fingerprint, reason, created_at, expires_at)
    VALUES (p_user_id, p_amount, p_idempotency_key, p_fingerprint, p_reason, v_now,
            v_now + make_interval(secs => p_ttl_seconds))
    RETURNING h.* INTO v_hold;
    UPDATE accounts a SET held = a.held + p_amount WHERE a.user_id = p_user_id;
    PERFORM grant_reserve(p_user_id, v_hold.id, p_amount, v_now);
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)
    VALUES (p_user_id, v_hold.id, 'reserved', p_amount, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    r.held := v_account.held + p_amount;
    RETURN r;
END
$function$;
