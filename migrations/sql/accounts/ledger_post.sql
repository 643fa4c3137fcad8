-- ledger_post: current definition (last changed by migrations/versions/0003_holds.py).
CREATE OR REPLACE FUNCTION public.ledger_post(p_user_id text, p_delta bigint, p_kind text, p_idempotency_key text, p_fingerprint bytea, p_reason text, p_reference text, p_metadata jsonb, p_actor text, p_allow_negative boolean)
 RETURNS TABLE(outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint, kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint, hold_id bigint, created_at timestamp with time zone, held bigint)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_entry    credit_transactions%ROWTYPE;
    v_account  accounts%ROWTYPE;
    v_balance  bigint;
    v_admin_id bigint;
BEGIN
    SELECT * INTO v_entry FROM credit_transactions t
     WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    IF NOT FOUND THEN
        SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
        IF NOT FOUND THEN
            IF p_delta < 0 AND NOT p_allow_negative THEN
                outcome := 'insufficient_credits';
                balance := 0;
                held := 0;
                RETURN NEXT;
                RETURN;
            END IF;
            INSERT INTO accounts (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
            SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
        END IF;
        -- Under the account lock: a concurrent request with this key may have committed meanwhile.
        SELECT * INTO v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    END IF;

    IF v_entry.id IS NOT NULL THEN
        RETURN QUERY SELECT
            CASE WHEN v_entry.request_fingerprint = p_fingerprint THEN 'replayed' ELSE 'idempotency_key_reused' END,
            NULL::bigint, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after, v_entry.kind,
            v_entry.idempotency_key, v_entry.reason, v_entry.reference, v_entry.payment_id,
            v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, NULL::bigint;
        RETURN;
    END IF;
    IF v_account.status = 'anonymized' THEN
        outcome := 'account_anonymized';
        balance := v_account.balance;
        held := v_account.held;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_delta < 0 AND NOT p_allow_negative THEN
        -- Lazy expiry: a hold past its expiry never blocks spending.
        IF hold_expire_due(p_user_id, ledger_now(), NULL) > 0 THEN
            SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id;
        END IF;
        IF v_account.balance - v_account.held + p_delta < 0 THEN
            outcome := 'insufficient_credits';
            balance := v_account.balance;
            held := v_account.held;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    UPDATE accounts a SET balance = a.balance + p_delta, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_account.balance + p_delta, 'balance_after does not follow from delta';

    IF p_actor IS NOT NULL THEN
        v_admin_id := nextval(pg_get_serial_sequence('admin_actions', 'id'));
    END IF;
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, reference, admin_action_id)
    VALUES (p_user_id, p_delta, v_balance, p_kind, p_idempotency_key, p_fingerprint, p_reason,
            p_reference, v_admin_id)
    RETURNING * INTO v_entry;
    IF p_actor IS NOT NULL THEN
        INSERT INTO admin_actions (id, user_id, actor, delta, reason, transaction_id)
        VALUES (v_admin_id, p_user_id, p_actor, p_delta, p_reason, v_entry.id);
    END IF;
    IF p_metadata IS NOT NULL THEN
        INSERT INTO transaction_metadata (user_id, transaction_id, metadata)
        VALUES (p_user_id, v_entry.id, p_metadata);
    END IF;
    RETURN QUERY SELECT 'applied', v_balance, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after,
                        v_entry.kind, v_entry.idempotency_key, v_entry.reason, v_entry.reference,
                        v_entry.payment_id, v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at,
                        v_account.held;
END
$function$;
