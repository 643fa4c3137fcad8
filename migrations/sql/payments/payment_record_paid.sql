-- payment_record_paid: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.payment_record_paid(p payments, p_amount_paid_minor bigint, p_amount_tax_minor bigint, p_amount_discount_minor bigint, p_settle_refusal text)
 RETURNS payments
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_saved payments;
    v_now   timestamptz := clock_timestamp();
BEGIN
    IF (p.amount_paid_minor, p.amount_tax_minor, p.amount_discount_minor, p.settle_refusal)
       IS NOT DISTINCT FROM (COALESCE(p.amount_paid_minor, p_amount_paid_minor),
                             COALESCE(p.amount_tax_minor, p_amount_tax_minor),
                             COALESCE(p.amount_discount_minor, p_amount_discount_minor), p_settle_refusal) THEN
        RETURN p;
    END IF;
    UPDATE payments t SET
        amount_paid_minor     = COALESCE(t.amount_paid_minor, p_amount_paid_minor),
        amount_tax_minor      = COALESCE(t.amount_tax_minor, p_amount_tax_minor),
        amount_discount_minor = COALESCE(t.amount_discount_minor, p_amount_discount_minor),
        settle_refusal        = p_settle_refusal,
        updated_at            = v_now
     WHERE t.user_id = p.user_id AND t.id = p.id
    RETURNING t.* INTO STRICT v_saved;
    RETURN v_saved;
END
$function$;
