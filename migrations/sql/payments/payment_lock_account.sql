-- payment_lock_account: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_lock_account(p_user_id text)
 RETURNS accounts
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_account accounts;
BEGIN
    INSERT INTO accounts (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
    SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    RETURN v_account;
END
$function$;
