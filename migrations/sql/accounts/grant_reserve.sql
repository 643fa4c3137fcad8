-- grant_reserve: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_reserve(p_user_id text, p_hold_id bigint, p_amount bigint, p_now timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_left  bigint := p_amount;
    v_take  bigint;
    g       record;
BEGIN
    FOR g IN SELECT c.id, c.remaining - c.reserved AS free FROM credit_grants c
              WHERE c.user_id = p_user_id AND c.remaining > c.reserved
                AND (c.expires_at IS NULL OR c.expires_at > p_now)
              ORDER BY c.priority, c.expires_at, c.id LOOP
        EXIT WHEN v_left = 0;
        v_take := LEAST(v_left, g.free);
        UPDATE credit_grants c SET reserved = c.reserved + v_take WHERE c.user_id = p_user_id AND c.id = g.id;
        INSERT INTO hold_grants (user_id, hold_id, grant_id, amount) VALUES (p_user_id, p_hold_id, g.id, v_take);
        v_left := v_left - v_take;
    END LOOP;
    ASSERT v_left = 0, 'grant_reserve: the live grants do not cover the reserve';
END
$function$;
