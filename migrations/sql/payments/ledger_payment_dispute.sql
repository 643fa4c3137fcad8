-- ledger_payment_dispute: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_dispute(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_dispute_id text, p_dispute_status text, p_event_id text, p_event_type text, p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_open     record;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    SELECT * INTO STRICT v_open FROM payment_open_for_event(
        p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor, p_currency_code,
        p_customer_email, p_customer_id, p_event_id, p_payload_sha256);
    IF v_open.done THEN
        RETURN v_open.answer;
    END IF;
    p_user_id := v_open.p_user_id;
    p_session_id := v_open.p_session_id;
    p_intent_id := v_open.p_intent_id;
    r := v_open.answer;
    v_payment := v_open.target;
    IF payment_dispute_rank(p_dispute_status) > payment_dispute_rank(v_payment.dispute_status) THEN
        v_payment.dispute_status := p_dispute_status;
        v_payment.dispute_id := p_dispute_id;
    END IF;
    r := payment_apply(v_payment);
    v_payment := r.payment;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    RETURN r;
END
$function$;
