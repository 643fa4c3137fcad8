-- ledger_expire_holds: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_expire_holds(p_now timestamp with time zone, p_limit integer)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now      timestamptz := COALESCE(p_now, ledger_now());
    v_users    text[];
    v_user     text;
    v_expired  integer := 0;
BEGIN
    SELECT array_agg(DISTINCT d.user_id ORDER BY d.user_id) INTO v_users FROM (
        SELECT h.user_id FROM holds h
         WHERE h.status = 'active' AND h.expires_at <= v_now
         ORDER BY h.expires_at
         LIMIT p_limit
    ) d;
    -- One account at a time (on Citus, one shard per lock); an account locked by a call now is left to a later sweep.
    FOREACH v_user IN ARRAY COALESCE(v_users, '{}') LOOP
        EXIT WHEN v_expired >= p_limit;
        PERFORM 1 FROM accounts a WHERE a.user_id = v_user FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_expired := v_expired + hold_expire_due(v_user, v_now, p_limit - v_expired);
    END LOOP;
    RETURN v_expired;
END
$function$;
