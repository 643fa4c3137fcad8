-- payment_refunds_save: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.payment_refunds_save(p payments, p_refund_ids text[], p_amounts_minor bigint[], p_statuses text[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    INSERT INTO payment_refunds AS t (user_id, refund_id, payment_id, amount_minor, status)
    SELECT p.user_id, g.refund_id, p.id, g.amount_minor, g.status
      FROM unnest(p_refund_ids, p_amounts_minor, p_statuses) AS g(refund_id, amount_minor, status)
    ON CONFLICT (user_id, refund_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
     WHERE payment_refund_rank(excluded.status) > payment_refund_rank(t.status);
END
$function$;
