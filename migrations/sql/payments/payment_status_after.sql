-- payment_status_after: current definition (last changed by migrations/versions/0007_refunds_of_what_was_paid.py).
CREATE OR REPLACE FUNCTION public.payment_status_after(p payments)
 RETURNS payment_status
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT (CASE
        WHEN p.status::text IN ('INIT', 'FAILED', 'EXPIRED') THEN p.status::text
        WHEN payment_dispute_is_real(p.dispute_status) THEN 'CHARGEBACK'
        WHEN payment_charged_minor(p) > 0 AND p.amount_refunded_minor >= payment_charged_minor(p) THEN 'REFUNDED'
        WHEN p.credit_transaction_id IS NOT NULL THEN 'CREDITED'
        ELSE 'PAID'
    END)::payment_status
$function$;
