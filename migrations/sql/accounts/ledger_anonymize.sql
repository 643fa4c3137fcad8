-- ledger_anonymize: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_anonymize(p_user_id text)
 RETURNS TABLE(already_anonymized boolean, payments_scrubbed_count integer, metadata_erased_count integer, balance bigint)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_account   accounts%ROWTYPE;
    v_already   boolean;
    v_payments  integer;
    v_metadata  integer;
    v_now       timestamptz := clock_timestamp();
BEGIN
    -- An unknown user is recorded as anonymized too, so nothing can be credited to it later.
    INSERT INTO accounts (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    v_already := v_account.status = 'anonymized';
    UPDATE accounts a SET status = 'anonymized', updated_at = now()
     WHERE a.user_id = p_user_id AND a.status <> 'anonymized';
    UPDATE payments p SET customer_email = NULL, customer_id = NULL, anonymized = true, updated_at = v_now
     WHERE p.user_id = p_user_id AND (p.customer_email IS NOT NULL OR p.customer_id IS NOT NULL OR NOT p.anonymized);
    GET DIAGNOSTICS v_payments = ROW_COUNT;
    DELETE FROM transaction_metadata m WHERE m.user_id = p_user_id;
    GET DIAGNOSTICS v_metadata = ROW_COUNT;
    RETURN QUERY SELECT v_already, v_payments, v_metadata, v_account.balance;
END
$function$;
