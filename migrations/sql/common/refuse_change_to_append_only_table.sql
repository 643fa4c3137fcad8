-- refuse_change_to_append_only_table: current definition (last changed by migrations/versions/0012_citus_distribution.py).
CREATE OR REPLACE FUNCTION public.refuse_change_to_append_only_table()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', COALESCE(TG_ARGV[0], TG_TABLE_NAME), TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$function$;
