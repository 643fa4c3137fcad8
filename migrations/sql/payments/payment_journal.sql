-- payment_journal: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_journal(p_user_id text, p_payment_id bigint, p_delta bigint, p_kind text, p_key text, p_reason text)
 RETURNS credit_transactions
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_before  bigint;
    v_balance bigint;
    v_entry   credit_transactions;
    v_grant   credit_grants;
    v_days    integer;
BEGIN
    SELECT a.balance INTO STRICT v_before FROM accounts a WHERE a.user_id = p_user_id;
    UPDATE accounts a SET balance = a.balance + p_delta, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_before + p_delta, 'balance_after does not follow from delta';
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, payment_id)
    VALUES (p_user_id, p_delta, v_balance, p_kind, p_key,
            sha256(convert_to(concat_ws('|', 'payment', p_payment_id, p_kind, p_delta, p_key, p_reason), 'UTF8')),
            p_reason, p_payment_id)
    RETURNING t.* INTO v_entry;
    IF p_delta > 0 AND p_kind = 'purchase' THEN
        SELECT p.grant_valid_days INTO STRICT v_days FROM payments p
         WHERE p.user_id = p_user_id AND p.id = p_payment_id;
        -- Valid for the pack's days from the purchase entry (payments.credited_at).
        PERFORM grant_give(v_entry, 'paid', 50,
                           CASE WHEN v_days > 0 THEN v_entry.created_at + make_interval(days => v_days) END);
    ELSIF p_delta > 0 THEN
        -- A reversal reinstates credits as the purchase gave them: its category, priority and expiry.
        SELECT * INTO v_grant FROM credit_grants g
         WHERE g.user_id = p_user_id AND g.payment_id = p_payment_id ORDER BY g.id LIMIT 1;
        PERFORM grant_give(v_entry, COALESCE(v_grant.category, 'paid'), COALESCE(v_grant.priority, 50),
                           v_grant.expires_at);
    ELSE
        PERFORM grant_burn(v_entry, ledger_now());
    END IF;
    RETURN v_entry;
END
$function$;
