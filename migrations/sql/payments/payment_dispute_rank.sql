-- payment_dispute_rank: current definition (last changed by migrations/versions/0002_payment_lifecycle.py).
CREATE OR REPLACE FUNCTION public.payment_dispute_rank(p_status text)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE p_status
        WHEN 'warning_needs_response' THEN 1
        WHEN 'warning_under_review'   THEN 2
        WHEN 'warning_closed'         THEN 3
        WHEN 'needs_response'         THEN 4
        WHEN 'under_review'           THEN 5
        WHEN 'won'                    THEN 6
        WHEN 'lost'                   THEN 6
        ELSE 0
    END
$function$;
