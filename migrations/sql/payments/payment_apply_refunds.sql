-- payment_apply_refunds: current definition (last changed by migrations/versions/0007_refunds_of_what_was_paid.py).
CREATE OR REPLACE FUNCTION public.payment_apply_refunds(p payments)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r         payment_result;
    v_target  bigint := payment_clawback_target(p);
    v_kind    text;
    v_reason  text;
BEGIN
    ASSERT v_target >= 0, 'clawback target below zero';
    ASSERT v_target <= p.credits, 'clawback target above the credits';
    r.credits_moved := p.credits_clawed_back - v_target;
    IF r.credits_moved <> 0 THEN
        ASSERT NOT payment_dispute_is_real(p.dispute_status), 'a refund moved credits under a real dispute';
        IF r.credits_moved > 0 THEN
            v_kind := 'refund_reversal';
            v_reason := format('refund reversal of payment %s: refunds failed or canceled, %s of %s %s minor units '
                               'still refunded', p.id, p.amount_refunded_minor, payment_charged_minor(p),
                               p.currency_code);
        ELSE
            v_kind := 'refund';
            v_reason := format('refund of payment %s: %s of %s %s minor units refunded',
                               p.id, p.amount_refunded_minor, payment_charged_minor(p), p.currency_code);
        END IF;
        p.adjustment_count := p.adjustment_count + 1;
        r.entry := payment_journal(p.user_id, p.id, r.credits_moved, v_kind,
                                   format('payment:%s:adjustment:%s', p.id, p.adjustment_count), v_reason);
        p.credits_clawed_back := v_target;
    END IF;
    p.status := payment_status_after(p);
    r.payment := payment_save(p);
    r.outcome := 'applied';
    RETURN r;
END
$function$;
