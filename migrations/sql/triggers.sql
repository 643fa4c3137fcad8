-- The triggers: the append-only guards of the journal, the admin actions and the holds.
CREATE TRIGGER admin_actions_append_only BEFORE DELETE OR UPDATE ON public.admin_actions FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('admin_actions');
CREATE TRIGGER admin_actions_no_truncate BEFORE TRUNCATE ON public.admin_actions FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER credit_transactions_append_only BEFORE DELETE OR UPDATE ON public.credit_transactions FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('credit_transactions');
CREATE TRIGGER credit_transactions_no_truncate BEFORE TRUNCATE ON public.credit_transactions FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER grant_movements_append_only BEFORE DELETE OR UPDATE ON public.grant_movements FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('grant_movements');
CREATE TRIGGER grant_movements_no_truncate BEFORE TRUNCATE ON public.grant_movements FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER hold_events_append_only BEFORE DELETE OR UPDATE ON public.hold_events FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('hold_events');
CREATE TRIGGER hold_events_no_truncate BEFORE TRUNCATE ON public.hold_events FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER holds_no_delete BEFORE DELETE ON public.holds FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table('holds');
CREATE TRIGGER holds_no_truncate BEFORE TRUNCATE ON public.holds FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();
