-- payment_merge: current definition (last changed by migrations/versions/0007_refunds_of_what_was_paid.py).
CREATE OR REPLACE FUNCTION public.payment_merge(p_by_session payments, p_by_intent payments)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r       payment_result;
    v_keep  payments;
    v_drop  payments;
    v_sums  record;
BEGIN
    r.outcome := 'conflict';
    IF p_by_session.payment_intent_id IS NOT NULL OR p_by_intent.checkout_session_id IS NOT NULL THEN
        r.detail := format('the session belongs to payment %s and the intent to payment %s',
                           p_by_session.id, p_by_intent.id);
        RETURN r;
    END IF;
    IF payment_price_differs(p_by_session, p_by_intent.package_id, p_by_intent.credits,
                             p_by_intent.amount_minor, p_by_intent.currency_code) THEN
        r.detail := format('payments %s and %s have different prices', p_by_session.id, p_by_intent.id);
        RETURN r;
    END IF;
    IF p_by_session.credit_transaction_id IS NOT NULL AND p_by_intent.credit_transaction_id IS NOT NULL THEN
        r.detail := format('payments %s and %s were both credited', p_by_session.id, p_by_intent.id);
        RETURN r;
    END IF;
    IF (p_by_intent.credit_transaction_id IS NOT NULL, payment_is_paid(p_by_intent), -p_by_intent.id)
     > (p_by_session.credit_transaction_id IS NOT NULL, payment_is_paid(p_by_session), -p_by_session.id) THEN
        v_keep := p_by_intent;
        v_drop := p_by_session;
    ELSE
        v_keep := p_by_session;
        v_drop := p_by_intent;
    END IF;
    ASSERT v_drop.credit_transaction_id IS NULL, 'merging away a credited payment';
    ASSERT v_drop.credits_clawed_back = 0, 'merging away a payment with clawbacks';

    UPDATE payment_refunds t SET payment_id = v_keep.id WHERE t.user_id = v_drop.user_id AND t.payment_id = v_drop.id;
    -- payment_save (0002) writes neither the charge snapshot nor what was paid (0006): carried here.
    UPDATE payments t SET charge_amount_refunded_minor = GREATEST(t.charge_amount_refunded_minor,
                                                                  v_drop.charge_amount_refunded_minor),
                          amount_paid_minor = COALESCE(t.amount_paid_minor, v_drop.amount_paid_minor),
                          amount_tax_minor = COALESCE(t.amount_tax_minor, v_drop.amount_tax_minor),
                          amount_discount_minor = COALESCE(t.amount_discount_minor, v_drop.amount_discount_minor),
                          settle_refusal = COALESCE(t.settle_refusal, v_drop.settle_refusal)
     WHERE t.user_id = v_keep.user_id AND t.id = v_keep.id
    RETURNING t.charge_amount_refunded_minor, t.amount_paid_minor, t.amount_tax_minor, t.amount_discount_minor,
              t.settle_refusal
         INTO v_keep.charge_amount_refunded_minor, v_keep.amount_paid_minor, v_keep.amount_tax_minor,
              v_keep.amount_discount_minor, v_keep.settle_refusal;
    DELETE FROM payments t WHERE t.user_id = v_drop.user_id AND t.id = v_drop.id;
    UPDATE processed_events e SET payment_id = v_keep.id WHERE e.payment_id = v_drop.id;
    v_keep.checkout_session_id := COALESCE(v_keep.checkout_session_id, v_drop.checkout_session_id);
    v_keep.payment_intent_id := COALESCE(v_keep.payment_intent_id, v_drop.payment_intent_id);
    v_keep.charge_id := COALESCE(v_keep.charge_id, v_drop.charge_id);
    v_keep.customer_email := COALESCE(v_keep.customer_email, v_drop.customer_email);
    v_keep.customer_id := COALESCE(v_keep.customer_id, v_drop.customer_id);
    v_keep.anonymized := v_keep.anonymized OR v_drop.anonymized;
    SELECT * INTO STRICT v_sums FROM payment_refund_sums(v_keep.user_id, v_keep.id);
    v_keep.amount_refunded_minor := payment_refunded_amount(payment_charged_minor(v_keep),
                                                            v_keep.charge_amount_refunded_minor,
                                                            v_sums.live_minor, v_sums.ended_minor);
    IF payment_dispute_rank(v_drop.dispute_status) > payment_dispute_rank(v_keep.dispute_status) THEN
        v_keep.dispute_status := v_drop.dispute_status;
        v_keep.dispute_id := v_drop.dispute_id;
    END IF;
    IF NOT payment_is_paid(v_keep) AND v_drop.status = 'FAILED' THEN
        v_keep.status := 'FAILED';
    END IF;
    v_keep.created_at := LEAST(v_keep.created_at, v_drop.created_at);
    r.payment := payment_save(v_keep);
    r.outcome := 'found';
    RETURN r;
END
$function$;
