-- grant_give: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_give(p_entry credit_transactions, p_category text, p_priority integer, p_expires_at timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_repaid  bigint;
    v_grant   bigint;
BEGIN
    SELECT LEAST(a.debt, p_entry.delta) INTO STRICT v_repaid FROM accounts a WHERE a.user_id = p_entry.user_id;
    IF v_repaid > 0 THEN
        UPDATE accounts a SET debt = a.debt - v_repaid WHERE a.user_id = p_entry.user_id;
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, NULL, v_repaid);
    END IF;
    INSERT INTO credit_grants AS g (user_id, category, priority, expires_at, amount, remaining, transaction_id,
                                    payment_id, created_at)
    VALUES (p_entry.user_id, COALESCE(p_category, 'promotional'), COALESCE(p_priority, 50), p_expires_at,
            p_entry.delta, p_entry.delta - v_repaid,
            p_entry.id, p_entry.payment_id, p_entry.created_at)
    RETURNING g.id INTO v_grant;
    IF p_entry.delta > v_repaid THEN
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, v_grant, p_entry.delta - v_repaid);
    END IF;
END
$function$;
