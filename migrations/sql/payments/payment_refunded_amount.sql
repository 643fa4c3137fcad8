-- payment_refunded_amount: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_refunded_amount(p_amount_minor bigint, p_charge_amount_refunded_minor bigint, p_live_minor bigint, p_ended_minor bigint)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT LEAST(p_amount_minor, GREATEST(p_live_minor, p_charge_amount_refunded_minor - p_ended_minor, 0))
$function$;
