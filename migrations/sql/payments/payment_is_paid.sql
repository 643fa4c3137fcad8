-- payment_is_paid: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_is_paid(p payments)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT p.status NOT IN ('INIT', 'FAILED')
$function$;
