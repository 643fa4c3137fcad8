-- payment_refund_is_live: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_refund_is_live(p_status text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT p_status IN ('requires_action', 'pending', 'succeeded')
$function$;
