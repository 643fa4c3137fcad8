-- grant_give: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_give(p_entry credit_transactions, p_category text, p_priority integer, p_expires_at timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_category  text := COALESCE(p_category, 'promotional');
    v_priority  integer := COALESCE(p_priority, 50);
    v_repaid    bigint;
    v_grant     bigint;
BEGIN
    SELECT LEAST(a.debt, p_entry.delta) INTO STRICT v_repaid FROM accounts a WHERE a.user_id = p_entry.user_id;
    IF v_repaid > 0 THEN
        UPDATE accounts a SET debt = a.debt - v_repaid WHERE a.user_id = p_entry.user_id;
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, NULL, v_repaid);
    END IF;
    IF p_entry.payment_id IS NULL THEN
        UPDATE credit_grants g SET amount = g.amount + p_entry.delta, remaining = g.remaining + p_entry.delta - v_repaid
         WHERE g.user_id = p_entry.user_id
           AND g.id = (SELECT c.id FROM credit_grants c
                        WHERE c.user_id = p_entry.user_id AND c.remaining > 0 AND c.payment_id IS NULL
                          AND c.priority = v_priority AND c.expires_at IS NOT DISTINCT FROM p_expires_at
                          AND c.category = v_category
                        ORDER BY c.id LIMIT 1)
        RETURNING g.id INTO v_grant;
    END IF;
    IF v_grant IS NULL THEN
        INSERT INTO credit_grants AS g (user_id, category, priority, expires_at, amount, remaining, transaction_id,
                                        payment_id, created_at)
        VALUES (p_entry.user_id, v_category, v_priority, p_expires_at, p_entry.delta, p_entry.delta - v_repaid,
                p_entry.id, p_entry.payment_id, p_entry.created_at)
        RETURNING g.id INTO v_grant;
    END IF;
    IF p_entry.delta > v_repaid THEN
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, v_grant, p_entry.delta - v_repaid);
    END IF;
END
$function$;
