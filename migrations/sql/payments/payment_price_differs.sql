-- payment_price_differs: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_price_differs(p payments, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT p_package_id IS NOT NULL
       AND (p.package_id, p.credits, p.amount_minor, p.currency_code)
           IS DISTINCT FROM (p_package_id, p_credits, p_amount_minor, p_currency_code)
$function$;
