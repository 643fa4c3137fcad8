-- payment_event_find: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_event_find(p_event_id text)
 RETURNS processed_events
 LANGUAGE sql
 STABLE
AS $function$
    SELECT * FROM processed_events e WHERE e.event_id = p_event_id
$function$;
