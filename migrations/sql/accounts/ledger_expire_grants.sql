-- ledger_expire_grants: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_expire_grants(p_now timestamp with time zone, p_limit integer, OUT expired bigint, OUT expired_paid bigint, OUT grants integer)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now      timestamptz := COALESCE(p_now, ledger_now());
    v_users    text[];
    v_user     text;
    v_balance  bigint;
    v_done     record;
BEGIN
    expired := 0;
    expired_paid := 0;
    grants := 0;
    SELECT array_agg(DISTINCT d.user_id ORDER BY d.user_id) INTO v_users FROM (
        SELECT g.user_id FROM credit_grants g
         WHERE g.remaining > g.reserved AND g.expires_at <= v_now
         ORDER BY g.expires_at
         LIMIT p_limit
    ) d;
    -- One account at a time (on Citus, one shard per lock); an account locked by a call now is left to a later sweep.
    FOREACH v_user IN ARRAY COALESCE(v_users, '{}') LOOP
        SELECT a.balance INTO v_balance FROM accounts a WHERE a.user_id = v_user FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO STRICT v_done FROM grant_expire_due(v_user, v_now, v_balance);
        IF v_done.grants > 0 THEN
            UPDATE accounts a SET balance = a.balance - v_done.expired, updated_at = now() WHERE a.user_id = v_user;
            expired := expired + v_done.expired;
            expired_paid := expired_paid + v_done.expired_paid;
            grants := grants + v_done.grants;
        END IF;
    END LOOP;
END
$function$;
