-- payment_clawback_target: current definition (last changed by migrations/versions/0007_refunds_of_what_was_paid.py).
CREATE OR REPLACE FUNCTION public.payment_clawback_target(p payments)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE
        WHEN p.credit_transaction_id IS NULL THEN 0
        WHEN payment_dispute_is_real(p.dispute_status) THEN p.credits
        WHEN payment_charged_minor(p) = 0 THEN 0
        WHEN p.amount_refunded_minor >= payment_charged_minor(p) THEN p.credits
        ELSE div(p.credits::numeric * p.amount_refunded_minor, payment_charged_minor(p))::bigint
    END
$function$;
