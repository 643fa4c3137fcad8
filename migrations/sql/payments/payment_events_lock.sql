-- payment_events_lock: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.payment_events_lock()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF current_setting('credits.events_lock', true) = 'on' THEN
        PERFORM pg_advisory_xact_lock(7322201);  -- the ledger's only advisory lock
    END IF;
END
$function$;
