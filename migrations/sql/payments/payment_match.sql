-- payment_match: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_match(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_pii_allowed boolean)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r             payment_result;
    v_by_session  payments;
    v_by_intent   payments;
    v_payment     payments;
BEGIN
    SELECT * INTO v_by_session FROM payments t
     WHERE t.user_id = p_user_id AND t.checkout_session_id = p_session_id FOR UPDATE;
    SELECT * INTO v_by_intent FROM payments t
     WHERE t.user_id = p_user_id AND t.payment_intent_id = p_intent_id FOR UPDATE;
    IF v_by_session.id IS NULL AND v_by_intent.id IS NULL THEN
        r.outcome := 'missing';
        RETURN r;
    END IF;
    IF v_by_session.id IS NOT NULL AND v_by_intent.id IS NOT NULL AND v_by_session.id <> v_by_intent.id THEN
        r := payment_merge(v_by_session, v_by_intent);
        IF r.outcome <> 'found' THEN
            RETURN r;
        END IF;
        v_payment := r.payment;
    ELSIF v_by_session.id IS NOT NULL THEN
        v_payment := v_by_session;
    ELSE
        v_payment := v_by_intent;
    END IF;

    r.outcome := 'conflict';
    r.payment := v_payment;
    IF p_session_id IS NOT NULL AND v_payment.checkout_session_id <> p_session_id THEN
        r.detail := format('payment %s has another checkout session', v_payment.id);
        RETURN r;
    END IF;
    IF p_intent_id IS NOT NULL AND v_payment.payment_intent_id <> p_intent_id THEN
        r.detail := format('payment %s has another payment intent', v_payment.id);
        RETURN r;
    END IF;
    IF payment_price_differs(v_payment, p_package_id, p_credits, p_amount_minor, p_currency_code) THEN
        r.detail := format('payment %s has another package, credits, amount or currency', v_payment.id);
        RETURN r;
    END IF;
    v_payment.checkout_session_id := COALESCE(v_payment.checkout_session_id, p_session_id);
    v_payment.payment_intent_id := COALESCE(v_payment.payment_intent_id, p_intent_id);
    -- The first charge id seen is kept: the only charges events name are the succeeded one.
    v_payment.charge_id := COALESCE(v_payment.charge_id, p_charge_id);
    IF p_pii_allowed AND NOT v_payment.anonymized THEN
        v_payment.customer_email := COALESCE(v_payment.customer_email, p_customer_email);
        v_payment.customer_id := COALESCE(v_payment.customer_id, p_customer_id);
    END IF;
    r.payment := payment_save(v_payment);
    r.outcome := 'found';
    RETURN r;
END
$function$;
