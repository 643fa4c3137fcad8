-- ledger_post_batch_flush: current definition (last changed by migrations/versions/0004_post_batch.py).
CREATE OR REPLACE FUNCTION public.ledger_post_batch_flush(p_user_id text, p_applied boolean, p_start bigint, p_balance bigint)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_updated integer;
BEGIN
    IF NOT p_applied THEN
        RETURN;
    END IF;
    UPDATE accounts a SET balance = p_balance, updated_at = now()
     WHERE a.user_id = p_user_id AND a.balance = p_start;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    ASSERT v_updated = 1, 'ledger_post_batch: the account changed under its lock';
END
$function$;
