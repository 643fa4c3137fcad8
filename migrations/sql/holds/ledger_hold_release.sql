-- ledger_hold_release: current definition (last changed by migrations/versions/0003_holds.py).
CREATE OR REPLACE FUNCTION public.ledger_hold_release(p_user_id text, p_hold_id bigint, p_now timestamp with time zone)
 RETURNS hold_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
BEGIN
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    v_now := COALESCE(p_now, ledger_now());
    PERFORM hold_expire_due(p_user_id, v_now, NULL);
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.id = p_hold_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    r.hold := v_hold;
    IF v_hold.status = 'released' THEN
        r.outcome := 'replayed';
        RETURN r;
    END IF;
    IF v_hold.status <> 'active' THEN
        r.outcome := 'hold_not_active';
        RETURN r;
    END IF;
    UPDATE accounts a SET held = a.held - v_hold.amount WHERE a.user_id = p_user_id;
    PERFORM grant_unreserve(p_user_id, ARRAY[v_hold.id]);
    UPDATE holds h SET status = 'released', ended_at = v_now
     WHERE h.user_id = p_user_id AND h.id = v_hold.id
    RETURNING h.* INTO v_hold;
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)
    VALUES (p_user_id, v_hold.id, 'released', -v_hold.amount, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    RETURN r;
END
$function$;
