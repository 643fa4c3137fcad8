-- payment_refunds_json: current definition (last changed by migrations/versions/0005_refunds.py).
CREATE OR REPLACE FUNCTION public.payment_refunds_json(p_user_id text, p_payment_id bigint)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
AS $function$
    SELECT jsonb_agg(jsonb_build_object('refund_id', r.refund_id, 'amount_minor', r.amount_minor,
                                        'status', r.status) ORDER BY r.created_at, r.refund_id)
      FROM payment_refunds r
     WHERE r.user_id = p_user_id AND r.payment_id = p_payment_id
$function$;
