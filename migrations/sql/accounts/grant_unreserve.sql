-- grant_unreserve: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.grant_unreserve(p_user_id text, p_hold_ids bigint[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    WITH ended AS (
        DELETE FROM hold_grants hg WHERE hg.user_id = p_user_id AND hg.hold_id = ANY (p_hold_ids)
        RETURNING hg.grant_id, hg.amount
    ), by_grant AS (
        SELECT e.grant_id, sum(e.amount) AS amount FROM ended e GROUP BY e.grant_id HAVING sum(e.amount) > 0
    )
    UPDATE credit_grants c SET reserved = c.reserved - b.amount
      FROM by_grant b WHERE c.user_id = p_user_id AND c.id = b.grant_id;
END
$function$;
