-- grant_expire_due: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_expire_due(p_user_id text, p_now timestamp with time zone, p_balance bigint, OUT expired bigint, OUT expired_paid bigint, OUT grants integer)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_balance  bigint := p_balance;
    v_entry    bigint;
    g          record;
BEGIN
    expired := 0;
    expired_paid := 0;
    grants := 0;
    FOR g IN SELECT c.id, c.category, c.remaining, c.remaining - c.reserved AS free FROM credit_grants c
              WHERE c.user_id = p_user_id AND c.remaining > c.reserved AND c.expires_at <= p_now
              ORDER BY c.expires_at, c.id LOOP
        v_balance := v_balance - g.free;
        INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                              request_fingerprint, reason)
        VALUES (p_user_id, -g.free, v_balance, 'expiry', format('grant:%s:expiry:%s', g.id, g.remaining),
                sha256(convert_to(concat_ws('|', 'grant', g.id, 'expiry', g.remaining, -g.free), 'UTF8')),
                format('grant %s expired', g.id))
        RETURNING t.id INTO v_entry;
        PERFORM grant_take(p_user_id, v_entry, g.id, g.free, false, NULL);
        expired := expired + g.free;
        expired_paid := expired_paid + CASE WHEN g.category = 'paid' THEN g.free ELSE 0 END;
        grants := grants + 1;
    END LOOP;
END
$function$;
