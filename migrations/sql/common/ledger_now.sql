-- ledger_now: current definition (last changed by migrations/versions/0003_holds.py).
CREATE OR REPLACE FUNCTION public.ledger_now()
 RETURNS timestamp with time zone
 LANGUAGE sql
AS $function$
    SELECT COALESCE(NULLIF(current_setting('credits.clock_override', true), '')::timestamptz, clock_timestamp())
$function$;
