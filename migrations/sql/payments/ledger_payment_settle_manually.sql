-- ledger_payment_settle_manually: current definition (last changed by migrations/versions/0006_checkout_outcomes.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_settle_manually(p_payment_id bigint, p_actor text, p_reason text)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r           payment_result;
    v_user_id   text;
    v_account   accounts;
    v_payment   payments;
    v_entry     credit_transactions;
    v_admin_id  bigint;
    v_balance   bigint;
    v_reason    text;
BEGIN
    SELECT t.user_id INTO v_user_id FROM payments t WHERE t.id = p_payment_id ORDER BY t.user_id LIMIT 1;
    IF v_user_id IS NULL THEN
        r.outcome := 'not_found';
        r.detail := format('no payment %s', p_payment_id);
        RETURN r;
    END IF;
    v_account := payment_lock_account(v_user_id);
    SELECT * INTO v_payment FROM payments t WHERE t.user_id = v_user_id AND t.id = p_payment_id FOR UPDATE;
    IF v_payment.id IS NULL THEN  -- merged into another row between the two reads
        r.outcome := 'not_found';
        r.detail := format('payment %s was merged into another payment of its user', p_payment_id);
        RETURN r;
    END IF;
    IF v_payment.credit_transaction_id IS NOT NULL THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = v_user_id AND t.id = v_payment.credit_transaction_id;
        r.outcome := 'applied';
        r.payment := v_payment;
        r.entry := v_entry;
        r.replayed := true;
        r.credits_moved := 0;
        RETURN r;
    END IF;
    IF v_account.status <> 'active' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    v_admin_id := nextval(pg_get_serial_sequence('admin_actions', 'id'));
    v_reason := left(format('purchase of package %s, credited by hand: %s', v_payment.package_id, p_reason), 500);
    UPDATE accounts a SET balance = a.balance + v_payment.credits, updated_at = now()
     WHERE a.user_id = v_user_id
    RETURNING a.balance INTO v_balance;
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, payment_id, admin_action_id)
    VALUES (v_user_id, v_payment.credits, v_balance, 'purchase', format('payment:%s:purchase', v_payment.id),
            sha256(convert_to(concat_ws('|', 'payment', v_payment.id, 'purchase', v_payment.credits,
                                        'manual', p_actor, p_reason), 'UTF8')),
            v_reason, v_payment.id, v_admin_id)
    RETURNING t.* INTO v_entry;
    ASSERT v_entry.balance_after = v_account.balance + v_payment.credits, 'balance_after does not follow from delta';
    PERFORM grant_give(v_entry, 'paid', 50,
                       CASE WHEN v_payment.grant_valid_days > 0
                            THEN v_entry.created_at + make_interval(days => v_payment.grant_valid_days) END);
    INSERT INTO admin_actions (id, user_id, actor, delta, reason, transaction_id)
    VALUES (v_admin_id, v_user_id, p_actor, v_payment.credits, p_reason, v_entry.id);
    IF v_payment.status IN ('INIT', 'FAILED', 'EXPIRED') THEN
        v_payment.status := 'PAID';
    END IF;
    v_payment.credit_transaction_id := v_entry.id;
    v_payment.credited_at := v_entry.created_at;
    r := payment_apply(v_payment);
    r.payment := payment_record_paid(r.payment, NULL, NULL, NULL, NULL);
    r.entry := v_entry;
    r.credited := true;
    r.replayed := false;
    r.credits_moved := v_admin_id;
    RETURN r;
END
$function$;
