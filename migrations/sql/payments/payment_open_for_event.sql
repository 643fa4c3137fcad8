-- payment_open_for_event: current definition (last changed by migrations/versions/0008_payment_change_opening.py).
CREATE OR REPLACE FUNCTION public.payment_open_for_event(INOUT p_user_id text, INOUT p_session_id text, INOUT p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_event_id text, p_payload_sha256 bytea, OUT done boolean, OUT answer payment_result, OUT target payments)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_account  accounts;
    v_event    processed_events;
    v_resolved record;
BEGIN
    done := true;
    IF p_user_id IS NULL OR (p_session_id IS NULL AND p_intent_id IS NULL) THEN
        SELECT * INTO v_resolved FROM payment_resolve(p_user_id, p_session_id, p_intent_id, p_charge_id);
        IF v_resolved.resolve_outcome <> 'found' THEN
            answer.outcome := v_resolved.resolve_outcome;
            answer.detail := CASE v_resolved.resolve_outcome
                WHEN 'not_found' THEN 'no payment has these ids'
                ELSE 'these ids name several payments' END;
            RETURN;
        END IF;
        p_user_id := v_resolved.p_user_id;
        p_session_id := v_resolved.p_session_id;
        p_intent_id := v_resolved.p_intent_id;
    END IF;
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        answer := payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, p_intent_id);
        RETURN;
    END IF;
    answer := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                            p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                            v_account.status = 'active');
    IF answer.outcome = 'conflict' THEN
        RETURN;
    END IF;
    target := answer.payment;
    IF answer.outcome = 'missing' THEN
        IF p_package_id IS NULL THEN
            answer.outcome := 'not_found';
            answer.detail := 'no such payment, and no price given to record it';
            RETURN;
        END IF;
        target := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                 p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                 v_account.status = 'active', 'INIT');
    END IF;
    done := false;
END
$function$;
