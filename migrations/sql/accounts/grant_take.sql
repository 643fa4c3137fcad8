-- grant_take: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_take(p_user_id text, p_entry_id bigint, p_grant_id bigint, p_amount bigint, p_reserved boolean, p_hold_id bigint)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_left  bigint := p_amount;
    v_take  bigint;
    r       record;
BEGIN
    UPDATE credit_grants g SET remaining = g.remaining - p_amount,
                               reserved = g.reserved - CASE WHEN p_reserved THEN p_amount ELSE 0 END
     WHERE g.user_id = p_user_id AND g.id = p_grant_id;
    INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
    VALUES (p_user_id, p_entry_id, p_grant_id, -p_amount);
    IF NOT p_reserved THEN
        RETURN;
    END IF;
    FOR r IN SELECT hg.hold_id, hg.amount FROM hold_grants hg
              WHERE hg.user_id = p_user_id AND hg.grant_id = p_grant_id AND hg.amount > 0
                AND (p_hold_id IS NULL OR hg.hold_id = p_hold_id)
              ORDER BY hg.hold_id LOOP
        EXIT WHEN v_left = 0;
        v_take := LEAST(v_left, r.amount);
        UPDATE hold_grants hg SET amount = hg.amount - v_take
         WHERE hg.user_id = p_user_id AND hg.hold_id = r.hold_id AND hg.grant_id = p_grant_id;
        v_left := v_left - v_take;
    END LOOP;
    ASSERT v_left = 0, 'grant_take: the holds reserve less of the grant than it says';
END
$function$;
