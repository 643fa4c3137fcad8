-- payment_event_applied: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_event_applied(p_event_id text, p_event_type text, p_payload_sha256 bytea, p_user_id text, p_payment_id bigint, p_intent_id text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF p_event_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO processed_events (event_id, event_type, outcome, payload_sha256, user_id, payment_id, payment_intent_id)
    VALUES (p_event_id, p_event_type, 'applied', p_payload_sha256, p_user_id, p_payment_id, p_intent_id)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % was recorded concurrently', p_event_id USING ERRCODE = 'serialization_failure';
    END IF;
END
$function$;
