-- ledger_post_batch: current definition (last changed by migrations/versions/0011_credit_grants.py).
CREATE OR REPLACE FUNCTION public.ledger_post_batch(p_user_ids text[], p_deltas bigint[], p_kinds text[], p_idempotency_keys text[], p_fingerprints bytea[], p_reasons text[], p_references text[], p_metadata jsonb[], p_actors text[], p_allow_negative boolean[], p_categories text[] DEFAULT NULL::text[], p_priorities integer[] DEFAULT NULL::integer[], p_expires_at timestamp with time zone[] DEFAULT NULL::timestamp with time zone[])
 RETURNS TABLE(ordinal integer, outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint, kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint, hold_id bigint, created_at timestamp with time zone, held bigint, spent_paid bigint)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    i              integer;
    v_user         text;               -- the account being applied (locked once found or created)
    v_account      accounts%ROWTYPE;
    v_exists       boolean := false;
    v_start        bigint;             -- v_user's balance when locked
    v_balance      bigint;             -- v_user's running balance
    v_applied      boolean := false;   -- an entry was written for v_user
    v_expired      boolean := false;   -- lazy hold expiry done for v_user
    v_expired_rest bigint := 0;        -- v_user's credits past their expiry, not written yet
    v_entry        credit_transactions%ROWTYPE;
    v_admin_id     bigint;
    v_spent_paid   bigint;
    v_now          timestamptz := ledger_now();
BEGIN
    ASSERT cardinality(p_deltas) = cardinality(p_user_ids) AND cardinality(p_kinds) = cardinality(p_user_ids)
       AND cardinality(p_idempotency_keys) = cardinality(p_user_ids)
       AND cardinality(p_fingerprints) = cardinality(p_user_ids) AND cardinality(p_reasons) = cardinality(p_user_ids)
       AND cardinality(p_references) = cardinality(p_user_ids) AND cardinality(p_metadata) = cardinality(p_user_ids)
       AND cardinality(p_actors) = cardinality(p_user_ids)
       AND cardinality(p_allow_negative) = cardinality(p_user_ids)
       AND COALESCE(cardinality(p_categories), cardinality(p_user_ids)) = cardinality(p_user_ids)
       AND COALESCE(cardinality(p_priorities), cardinality(p_user_ids)) = cardinality(p_user_ids)
       AND COALESCE(cardinality(p_expires_at), cardinality(p_user_ids)) = cardinality(p_user_ids),
       'ledger_post_batch: arrays of different lengths';
    FOR i IN SELECT u.ordinal::integer FROM unnest(p_user_ids) WITH ORDINALITY AS u(user_id, ordinal)
              ORDER BY u.user_id, u.ordinal LOOP
        IF v_user IS DISTINCT FROM p_user_ids[i] THEN
            PERFORM ledger_post_batch_flush(v_user, v_applied, v_start, v_balance);
            v_user := p_user_ids[i];
            v_expired := false;
            v_expired_rest := 0;
            v_applied := false;
            SELECT * INTO v_account FROM accounts a WHERE a.user_id = v_user FOR UPDATE;
            v_exists := FOUND;
            v_start := v_account.balance;
            v_balance := v_account.balance;
        END IF;

        SELECT * INTO v_entry FROM credit_transactions t
         WHERE t.user_id = v_user AND t.idempotency_key = p_idempotency_keys[i];
        IF NOT FOUND AND NOT v_exists THEN
            IF p_deltas[i] < 0 AND NOT p_allow_negative[i] THEN
                RETURN QUERY SELECT i, 'insufficient_credits'::text, 0::bigint, NULL::bigint, NULL::text,
                    NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint,
                    NULL::bigint, NULL::bigint, NULL::timestamptz, 0::bigint, NULL::bigint;
                CONTINUE;
            END IF;
            INSERT INTO accounts (user_id) VALUES (v_user) ON CONFLICT DO NOTHING;
            SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = v_user FOR UPDATE;
            v_exists := true;
            v_start := v_account.balance;
            v_balance := v_account.balance;
            -- Under the account lock: a concurrent request with this key may have committed meanwhile.
            SELECT * INTO v_entry FROM credit_transactions t
             WHERE t.user_id = v_user AND t.idempotency_key = p_idempotency_keys[i];
        END IF;

        IF v_entry.id IS NOT NULL THEN
            RETURN QUERY SELECT i,
                CASE WHEN v_entry.request_fingerprint = p_fingerprints[i] THEN 'replayed'
                     ELSE 'idempotency_key_reused' END,
                NULL::bigint, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after, v_entry.kind,
                v_entry.idempotency_key, v_entry.reason, v_entry.reference, v_entry.payment_id,
                v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, NULL::bigint, NULL::bigint;
            CONTINUE;
        END IF;
        IF v_account.status = 'anonymized' THEN
            RETURN QUERY SELECT i, 'account_anonymized'::text, v_balance, NULL::bigint, NULL::text, NULL::bigint,
                NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::bigint,
                NULL::bigint, NULL::timestamptz, v_account.held, NULL::bigint;
            CONTINUE;
        END IF;
        IF p_deltas[i] < 0 AND NOT p_allow_negative[i] THEN
            IF NOT v_expired THEN
                -- Lazy expiry (as in ledger_post): a hold past its expiry never blocks spending.
                IF hold_expire_due(v_user, v_now, NULL) > 0 THEN
                    SELECT a.held INTO STRICT v_account.held FROM accounts a WHERE a.user_id = v_user;
                END IF;
                -- Credits past their grant's expiry count for nothing, whether the sweeper wrote that yet or not.
                v_expired_rest := grant_expired_rest(v_user, v_now);
                v_expired := true;
            END IF;
            IF v_balance - v_account.held - v_expired_rest + p_deltas[i] < 0 THEN
                RETURN QUERY SELECT i, 'insufficient_credits'::text, v_balance - v_expired_rest, NULL::bigint,
                    NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text,
                    NULL::bigint, NULL::bigint, NULL::bigint, NULL::timestamptz, v_account.held, NULL::bigint;
                CONTINUE;
            END IF;
        END IF;

        v_balance := v_balance + p_deltas[i];
        v_applied := true;
        v_admin_id := NULL;
        IF p_actors[i] IS NOT NULL THEN
            v_admin_id := nextval(pg_get_serial_sequence('admin_actions', 'id'));
        END IF;
        INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                              request_fingerprint, reason, reference, admin_action_id)
        VALUES (v_user, p_deltas[i], v_balance, p_kinds[i], p_idempotency_keys[i], p_fingerprints[i],
                p_reasons[i], p_references[i], v_admin_id)
        RETURNING * INTO v_entry;
        v_spent_paid := NULL;
        IF p_deltas[i] > 0 THEN
            PERFORM grant_give(v_entry, p_categories[i], p_priorities[i], p_expires_at[i]);
        ELSE
            v_spent_paid := grant_burn(v_entry, v_now);
        END IF;
        IF p_actors[i] IS NOT NULL THEN
            INSERT INTO admin_actions (id, user_id, actor, delta, reason, transaction_id)
            VALUES (v_admin_id, v_user, p_actors[i], p_deltas[i], p_reasons[i], v_entry.id);
        END IF;
        IF p_metadata[i] IS NOT NULL THEN
            INSERT INTO transaction_metadata (user_id, transaction_id, metadata)
            VALUES (v_user, v_entry.id, p_metadata[i]);
        END IF;
        RETURN QUERY SELECT i, 'applied'::text, v_balance, v_entry.id, v_entry.user_id, v_entry.delta,
            v_entry.balance_after, v_entry.kind, v_entry.idempotency_key, v_entry.reason, v_entry.reference,
            v_entry.payment_id, v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, v_account.held,
            v_spent_paid;
    END LOOP;
    PERFORM ledger_post_batch_flush(v_user, v_applied, v_start, v_balance);
END
$function$;
