-- ledger_payment_open: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_payment_open(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text, p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text, p_customer_id text)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_account  accounts;
BEGIN
    PERFORM payment_events_lock();  -- before any account: processed_events may be a reference table
    v_account := payment_lock_account(p_user_id);
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    r := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                       p_amount_minor, p_currency_code, p_customer_email, p_customer_id, true);
    IF r.outcome = 'conflict' THEN
        RETURN r;
    END IF;
    r.replayed := r.outcome = 'found';
    IF NOT r.replayed THEN
        r.payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id, true, 'INIT');
    END IF;
    r.outcome := 'applied';
    RETURN r;
END
$function$;
