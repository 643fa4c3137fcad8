-- payment_insert: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_insert(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_pii_allowed boolean, p_status payment_status)
 RETURNS payments
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_payment payments;
BEGIN
    INSERT INTO payments AS t (user_id, checkout_session_id, payment_intent_id, charge_id, package_id, credits,
                               amount_minor, currency_code, status, customer_email, customer_id, anonymized)
    VALUES (p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor,
            p_currency_code, p_status,
            CASE WHEN p_pii_allowed THEN p_customer_email END,
            CASE WHEN p_pii_allowed THEN p_customer_id END,
            NOT p_pii_allowed)
    RETURNING t.* INTO v_payment;
    RETURN v_payment;
END
$function$;
