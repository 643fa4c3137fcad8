-- grant_expired_rest: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_expired_rest(p_user_id text, p_now timestamp with time zone)
 RETURNS bigint
 LANGUAGE sql
 STABLE
AS $function$
    SELECT COALESCE(sum(g.remaining - g.reserved), 0)::bigint FROM credit_grants g
     WHERE g.user_id = p_user_id AND g.remaining > g.reserved AND g.expires_at <= p_now
$function$;
