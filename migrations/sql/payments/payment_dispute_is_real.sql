-- payment_dispute_is_real: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_dispute_is_real(p_status text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT COALESCE(p_status IN ('needs_response', 'under_review', 'lost'), false)
$function$;
