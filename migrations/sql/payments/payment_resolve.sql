-- payment_resolve: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_resolve(INOUT p_user_id text, INOUT p_session_id text, INOUT p_intent_id text, p_charge_id text, OUT resolve_outcome text)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_found  payments[];
BEGIN
    SELECT array_agg(t ORDER BY t.id) INTO v_found FROM payments t
     WHERE (p_user_id IS NULL OR t.user_id = p_user_id)
       AND (t.payment_intent_id = p_intent_id OR t.charge_id = p_charge_id OR t.checkout_session_id = p_session_id);
    IF v_found IS NULL THEN
        resolve_outcome := 'not_found';
        RETURN;
    END IF;
    IF cardinality(v_found) > 1 THEN
        resolve_outcome := 'conflict';
        RETURN;
    END IF;
    p_user_id := v_found[1].user_id;
    IF p_session_id IS NULL AND p_intent_id IS NULL THEN
        p_session_id := v_found[1].checkout_session_id;
        p_intent_id := v_found[1].payment_intent_id;
    END IF;
    resolve_outcome := 'found';
END
$function$;
