-- payment_refund_rank: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_refund_rank(p_status text)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE p_status
        WHEN 'requires_action' THEN 1
        WHEN 'pending'         THEN 2
        WHEN 'succeeded'       THEN 3
        WHEN 'failed'          THEN 4
        WHEN 'canceled'        THEN 4
        ELSE 0
    END
$function$;
