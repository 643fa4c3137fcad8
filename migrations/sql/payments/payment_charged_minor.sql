-- payment_charged_minor: current definition (last changed by migrations/versions/0007_refunds_of_what_was_paid.py).
CREATE OR REPLACE FUNCTION public.payment_charged_minor(p payments)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT COALESCE(p.amount_paid_minor, p.amount_minor)
$function$;
