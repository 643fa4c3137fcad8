-- hold_expire_due: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.hold_expire_due(p_user_id text, p_now timestamp with time zone, p_limit integer)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_count     integer;
    v_released  bigint;
    v_ids       bigint[];
BEGIN
    -- Most calls find nothing due: a plain read says so on the user's shard. The statement below is one Citus
    -- plans in steps, sending its intermediate results to every worker (a transaction on each).
    IF NOT EXISTS (SELECT 1 FROM holds h
                    WHERE h.user_id = p_user_id AND h.status = 'active' AND h.expires_at <= p_now) THEN
        RETURN 0;
    END IF;
    WITH due AS (
        SELECT h.id FROM holds h
         WHERE h.user_id = p_user_id AND h.status = 'active' AND h.expires_at <= p_now
         ORDER BY h.expires_at, h.id
         LIMIT p_limit
    ), expired AS (
        UPDATE holds h SET status = 'expired', ended_at = h.expires_at
          FROM due
         WHERE h.user_id = p_user_id AND h.id = due.id AND h.status = 'active'
        RETURNING h.id, h.amount
    ), events AS (
        INSERT INTO hold_events AS e (user_id, hold_id, kind, held_delta, created_at)
        SELECT p_user_id, x.id, 'expired', -x.amount, p_now FROM expired x
        RETURNING e.held_delta, e.hold_id
    )
    SELECT count(*), COALESCE(-sum(events.held_delta), 0), array_agg(events.hold_id)
      INTO v_count, v_released, v_ids FROM events;
    IF v_count > 0 THEN
        UPDATE accounts a SET held = a.held - v_released WHERE a.user_id = p_user_id;
        PERFORM grant_unreserve(p_user_id, v_ids);
    END IF;
    RETURN v_count;
END
$function$;
