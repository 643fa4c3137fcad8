-- ledger_payment_expire: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_expire(p_user_id text, p_session_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea)
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
        RETURN payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, NULL);
    END IF;
    SELECT * INTO v_payment FROM payments t
     WHERE t.user_id = p_user_id AND t.checkout_session_id = p_session_id FOR UPDATE;
    IF v_payment.id IS NOT NULL AND v_payment.status = 'INIT' THEN
        v_payment.status := 'EXPIRED';
        v_payment := payment_save(v_payment);
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.payment := CASE WHEN v_payment.id IS NOT NULL THEN v_payment END;
    r.outcome := 'applied';
    RETURN r;
END
$function$;
