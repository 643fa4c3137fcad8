-- ledger_event_record: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_event_record(p_event_id text, p_event_type text, p_payload_sha256 bytea, p_outcome text, p_detail text, p_user_id text, p_intent_id text)
 RETURNS TABLE(result text, recorded_outcome text)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_payment_id  bigint;
    v_event       processed_events;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    SELECT t.id INTO v_payment_id FROM payments t
     WHERE t.payment_intent_id = p_intent_id AND (p_user_id IS NULL OR t.user_id = p_user_id)
     ORDER BY t.id
     LIMIT 1;
    INSERT INTO processed_events AS e (event_id, event_type, outcome, payload_sha256, user_id, payment_id,
                                       payment_intent_id, detail)
    VALUES (p_event_id, p_event_type, p_outcome, p_payload_sha256, p_user_id, v_payment_id, p_intent_id, p_detail)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING e.* INTO v_event;
    IF v_event.event_id IS NOT NULL THEN
        result := 'applied';
        recorded_outcome := p_outcome;
        RETURN NEXT;
        RETURN;
    END IF;
    v_event := payment_event_find(p_event_id);
    result := CASE WHEN v_event.payload_sha256 = p_payload_sha256 THEN 'duplicate_event'
                   ELSE 'event_payload_mismatch' END;
    recorded_outcome := v_event.outcome;
    RETURN NEXT;
END
$function$;
