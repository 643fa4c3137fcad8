-- refuse_change_to_append_only_table: current definition (last changed by migrations/versions/0001_ledger_schema.py).
CREATE OR REPLACE FUNCTION public.refuse_change_to_append_only_table()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$function$;
