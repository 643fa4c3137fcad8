-- ledger_payment_apply_refunds: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_apply_refunds(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text, p_charge_amount_refunded_minor bigint, p_refund_ids text[], p_refund_amounts_minor bigint[], p_refund_statuses text[], p_event_id text, p_event_type text, p_payload_sha256 bytea)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_payment  payments;
    v_open     record;
    v_merged   record;
    v_now      timestamptz := clock_timestamp();
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    ASSERT cardinality(p_refund_ids) = cardinality(p_refund_amounts_minor)
       AND cardinality(p_refund_ids) = cardinality(p_refund_statuses), 'refund arrays of different lengths';
    SELECT * INTO STRICT v_open FROM payment_open_for_event(
        p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor, p_currency_code,
        p_customer_email, p_customer_id, p_event_id, p_payload_sha256);
    IF v_open.done THEN
        RETURN v_open.answer;
    END IF;
    p_user_id := v_open.p_user_id;
    p_session_id := v_open.p_session_id;
    p_intent_id := v_open.p_intent_id;
    r := v_open.answer;
    v_payment := v_open.target;
    SELECT * INTO STRICT v_merged FROM payment_refunds_merged(v_payment, p_refund_ids, p_refund_amounts_minor,
                                                               p_refund_statuses);
    IF v_merged.outcome = 'conflict' THEN
        r.outcome := 'conflict';
        r.detail := v_merged.detail;
        RETURN r;
    END IF;
    -- One refund, or the charge's total, above what was charged is not Stripe's data. Standing refunds that add
    -- up to more are: a later refund reported before an earlier one's failure (the sum is capped meanwhile).
    IF GREATEST(p_charge_amount_refunded_minor, (SELECT max(a) FROM unnest(p_refund_amounts_minor) AS a))
       > payment_charged_minor(v_payment) THEN
        r.outcome := 'refund_exceeds_amount';
        r.detail := format('a refund or the charge''s amount_refunded exceeds the %s charged for payment %s',
                           payment_charged_minor(v_payment), v_payment.id);
        RETURN r;
    END IF;
    PERFORM payment_refunds_save(v_payment, p_refund_ids, p_refund_amounts_minor, p_refund_statuses);
    IF p_charge_amount_refunded_minor > v_payment.charge_amount_refunded_minor THEN
        UPDATE payments t SET charge_amount_refunded_minor = p_charge_amount_refunded_minor,
                              updated_at = v_now
         WHERE t.user_id = v_payment.user_id AND t.id = v_payment.id
        RETURNING t.* INTO STRICT v_payment;
    END IF;
    v_payment.amount_refunded_minor := payment_refunded_amount(
        payment_charged_minor(v_payment), v_payment.charge_amount_refunded_minor, v_merged.live_minor,
        v_merged.ended_minor);
    r := payment_apply_refunds(v_payment);
    v_payment := r.payment;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.credits_moved := -r.credits_moved;  -- answered as credits clawed back (negative: reinstated)
    r.refunds := payment_refunds_json(v_payment.user_id, v_payment.id);
    RETURN r;
END
$function$;
