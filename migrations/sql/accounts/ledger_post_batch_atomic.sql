-- ledger_post_batch_atomic: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.ledger_post_batch_atomic(p_user_ids text[], p_deltas bigint[], p_kinds text[], p_idempotency_keys text[], p_fingerprints bytea[], p_reasons text[], p_references text[], p_metadata jsonb[], p_actors text[], p_allow_negative boolean[], p_categories text[] DEFAULT NULL::text[], p_priorities integer[] DEFAULT NULL::integer[], p_expires_at timestamp with time zone[] DEFAULT NULL::timestamp with time zone[])
 RETURNS TABLE(ordinal integer, outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint, kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint, hold_id bigint, created_at timestamp with time zone, held bigint, spent_paid bigint)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_row     record;
    v_refused jsonb;      -- the refused posting with the lowest ordinal, as JSON
BEGIN
    FOR v_row IN SELECT * FROM ledger_post_batch(p_user_ids, p_deltas, p_kinds, p_idempotency_keys, p_fingerprints,
                                                 p_reasons, p_references, p_metadata, p_actors, p_allow_negative,
                                                 p_categories, p_priorities, p_expires_at)
    LOOP
        IF v_row.outcome NOT IN ('applied', 'replayed') THEN
            IF v_refused IS NULL OR (v_refused->>'ordinal')::integer > v_row.ordinal THEN
                v_refused := to_jsonb(v_row);
            END IF;
        ELSIF v_refused IS NULL THEN
            ordinal := v_row.ordinal; outcome := v_row.outcome; balance := v_row.balance; id := v_row.id;
            user_id := v_row.user_id; delta := v_row.delta; balance_after := v_row.balance_after;
            kind := v_row.kind; idempotency_key := v_row.idempotency_key; reason := v_row.reason;
            reference := v_row.reference; payment_id := v_row.payment_id;
            admin_action_id := v_row.admin_action_id; hold_id := v_row.hold_id;
            created_at := v_row.created_at; held := v_row.held; spent_paid := v_row.spent_paid;
            RETURN NEXT;
        END IF;
    END LOOP;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION 'ledger_post_batch_atomic: posting % was refused (%); nothing applied',
                        v_refused->>'ordinal', v_refused->>'outcome'
              USING ERRCODE = 'LD001', DETAIL = v_refused::text;
    END IF;
END
$function$;
