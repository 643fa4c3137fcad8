-- payment_event_replay: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_event_replay(p_event processed_events, p_payload_sha256 bytea, p_user_id text, p_session_id text, p_intent_id text)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_entry    credit_transactions;
BEGIN
    IF p_event.payload_sha256 <> p_payload_sha256 THEN
        r.outcome := 'event_payload_mismatch';
        r.detail := format('event %s was processed before with other data', p_event.event_id);
        RETURN r;
    END IF;
    SELECT * INTO v_payment FROM payments t
     WHERE t.user_id = p_user_id
       AND (t.id = p_event.payment_id OR t.checkout_session_id = p_session_id OR t.payment_intent_id = p_intent_id)
     ORDER BY t.id IS NOT DISTINCT FROM p_event.payment_id DESC, t.id
     LIMIT 1;
    IF FOUND THEN
        r.payment := v_payment;
        SELECT * INTO v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_payment.credit_transaction_id;
        IF FOUND THEN
            r.entry := v_entry;
        END IF;
    END IF;
    r.outcome := 'duplicate_event';
    r.credited := false;
    r.credits_moved := 0;
    RETURN r;
END
$function$;
