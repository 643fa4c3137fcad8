-- payment_save: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.payment_save(p payments)
 RETURNS payments
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_saved payments;
    v_now   timestamptz := clock_timestamp();
BEGIN
    UPDATE payments t SET
        checkout_session_id   = p.checkout_session_id,
        payment_intent_id     = p.payment_intent_id,
        charge_id             = p.charge_id,
        status                = p.status,
        amount_refunded_minor = p.amount_refunded_minor,
        credits_clawed_back   = p.credits_clawed_back,
        dispute_id            = p.dispute_id,
        dispute_status        = p.dispute_status,
        adjustment_count      = p.adjustment_count,
        credit_transaction_id = p.credit_transaction_id,
        customer_email        = p.customer_email,
        customer_id           = p.customer_id,
        anonymized            = p.anonymized,
        created_at            = p.created_at,
        credited_at           = p.credited_at,
        grant_valid_days      = p.grant_valid_days,
        updated_at            = v_now
     WHERE t.user_id = p.user_id AND t.id = p.id AND t IS DISTINCT FROM p
    RETURNING t.* INTO v_saved;
    IF v_saved.id IS NULL THEN
        RETURN p;
    END IF;
    RETURN v_saved;
END
$function$;
