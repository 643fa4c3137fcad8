-- ledger_distribute: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.ledger_distribute()
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_table  text;
    v_done   integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN 0;
    END IF;
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    FOREACH v_table IN ARRAY ARRAY[
        'accounts', 'credit_transactions', 'transaction_metadata', 'admin_actions', 'payments', 'payment_refunds',
        'holds', 'hold_events', 'credit_grants', 'grant_movements', 'hold_grants'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = v_table::regclass);
        PERFORM create_distributed_table(
            v_table, 'user_id', colocate_with => CASE v_table WHEN 'accounts' THEN 'default' ELSE 'accounts' END);
        v_done := v_done + 1;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = 'processed_events'::regclass) THEN
        PERFORM create_reference_table('processed_events');
        v_done := v_done + 1;
    END IF;
    -- New sessions take payment_events_lock() before recording an event (the ledger opens its pool after this).
    EXECUTE format('ALTER DATABASE %I SET credits.events_lock = on', current_database());
    PERFORM set_config('credits.events_lock', 'on', false);
    PERFORM set_config('citus.enable_unsafe_triggers', 'off', true);
    RETURN v_done;
END
$function$;
