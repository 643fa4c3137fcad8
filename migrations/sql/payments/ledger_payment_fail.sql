-- ledger_payment_fail: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_fail(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        RETURN payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, p_intent_id);
    END IF;
    r := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor,
                       p_currency_code, p_customer_email, p_customer_id, v_account.status = 'active');
    IF r.outcome = 'conflict' THEN
        RETURN r;
    END IF;
    v_payment := r.payment;
    IF r.outcome = 'missing' THEN
        v_payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                    v_account.status = 'active', 'FAILED');
    ELSIF v_payment.status = 'INIT' THEN
        v_payment.status := 'FAILED';
        v_payment := payment_save(v_payment);
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.payment := v_payment;
    r.outcome := 'applied';
    RETURN r;
END
$function$;
