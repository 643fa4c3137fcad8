-- ledger_post: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.ledger_post(p_user_id text, p_delta bigint, p_kind text, p_idempotency_key text, p_fingerprint bytea, p_reason text, p_reference text, p_metadata jsonb, p_actor text, p_allow_negative boolean, p_category text DEFAULT NULL::text, p_priority integer DEFAULT NULL::integer, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS TABLE(outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint, kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint, hold_id bigint, created_at timestamp with time zone, held bigint, spent_paid bigint)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_entry credit_transactions%ROWTYPE;
BEGIN
    -- A retry found without a lock is answered at once; everything else is ledger_post_batch's rules.
    SELECT * INTO v_entry FROM credit_transactions t
     WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        RETURN QUERY SELECT
            CASE WHEN v_entry.request_fingerprint = p_fingerprint THEN 'replayed' ELSE 'idempotency_key_reused' END,
            NULL::bigint, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after, v_entry.kind,
            v_entry.idempotency_key, v_entry.reason, v_entry.reference, v_entry.payment_id,
            v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT b.outcome, b.balance, b.id, b.user_id, b.delta, b.balance_after, b.kind, b.idempotency_key,
                        b.reason, b.reference, b.payment_id, b.admin_action_id, b.hold_id, b.created_at, b.held,
                        b.spent_paid
      FROM ledger_post_batch(ARRAY[p_user_id], ARRAY[p_delta], ARRAY[p_kind], ARRAY[p_idempotency_key],
                             ARRAY[p_fingerprint], ARRAY[p_reason], ARRAY[p_reference], ARRAY[p_metadata],
                             ARRAY[p_actor], ARRAY[p_allow_negative], ARRAY[p_category], ARRAY[p_priority],
                             ARRAY[p_expires_at]) AS b;
END
$function$;
