-- payment_refunds_merged: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_refunds_merged(p payments, p_refund_ids text[], p_amounts_minor bigint[], p_statuses text[])
 RETURNS TABLE(outcome text, detail text, live_minor bigint, ended_minor bigint)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_known  payment_refunds;
BEGIN
    SELECT t.* INTO v_known FROM payment_refunds t
      JOIN unnest(p_refund_ids, p_amounts_minor) AS g(refund_id, amount_minor) ON g.refund_id = t.refund_id
     WHERE t.user_id = p.user_id AND (t.payment_id <> p.id OR t.amount_minor <> g.amount_minor)
     LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT 'conflict'::text,
            format('refund %s is known with amount %s on payment %s', v_known.refund_id, v_known.amount_minor,
                   v_known.payment_id), 0::bigint, 0::bigint;
        RETURN;
    END IF;
    RETURN QUERY
    WITH merged AS (
        SELECT t.amount_minor, t.status FROM payment_refunds t
         WHERE t.user_id = p.user_id AND t.payment_id = p.id AND t.refund_id <> ALL (p_refund_ids)
        UNION ALL
        SELECT g.amount_minor,
               CASE WHEN payment_refund_rank(g.status) > payment_refund_rank(t.status) OR t.status IS NULL
                    THEN g.status ELSE t.status END
          FROM unnest(p_refund_ids, p_amounts_minor, p_statuses) AS g(refund_id, amount_minor, status)
          LEFT JOIN payment_refunds t ON t.user_id = p.user_id AND t.refund_id = g.refund_id
    )
    SELECT 'found'::text, NULL::text,
           COALESCE(sum(m.amount_minor) FILTER (WHERE payment_refund_is_live(m.status)), 0)::bigint,
           COALESCE(sum(m.amount_minor) FILTER (WHERE NOT payment_refund_is_live(m.status)), 0)::bigint
      FROM merged m;
END
$function$;
