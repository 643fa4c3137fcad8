-- grant_burn: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_burn(p_entry credit_transactions, p_now timestamp with time zone)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_left   bigint := -p_entry.delta;
    v_paid   bigint := 0;
    v_take   bigint;
    g        record;
BEGIN
    IF p_entry.kind = 'hold_capture' THEN
        FOR g IN SELECT c.id, c.category, hg.amount AS free FROM hold_grants hg
                   JOIN credit_grants c ON c.user_id = hg.user_id AND c.id = hg.grant_id
                  WHERE hg.user_id = p_entry.user_id AND hg.hold_id = p_entry.hold_id AND hg.amount > 0
                  ORDER BY c.priority, c.expires_at, c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, true, p_entry.hold_id);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    ELSIF p_entry.kind IN ('refund', 'chargeback') AND p_entry.payment_id IS NOT NULL THEN
        FOR g IN SELECT c.id, c.category, c.remaining - c.reserved AS free FROM credit_grants c
                  WHERE c.user_id = p_entry.user_id AND c.payment_id = p_entry.payment_id AND c.remaining > c.reserved
                    AND (c.expires_at IS NULL OR c.expires_at > p_now)
                  ORDER BY c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, false, NULL);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    END IF;
    IF v_left > 0 THEN
        FOR g IN SELECT c.id, c.category, c.remaining - c.reserved AS free FROM credit_grants c
                  WHERE c.user_id = p_entry.user_id AND c.remaining > c.reserved
                    AND (c.expires_at IS NULL OR c.expires_at > p_now)
                  ORDER BY c.priority, c.expires_at, c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, false, NULL);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    END IF;
    IF v_left > 0 AND p_entry.kind IN ('hold_capture', 'refund', 'chargeback') THEN
        FOR g IN SELECT c.id, c.category, c.reserved AS free FROM credit_grants c
                  WHERE c.user_id = p_entry.user_id AND c.reserved > 0
                  ORDER BY c.priority, c.expires_at, c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, true, NULL);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    END IF;
    IF v_left > 0 THEN
        UPDATE accounts a SET debt = a.debt + v_left WHERE a.user_id = p_entry.user_id;
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, NULL, -v_left);
    END IF;
    RETURN v_paid;
END
$function$;
