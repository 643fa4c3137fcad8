-- payment_refund_sums: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_refund_sums(p_user_id text, p_payment_id bigint, OUT live_minor bigint, OUT ended_minor bigint)
 RETURNS record
 LANGUAGE sql
 STABLE
AS $function$
    SELECT COALESCE(sum(r.amount_minor) FILTER (WHERE payment_refund_is_live(r.status)), 0)::bigint,
           COALESCE(sum(r.amount_minor) FILTER (WHERE NOT payment_refund_is_live(r.status)), 0)::bigint
      FROM payment_refunds r
     WHERE r.user_id = p_user_id AND r.payment_id = p_payment_id
$function$;
