-- ledger_payment_settle: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_settle(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea, p_amount_paid_minor bigint, p_amount_tax_minor bigint, p_amount_discount_minor bigint, p_grant_valid_days integer DEFAULT 0)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
    v_entry    credit_transactions;
    v_credited boolean := false;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        RETURN payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, p_intent_id);
    END IF;
    r := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor,
                       p_currency_code, p_customer_email, p_customer_id, v_account.status = 'active');
    IF r.outcome = 'conflict' THEN
        RETURN r;
    END IF;
    v_payment := r.payment;
    IF r.outcome = 'missing' THEN
        v_payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                    v_account.status = 'active', 'INIT');
    END IF;
    IF p_grant_valid_days > 0 AND v_payment.grant_valid_days <> p_grant_valid_days
       AND NOT payment_is_paid(v_payment) THEN
        -- How long the pack's credits stay valid (the catalog's valid_days), known by the time it is paid.
        UPDATE payments p SET grant_valid_days = p_grant_valid_days
         WHERE p.user_id = v_payment.user_id AND p.id = v_payment.id;
        v_payment.grant_valid_days := p_grant_valid_days;
    END IF;
    IF v_payment.status = 'EXPIRED' THEN
        v_payment.status := 'INIT';  -- A late proof of payment: the expired session was paid after all.
    END IF;
    IF NOT payment_is_paid(v_payment) THEN
        v_payment.status := 'PAID';
        IF v_account.status = 'active' THEN
            v_entry := payment_journal(p_user_id, v_payment.id, v_payment.credits, 'purchase',
                                       format('payment:%s:purchase', v_payment.id),
                                       format('purchase of package %s', v_payment.package_id));
            v_payment.credit_transaction_id := v_entry.id;
            v_payment.credited_at := v_entry.created_at;
            v_credited := true;
        END IF;
    END IF;
    r := payment_apply(v_payment);
    v_payment := payment_record_paid(
        r.payment, p_amount_paid_minor, p_amount_tax_minor, p_amount_discount_minor,
        CASE WHEN (r.payment).credit_transaction_id IS NULL THEN 'account_anonymized' END);
    r.payment := v_payment;
    IF v_payment.credit_transaction_id IS NULL THEN
        IF p_event_id IS NOT NULL THEN
            INSERT INTO processed_events (event_id, event_type, outcome, payload_sha256, user_id, payment_id,
                                          payment_intent_id, detail)
            VALUES (p_event_id, p_event_type, 'refused', p_payload_sha256, p_user_id, v_payment.id,
                    v_payment.payment_intent_id,
                    format('account_anonymized: payment %s paid, not credited (the account was anonymized); refund it',
                           v_payment.id))
            ON CONFLICT (event_id) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'event % was recorded concurrently', p_event_id USING ERRCODE = 'serialization_failure';
            END IF;
        END IF;
        r.outcome := 'purchase_account_anonymized';
        r.detail := v_payment.id::text;
        r.credited := false;
        r.credits_moved := 0;
        RETURN r;
    END IF;
    IF NOT v_credited THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_payment.credit_transaction_id;
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.entry := v_entry;
    r.credited := v_credited;
    r.credits_moved := CASE WHEN v_credited THEN v_payment.credits ELSE 0 END;
    RETURN r;
END
$function$;
