"""Credit grants: expiry, priority and burn order, paid apart from promotional (issue 21).

Every credit becomes a **grant** (credit_grants): its category (paid / promotional), priority (0-100, lower burns
first), optional expiry, amount and what is left of it (`remaining`, of which `reserved` is held by active holds).
Debits burn grants in one order: priority, then soonest expiry (none last), then oldest. grant_movements records,
per journal entry, which grants it moved and by how much (a NULL grant is the account's debt line), so a refund,
a dispute or an expiry knows what is left of its grant. Invariants, per account:

    balance = SUM(journal deltas) = SUM(grants.remaining) - accounts.debt
    0 <= reserved <= remaining <= amount (CHECK)
    SUM(movements of an entry) = its delta; SUM(movements of a grant) = its remaining

**Debt** is what clawbacks (refunds, chargebacks) took beyond every grant; the next credits repay it first, so an
account with debt has nothing left in any grant.

**Expiry** is seen at once: a grant whose expires_at has passed counts for nothing but what holds reserved of it
(the balance read subtracts it, debits and reserves do not see it, burns skip it). Its unspent, unreserved rest is
written as an `expiry` journal entry by the sweeper (ledger_expire_grants: bounded batches, accounts locked with
SKIP LOCKED, so several ledger workers and ledgers sweep together, each grant once). Credits a hold reserved when
its grant expired stay the hold's: a capture spends them, and when the hold ends without capturing them they expire
at the next sweep (a second expiry entry for the same grant; keys `grant:<id>:expiry:<remaining before>`).

**Holds** reserve against grants in burn order (hold_grants) and capture what they reserved first. Clawbacks take
their own payment's grant first, then the unreserved rest in burn order, then reserved credits (shrinking the holds'
reservations: a capture then spends what is left of its reservation, then unreserved credits, then other holds'),
then go into debt.

Existing balances are carried over as one grant per account (no expiry, priority 50, paid when the account has a
purchase, promotional otherwise; its movement has no journal entry), a negative balance as debt, and active holds
reserve against that grant. Downgrade drops all of it and restores the functions exactly as 0010 left them.

Revision ID: 0011_credit_grants
Revises: 0010_post_batch_atomic
Create Date: 2026-12-06
"""

import re
from pathlib import Path

from alembic import op

revision = "0011_credit_grants"
down_revision = "0010_post_batch_atomic"
branch_labels = None
depends_on = None

SCHEMA_SQL = r"""
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN (
    'purchase', 'spend', 'grant', 'refund', 'chargeback', 'chargeback_reversal', 'admin_adjustment',
    'hold_capture', 'refund_reversal', 'expiry')) NOT VALID;
ALTER TABLE credit_transactions VALIDATE CONSTRAINT credit_transactions_kind_check;

ALTER TABLE accounts ADD COLUMN debt bigint NOT NULL DEFAULT 0 CHECK (debt >= 0);
ALTER TABLE payments ADD COLUMN grant_valid_days integer NOT NULL DEFAULT 0
    CHECK (grant_valid_days BETWEEN 0 AND 3650);

CREATE TABLE credit_grants (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    user_id         text        NOT NULL REFERENCES accounts (user_id),
    category        text        NOT NULL CHECK (category IN ('paid', 'promotional')),
    priority        integer     NOT NULL CHECK (priority BETWEEN 0 AND 100),
    expires_at      timestamptz,
    amount          bigint      NOT NULL CHECK (amount > 0),
    remaining       bigint      NOT NULL,
    reserved        bigint      NOT NULL DEFAULT 0,
    transaction_id  bigint,     -- the entry that granted it; NULL: the balance carried over by migration 0011
    payment_id      bigint,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, id),
    CHECK (0 <= reserved AND reserved <= remaining AND remaining <= amount),
    FOREIGN KEY (user_id, transaction_id) REFERENCES credit_transactions (user_id, id)
);
-- Burn order of an account's grants with something left.
CREATE INDEX credit_grants_burn_order ON credit_grants (user_id, priority, expires_at, id) WHERE remaining > 0;
-- What the sweeper and the balance read look for: an unreserved rest past its expiry.
CREATE INDEX credit_grants_due ON credit_grants (expires_at) WHERE remaining > reserved AND expires_at IS NOT NULL;
CREATE INDEX credit_grants_payment ON credit_grants (user_id, payment_id) WHERE payment_id IS NOT NULL;

CREATE TABLE grant_movements (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    user_id         text        NOT NULL,
    transaction_id  bigint,     -- NULL: the balance carried over by migration 0011
    grant_id        bigint,     -- NULL: the account's debt line
    delta           bigint      NOT NULL CHECK (delta <> 0),
    PRIMARY KEY (user_id, id)
);
CREATE INDEX grant_movements_transaction ON grant_movements (user_id, transaction_id);
CREATE TRIGGER grant_movements_append_only BEFORE DELETE OR UPDATE ON grant_movements
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER grant_movements_no_truncate BEFORE TRUNCATE ON grant_movements
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();

-- What each active hold reserved of each grant (rows go when the hold ends).
CREATE TABLE hold_grants (
    user_id   text   NOT NULL,
    hold_id   bigint NOT NULL,
    grant_id  bigint NOT NULL,
    amount    bigint NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (user_id, hold_id, grant_id)
);

ALTER TYPE hold_result ADD ATTRIBUTE spent_paid bigint;
"""

CARRY_OVER_SQL = r"""
-- Existing balances: one grant per account with credits, debt for a negative balance, active holds reserved.
WITH carried AS (
    INSERT INTO credit_grants (user_id, category, priority, amount, remaining, reserved)
    SELECT a.user_id,
           CASE WHEN EXISTS (SELECT 1 FROM credit_transactions t WHERE t.user_id = a.user_id AND t.kind = 'purchase')
                THEN 'paid' ELSE 'promotional' END,
           50, a.balance, a.balance, LEAST(a.held, a.balance)
      FROM accounts a
     WHERE a.balance > 0
    RETURNING user_id, id, amount, reserved
), moved AS (
    INSERT INTO grant_movements (user_id, grant_id, delta) SELECT c.user_id, c.id, c.amount FROM carried c
)
INSERT INTO hold_grants (user_id, hold_id, grant_id, amount)
SELECT h.user_id, h.id, c.id,
       -- the account's reserved credits shared out over its active holds, oldest first
       LEAST(h.amount, GREATEST(0, c.reserved - COALESCE(sum(h.amount) OVER (
           PARTITION BY h.user_id ORDER BY h.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)))
  FROM holds h JOIN carried c ON c.user_id = h.user_id
 WHERE h.status = 'active';
UPDATE accounts a SET debt = -a.balance WHERE a.balance < 0;
INSERT INTO grant_movements (user_id, grant_id, delta)
SELECT a.user_id, NULL, a.balance FROM accounts a WHERE a.balance < 0;
"""

FUNCTIONS_SQL = r"""
-- Credits given by a positive journal entry: the account's debt is repaid first, the rest is the grant's.
-- Unset category and priority are promotional and 50 (what Credit and AdminAdjust default to). Credits alike
-- (no payment, same category, priority and expiry) add to the account's grant of them that has something left,
-- so an account that receives many credits keeps few grants; a purchase is always a grant of its own.
CREATE FUNCTION grant_give(p_entry credit_transactions, p_category text, p_priority integer,
                           p_expires_at timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_category  text := COALESCE(p_category, 'promotional');
    v_priority  integer := COALESCE(p_priority, 50);
    v_repaid    bigint;
    v_grant     bigint;
BEGIN
    SELECT LEAST(a.debt, p_entry.delta) INTO STRICT v_repaid FROM accounts a WHERE a.user_id = p_entry.user_id;
    IF v_repaid > 0 THEN
        UPDATE accounts a SET debt = a.debt - v_repaid WHERE a.user_id = p_entry.user_id;
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, NULL, v_repaid);
    END IF;
    IF p_entry.payment_id IS NULL THEN
        UPDATE credit_grants g SET amount = g.amount + p_entry.delta, remaining = g.remaining + p_entry.delta - v_repaid
         WHERE g.user_id = p_entry.user_id
           AND g.id = (SELECT c.id FROM credit_grants c
                        WHERE c.user_id = p_entry.user_id AND c.remaining > 0 AND c.payment_id IS NULL
                          AND c.priority = v_priority AND c.expires_at IS NOT DISTINCT FROM p_expires_at
                          AND c.category = v_category
                        ORDER BY c.id LIMIT 1)
        RETURNING g.id INTO v_grant;
    END IF;
    IF v_grant IS NULL THEN
        INSERT INTO credit_grants AS g (user_id, category, priority, expires_at, amount, remaining, transaction_id,
                                        payment_id, created_at)
        VALUES (p_entry.user_id, v_category, v_priority, p_expires_at, p_entry.delta, p_entry.delta - v_repaid,
                p_entry.id, p_entry.payment_id, p_entry.created_at)
        RETURNING g.id INTO v_grant;
    END IF;
    IF p_entry.delta > v_repaid THEN
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, v_grant, p_entry.delta - v_repaid);
    END IF;
END
$$;

-- Takes up to p_amount from one grant (p_reserved: from what holds reserved of it, p_hold: only that hold's).
CREATE FUNCTION grant_take(p_user_id text, p_entry_id bigint, p_grant_id bigint, p_amount bigint,
                           p_reserved boolean, p_hold_id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_left  bigint := p_amount;
    v_take  bigint;
    r       record;
BEGIN
    UPDATE credit_grants g SET remaining = g.remaining - p_amount,
                               reserved = g.reserved - CASE WHEN p_reserved THEN p_amount ELSE 0 END
     WHERE g.user_id = p_user_id AND g.id = p_grant_id;
    INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
    VALUES (p_user_id, p_entry_id, p_grant_id, -p_amount);
    IF NOT p_reserved THEN
        RETURN;
    END IF;
    FOR r IN SELECT hg.hold_id, hg.amount FROM hold_grants hg
              WHERE hg.user_id = p_user_id AND hg.grant_id = p_grant_id AND hg.amount > 0
                AND (p_hold_id IS NULL OR hg.hold_id = p_hold_id)
              ORDER BY hg.hold_id LOOP
        EXIT WHEN v_left = 0;
        v_take := LEAST(v_left, r.amount);
        UPDATE hold_grants hg SET amount = hg.amount - v_take
         WHERE hg.user_id = p_user_id AND hg.hold_id = r.hold_id AND hg.grant_id = p_grant_id;
        v_left := v_left - v_take;
    END LOOP;
    ASSERT v_left = 0, 'grant_take: the holds reserve less of the grant than it says';
END
$$;

-- Credits taken by a negative journal entry, from grants in burn order; what no grant covers becomes debt.
-- Answers how many of them were paid credits (the rest were promotional or debt).
--   spend, admin_adjustment  unreserved credits of live grants (the caller checked they suffice)
--   hold_capture             the hold's own reservation, unreserved credits, then other holds' reservations
--   refund, chargeback       the payment's own grant, unreserved credits, then reserved ones, then debt
CREATE FUNCTION grant_burn(p_entry credit_transactions, p_now timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_left   bigint := -p_entry.delta;
    v_paid   bigint := 0;
    v_take   bigint;
    g        record;
BEGIN
    IF p_entry.kind = 'hold_capture' THEN
        FOR g IN SELECT c.id, c.category, hg.amount AS free FROM hold_grants hg
                   JOIN credit_grants c ON c.user_id = hg.user_id AND c.id = hg.grant_id
                  WHERE hg.user_id = p_entry.user_id AND hg.hold_id = p_entry.hold_id AND hg.amount > 0
                  ORDER BY c.priority, c.expires_at, c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, true, p_entry.hold_id);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    ELSIF p_entry.kind IN ('refund', 'chargeback') AND p_entry.payment_id IS NOT NULL THEN
        FOR g IN SELECT c.id, c.category, c.remaining - c.reserved AS free FROM credit_grants c
                  WHERE c.user_id = p_entry.user_id AND c.payment_id = p_entry.payment_id AND c.remaining > c.reserved
                    AND (c.expires_at IS NULL OR c.expires_at > p_now)
                  ORDER BY c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, false, NULL);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    END IF;
    IF v_left > 0 THEN
        FOR g IN SELECT c.id, c.category, c.remaining - c.reserved AS free FROM credit_grants c
                  WHERE c.user_id = p_entry.user_id AND c.remaining > c.reserved
                    AND (c.expires_at IS NULL OR c.expires_at > p_now)
                  ORDER BY c.priority, c.expires_at, c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, false, NULL);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    END IF;
    IF v_left > 0 AND p_entry.kind IN ('hold_capture', 'refund', 'chargeback') THEN
        FOR g IN SELECT c.id, c.category, c.reserved AS free FROM credit_grants c
                  WHERE c.user_id = p_entry.user_id AND c.reserved > 0
                  ORDER BY c.priority, c.expires_at, c.id LOOP
            EXIT WHEN v_left = 0;
            v_take := LEAST(v_left, g.free);
            PERFORM grant_take(p_entry.user_id, p_entry.id, g.id, v_take, true, NULL);
            v_paid := v_paid + CASE WHEN g.category = 'paid' THEN v_take ELSE 0 END;
            v_left := v_left - v_take;
        END LOOP;
    END IF;
    IF v_left > 0 THEN
        UPDATE accounts a SET debt = a.debt + v_left WHERE a.user_id = p_entry.user_id;
        INSERT INTO grant_movements (user_id, transaction_id, grant_id, delta)
        VALUES (p_entry.user_id, p_entry.id, NULL, -v_left);
    END IF;
    RETURN v_paid;
END
$$;

-- The credits of an account that expired and are not written yet: what a read or a check must not count.
CREATE FUNCTION grant_expired_rest(p_user_id text, p_now timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(g.remaining - g.reserved), 0)::bigint FROM credit_grants g
     WHERE g.user_id = p_user_id AND g.remaining > g.reserved AND g.expires_at <= p_now
$$;

-- Reserves p_amount of an account's live grants for a hold, in burn order (the caller checked they suffice).
CREATE FUNCTION grant_reserve(p_user_id text, p_hold_id bigint, p_amount bigint, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_left  bigint := p_amount;
    v_take  bigint;
    g       record;
BEGIN
    FOR g IN SELECT c.id, c.remaining - c.reserved AS free FROM credit_grants c
              WHERE c.user_id = p_user_id AND c.remaining > c.reserved
                AND (c.expires_at IS NULL OR c.expires_at > p_now)
              ORDER BY c.priority, c.expires_at, c.id LOOP
        EXIT WHEN v_left = 0;
        v_take := LEAST(v_left, g.free);
        UPDATE credit_grants c SET reserved = c.reserved + v_take WHERE c.user_id = p_user_id AND c.id = g.id;
        INSERT INTO hold_grants (user_id, hold_id, grant_id, amount) VALUES (p_user_id, p_hold_id, g.id, v_take);
        v_left := v_left - v_take;
    END LOOP;
    ASSERT v_left = 0, 'grant_reserve: the live grants do not cover the reserve';
END
$$;

-- Gives back what ended holds still reserved (their rows go).
CREATE FUNCTION grant_unreserve(p_user_id text, p_hold_ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH ended AS (
        DELETE FROM hold_grants hg WHERE hg.user_id = p_user_id AND hg.hold_id = ANY (p_hold_ids)
        RETURNING hg.grant_id, hg.amount
    ), by_grant AS (
        SELECT e.grant_id, sum(e.amount) AS amount FROM ended e GROUP BY e.grant_id HAVING sum(e.amount) > 0
    )
    UPDATE credit_grants c SET reserved = c.reserved - b.amount
      FROM by_grant b WHERE c.user_id = p_user_id AND c.id = b.grant_id;
END
$$;

-- Writes the expiry of an account's due grants (their unreserved rest), one entry each, from p_balance on;
-- the caller holds the account's lock and applies the returned total to accounts.balance.
CREATE FUNCTION grant_expire_due(p_user_id text, p_now timestamptz, p_balance bigint,
                                 OUT expired bigint, OUT expired_paid bigint, OUT grants integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance  bigint := p_balance;
    v_entry    bigint;
    g          record;
BEGIN
    expired := 0;
    expired_paid := 0;
    grants := 0;
    FOR g IN SELECT c.id, c.category, c.remaining, c.remaining - c.reserved AS free FROM credit_grants c
              WHERE c.user_id = p_user_id AND c.remaining > c.reserved AND c.expires_at <= p_now
              ORDER BY c.expires_at, c.id LOOP
        v_balance := v_balance - g.free;
        INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                              request_fingerprint, reason)
        VALUES (p_user_id, -g.free, v_balance, 'expiry', format('grant:%s:expiry:%s', g.id, g.remaining),
                sha256(convert_to(concat_ws('|', 'grant', g.id, 'expiry', g.remaining, -g.free), 'UTF8')),
                format('grant %s expired', g.id))
        RETURNING t.id INTO v_entry;
        PERFORM grant_take(p_user_id, v_entry, g.id, g.free, false, NULL);
        expired := expired + g.free;
        expired_paid := expired_paid + CASE WHEN g.category = 'paid' THEN g.free ELSE 0 END;
        grants := grants + 1;
    END LOOP;
END
$$;

-- The sweeper: expires the due grants of at most p_limit grants' accounts, skipping accounts locked by calls
-- (they are swept next time). Answers the credits expired, the paid part and the grants, for metrics.
CREATE FUNCTION ledger_expire_grants(p_now timestamptz, p_limit integer,
                                     OUT expired bigint, OUT expired_paid bigint, OUT grants integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now    timestamptz := COALESCE(p_now, ledger_now());
    v_users  text[];
    v_user   text;
    v_done   record;
BEGIN
    expired := 0;
    expired_paid := 0;
    grants := 0;
    SELECT array_agg(DISTINCT d.user_id) INTO v_users FROM (
        SELECT g.user_id FROM credit_grants g
         WHERE g.remaining > g.reserved AND g.expires_at <= v_now
         ORDER BY g.expires_at
         LIMIT p_limit
    ) d;
    IF v_users IS NULL THEN
        RETURN;
    END IF;
    FOR v_user IN
        SELECT a.user_id FROM accounts a WHERE a.user_id = ANY (v_users) ORDER BY a.user_id FOR UPDATE SKIP LOCKED
    LOOP
        SELECT * INTO STRICT v_done
          FROM grant_expire_due(v_user, v_now, (SELECT a.balance FROM accounts a WHERE a.user_id = v_user));
        IF v_done.grants > 0 THEN
            UPDATE accounts a SET balance = a.balance - v_done.expired, updated_at = now() WHERE a.user_id = v_user;
            expired := expired + v_done.expired;
            expired_paid := expired_paid + v_done.expired_paid;
            grants := grants + v_done.grants;
        END IF;
    END LOOP;
END
$$;
"""

# The functions that write journal entries, changed to give and burn grants (their 0010 definitions come back on
# downgrade).
CHANGED_SQL = r"""
DROP FUNCTION ledger_post(text, bigint, text, text, bytea, text, text, jsonb, text, boolean);
DROP FUNCTION ledger_post_batch_atomic(text[], bigint[], text[], text[], bytea[], text[], text[], jsonb[], text[],
    boolean[]);
DROP FUNCTION ledger_post_batch(text[], bigint[], text[], text[], bytea[], text[], text[], jsonb[], text[], boolean[]);

CREATE FUNCTION ledger_post_batch(
    p_user_ids text[], p_deltas bigint[], p_kinds text[], p_idempotency_keys text[], p_fingerprints bytea[],
    p_reasons text[], p_references text[], p_metadata jsonb[], p_actors text[], p_allow_negative boolean[],
    p_categories text[] DEFAULT NULL, p_priorities integer[] DEFAULT NULL, p_expires_at timestamptz[] DEFAULT NULL
) RETURNS TABLE (
    ordinal integer, outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint,
    kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint,
    hold_id bigint, created_at timestamptz, held bigint, spent_paid bigint
) LANGUAGE plpgsql AS $$
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
$$;

CREATE FUNCTION ledger_post(
    p_user_id text, p_delta bigint, p_kind text, p_idempotency_key text, p_fingerprint bytea, p_reason text,
    p_reference text, p_metadata jsonb, p_actor text, p_allow_negative boolean, p_category text DEFAULT NULL,
    p_priority integer DEFAULT NULL, p_expires_at timestamptz DEFAULT NULL
) RETURNS TABLE (
    outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint, kind text,
    idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint, hold_id bigint,
    created_at timestamptz, held bigint, spent_paid bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_entry credit_transactions%ROWTYPE;
BEGIN
    -- A retry found without a lock is answered at once; everything else is ledger_post_batch's rules.
    SELECT * INTO v_entry FROM credit_transactions t
     WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        RETURN QUERY SELECT
            CASE WHEN v_entry.request_fingerprint = p_fingerprint THEN 'replayed' ELSE 'idempotency_key_reused' END,
            NULL::bigint, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after, v_entry.kind,
            v_entry.idempotency_key, v_entry.reason, v_entry.reference, v_entry.payment_id,
            v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT b.outcome, b.balance, b.id, b.user_id, b.delta, b.balance_after, b.kind, b.idempotency_key,
                        b.reason, b.reference, b.payment_id, b.admin_action_id, b.hold_id, b.created_at, b.held,
                        b.spent_paid
      FROM ledger_post_batch(ARRAY[p_user_id], ARRAY[p_delta], ARRAY[p_kind], ARRAY[p_idempotency_key],
                             ARRAY[p_fingerprint], ARRAY[p_reason], ARRAY[p_reference], ARRAY[p_metadata],
                             ARRAY[p_actor], ARRAY[p_allow_negative], ARRAY[p_category], ARRAY[p_priority],
                             ARRAY[p_expires_at]) AS b;
END
$$;

CREATE FUNCTION ledger_post_batch_atomic(
    p_user_ids text[], p_deltas bigint[], p_kinds text[], p_idempotency_keys text[], p_fingerprints bytea[],
    p_reasons text[], p_references text[], p_metadata jsonb[], p_actors text[], p_allow_negative boolean[],
    p_categories text[] DEFAULT NULL, p_priorities integer[] DEFAULT NULL, p_expires_at timestamptz[] DEFAULT NULL
) RETURNS TABLE (
    ordinal integer, outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint,
    kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint,
    hold_id bigint, created_at timestamptz, held bigint, spent_paid bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_row     record;
    v_refused jsonb;      -- the refused posting with the lowest ordinal, as JSON
BEGIN
    FOR v_row IN SELECT * FROM ledger_post_batch(p_user_ids, p_deltas, p_kinds, p_idempotency_keys, p_fingerprints,
                                                 p_reasons, p_references, p_metadata, p_actors, p_allow_negative,
                                                 p_categories, p_priorities, p_expires_at)
    LOOP
        IF v_row.outcome NOT IN ('applied', 'replayed') THEN
            IF v_refused IS NULL OR (v_refused->>'ordinal')::integer > v_row.ordinal THEN
                v_refused := to_jsonb(v_row);
            END IF;
        ELSIF v_refused IS NULL THEN
            ordinal := v_row.ordinal; outcome := v_row.outcome; balance := v_row.balance; id := v_row.id;
            user_id := v_row.user_id; delta := v_row.delta; balance_after := v_row.balance_after;
            kind := v_row.kind; idempotency_key := v_row.idempotency_key; reason := v_row.reason;
            reference := v_row.reference; payment_id := v_row.payment_id;
            admin_action_id := v_row.admin_action_id; hold_id := v_row.hold_id;
            created_at := v_row.created_at; held := v_row.held; spent_paid := v_row.spent_paid;
            RETURN NEXT;
        END IF;
    END LOOP;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION 'ledger_post_batch_atomic: posting % was refused (%); nothing applied',
                        v_refused->>'ordinal', v_refused->>'outcome'
              USING ERRCODE = 'LD001', DETAIL = v_refused::text;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION public.payment_journal(p_user_id text, p_payment_id bigint, p_delta bigint, p_kind text,
    p_key text, p_reason text)
 RETURNS credit_transactions
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_before  bigint;
    v_balance bigint;
    v_entry   credit_transactions;
    v_grant   credit_grants;
    v_days    integer;
BEGIN
    SELECT a.balance INTO STRICT v_before FROM accounts a WHERE a.user_id = p_user_id;
    UPDATE accounts a SET balance = a.balance + p_delta, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_before + p_delta, 'balance_after does not follow from delta';
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, payment_id)
    VALUES (p_user_id, p_delta, v_balance, p_kind, p_key,
            sha256(convert_to(concat_ws('|', 'payment', p_payment_id, p_kind, p_delta, p_key, p_reason), 'UTF8')),
            p_reason, p_payment_id)
    RETURNING t.* INTO v_entry;
    IF p_delta > 0 AND p_kind = 'purchase' THEN
        SELECT p.grant_valid_days INTO STRICT v_days FROM payments p
         WHERE p.user_id = p_user_id AND p.id = p_payment_id;
        -- Valid for the pack's days from the purchase entry (payments.credited_at).
        PERFORM grant_give(v_entry, 'paid', 50,
                           CASE WHEN v_days > 0 THEN v_entry.created_at + make_interval(days => v_days) END);
    ELSIF p_delta > 0 THEN
        -- A reversal reinstates credits as the purchase gave them: its category, priority and expiry.
        SELECT * INTO v_grant FROM credit_grants g
         WHERE g.user_id = p_user_id AND g.payment_id = p_payment_id ORDER BY g.id LIMIT 1;
        PERFORM grant_give(v_entry, COALESCE(v_grant.category, 'paid'), COALESCE(v_grant.priority, 50),
                           v_grant.expires_at);
    ELSE
        PERFORM grant_burn(v_entry, ledger_now());
    END IF;
    RETURN v_entry;
END
$function$;;

CREATE OR REPLACE FUNCTION public.ledger_payment_settle_manually(p_payment_id bigint, p_actor text, p_reason text)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r           payment_result;
    v_user_id   text;
    v_account   accounts;
    v_payment   payments;
    v_entry     credit_transactions;
    v_admin_id  bigint;
    v_balance   bigint;
    v_reason    text;
BEGIN
    SELECT t.user_id INTO v_user_id FROM payments t WHERE t.id = p_payment_id ORDER BY t.user_id LIMIT 1;
    IF v_user_id IS NULL THEN
        r.outcome := 'not_found';
        r.detail := format('no payment %s', p_payment_id);
        RETURN r;
    END IF;
    v_account := payment_lock_account(v_user_id);
    SELECT * INTO v_payment FROM payments t WHERE t.user_id = v_user_id AND t.id = p_payment_id FOR UPDATE;
    IF v_payment.id IS NULL THEN  -- merged into another row between the two reads
        r.outcome := 'not_found';
        r.detail := format('payment %s was merged into another payment of its user', p_payment_id);
        RETURN r;
    END IF;
    IF v_payment.credit_transaction_id IS NOT NULL THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = v_user_id AND t.id = v_payment.credit_transaction_id;
        r.outcome := 'applied';
        r.payment := v_payment;
        r.entry := v_entry;
        r.replayed := true;
        r.credits_moved := 0;
        RETURN r;
    END IF;
    IF v_account.status <> 'active' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    v_admin_id := nextval(pg_get_serial_sequence('admin_actions', 'id'));
    v_reason := left(format('purchase of package %s, credited by hand: %s', v_payment.package_id, p_reason), 500);
    UPDATE accounts a SET balance = a.balance + v_payment.credits, updated_at = now()
     WHERE a.user_id = v_user_id
    RETURNING a.balance INTO v_balance;
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, payment_id, admin_action_id)
    VALUES (v_user_id, v_payment.credits, v_balance, 'purchase', format('payment:%s:purchase', v_payment.id),
            sha256(convert_to(concat_ws('|', 'payment', v_payment.id, 'purchase', v_payment.credits,
                                        'manual', p_actor, p_reason), 'UTF8')),
            v_reason, v_payment.id, v_admin_id)
    RETURNING t.* INTO v_entry;
    ASSERT v_entry.balance_after = v_account.balance + v_payment.credits, 'balance_after does not follow from delta';
    PERFORM grant_give(v_entry, 'paid', 50,
                       CASE WHEN v_payment.grant_valid_days > 0
                            THEN v_entry.created_at + make_interval(days => v_payment.grant_valid_days) END);
    INSERT INTO admin_actions (id, user_id, actor, delta, reason, transaction_id)
    VALUES (v_admin_id, v_user_id, p_actor, v_payment.credits, p_reason, v_entry.id);
    IF v_payment.status IN ('INIT', 'FAILED', 'EXPIRED') THEN
        v_payment.status := 'PAID';
    END IF;
    v_payment.credit_transaction_id := v_entry.id;
    v_payment.credited_at := v_entry.created_at;
    r := payment_apply(v_payment);
    r.payment := payment_record_paid(r.payment, NULL, NULL, NULL, NULL);
    r.entry := v_entry;
    r.credited := true;
    r.replayed := false;
    r.credits_moved := v_admin_id;
    RETURN r;
END
$function$;;

CREATE OR REPLACE FUNCTION public.payment_save(p payments)
 RETURNS payments
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_saved payments;
BEGIN
    UPDATE payments t SET
        checkout_session_id   = p.checkout_session_id,
        payment_intent_id     = p.payment_intent_id,
        charge_id             = p.charge_id,
        status                = p.status,
        amount_refunded_minor = p.amount_refunded_minor,
        credits_clawed_back   = p.credits_clawed_back,
        dispute_id            = p.dispute_id,
        dispute_status        = p.dispute_status,
        adjustment_count      = p.adjustment_count,
        credit_transaction_id = p.credit_transaction_id,
        customer_email        = p.customer_email,
        customer_id           = p.customer_id,
        anonymized            = p.anonymized,
        created_at            = p.created_at,
        credited_at           = p.credited_at,
        grant_valid_days      = p.grant_valid_days,
        updated_at            = clock_timestamp()
     WHERE t.user_id = p.user_id AND t.id = p.id AND t IS DISTINCT FROM p
    RETURNING t.* INTO v_saved;
    IF v_saved.id IS NULL THEN
        RETURN p;
    END IF;
    RETURN v_saved;
END
$function$;;

CREATE OR REPLACE FUNCTION public.ledger_hold_reserve(p_user_id text, p_amount bigint, p_idempotency_key text,
    p_fingerprint bytea, p_reason text, p_ttl_seconds integer, p_active_max integer, p_now timestamp with time zone)
 RETURNS hold_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
    v_expired  bigint;
BEGIN
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        -- No account: nothing to hold, and no hold of this key can exist (a hold needs its account).
        r.outcome := 'insufficient_credits';
        r.balance := 0;
        r.held := 0;
        RETURN r;
    END IF;
    v_now := COALESCE(p_now, ledger_now());
    IF hold_expire_due(p_user_id, v_now, NULL) > 0 THEN
        SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id;
    END IF;
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        r.outcome := CASE WHEN v_hold.request_fingerprint = p_fingerprint THEN 'replayed'
                          ELSE 'idempotency_key_reused' END;
        r.hold := v_hold;
        RETURN r;
    END IF;
    v_expired := grant_expired_rest(p_user_id, v_now);
    r.balance := v_account.balance - v_expired;
    r.held := v_account.held;
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    IF v_account.balance - v_expired - v_account.held < p_amount THEN
        r.outcome := 'insufficient_credits';
        RETURN r;
    END IF;
    IF (SELECT count(*) FROM holds h WHERE h.user_id = p_user_id AND h.status = 'active') >= p_active_max THEN
        r.outcome := 'too_many_active_holds';
        RETURN r;
    END IF;
    INSERT INTO holds AS h (user_id, amount, idempotency_key, request_fingerprint, reason, created_at, expires_at)
    VALUES (p_user_id, p_amount, p_idempotency_key, p_fingerprint, p_reason, v_now,
            v_now + make_interval(secs => p_ttl_seconds))
    RETURNING h.* INTO v_hold;
    UPDATE accounts a SET held = a.held + p_amount WHERE a.user_id = p_user_id;
    PERFORM grant_reserve(p_user_id, v_hold.id, p_amount, v_now);
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)
    VALUES (p_user_id, v_hold.id, 'reserved', p_amount, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    r.held := v_account.held + p_amount;
    RETURN r;
END
$function$;;

CREATE OR REPLACE FUNCTION public.ledger_hold_capture(p_user_id text, p_hold_id bigint, p_amount bigint,
    p_idempotency_key text, p_fingerprint bytea, p_now timestamp with time zone)
 RETURNS hold_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
    v_entry    credit_transactions;
    v_amount   bigint;
    v_balance  bigint;
    v_expired  bigint;
BEGIN
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    v_now := COALESCE(p_now, ledger_now());
    IF hold_expire_due(p_user_id, v_now, NULL) > 0 THEN
        SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id;
    END IF;
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.capture_idempotency_key = p_idempotency_key;
    IF FOUND THEN
        r.hold := v_hold;
        IF v_hold.capture_fingerprint <> p_fingerprint THEN
            r.outcome := 'idempotency_key_reused';
            RETURN r;
        END IF;
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_hold.capture_transaction_id;
        r.entry := v_entry;
        r.outcome := 'replayed';
        RETURN r;
    END IF;
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.id = p_hold_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    r.hold := v_hold;
    v_expired := grant_expired_rest(p_user_id, v_now);
    r.balance := v_account.balance - v_expired;
    r.held := v_account.held;
    IF v_hold.status <> 'active' THEN
        r.outcome := 'hold_not_active';
        RETURN r;
    END IF;
    v_amount := CASE WHEN p_amount = 0 THEN v_hold.amount ELSE p_amount END;
    IF v_amount > v_hold.amount THEN
        r.outcome := 'capture_exceeds_hold';
        RETURN r;
    END IF;
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    -- A capture is a spend: it never takes the balance below zero (SPEC invariant 2). Reachable only when a
    -- refund or chargeback took back credits that were held.
    IF v_account.balance - v_expired < v_amount THEN
        r.outcome := 'insufficient_credits';
        RETURN r;
    END IF;

    UPDATE accounts a SET balance = a.balance - v_amount, held = a.held - v_hold.amount, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_account.balance - v_amount, 'balance_after does not follow from delta';
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, hold_id)
    VALUES (p_user_id, -v_amount, v_balance, 'hold_capture', format('hold:%s:capture', v_hold.id),
            sha256(convert_to(concat_ws('|', 'hold', v_hold.id, 'capture', -v_amount, v_hold.reason), 'UTF8')),
            v_hold.reason, v_hold.id)
    RETURNING t.* INTO v_entry;
    r.spent_paid := grant_burn(v_entry, v_now);
    PERFORM grant_unreserve(p_user_id, ARRAY[v_hold.id]);
    UPDATE holds h SET status = 'captured', captured_amount = v_amount, ended_at = v_now,
                       capture_idempotency_key = p_idempotency_key, capture_fingerprint = p_fingerprint,
                       capture_transaction_id = v_entry.id
     WHERE h.user_id = p_user_id AND h.id = v_hold.id
    RETURNING h.* INTO v_hold;
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, captured_amount, transaction_id, created_at)
    VALUES (p_user_id, v_hold.id, 'captured', -v_hold.amount, v_amount, v_entry.id, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    r.entry := v_entry;
    r.balance := v_balance;
    r.held := v_account.held - v_hold.amount;
    RETURN r;
END
$function$;;

CREATE OR REPLACE FUNCTION public.ledger_hold_release(p_user_id text, p_hold_id bigint, p_now timestamp with time zone)
 RETURNS hold_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
BEGIN
    SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    v_now := COALESCE(p_now, ledger_now());
    PERFORM hold_expire_due(p_user_id, v_now, NULL);
    SELECT * INTO v_hold FROM holds h WHERE h.user_id = p_user_id AND h.id = p_hold_id FOR UPDATE;
    IF NOT FOUND THEN
        r.outcome := 'not_found';
        RETURN r;
    END IF;
    r.hold := v_hold;
    IF v_hold.status = 'released' THEN
        r.outcome := 'replayed';
        RETURN r;
    END IF;
    IF v_hold.status <> 'active' THEN
        r.outcome := 'hold_not_active';
        RETURN r;
    END IF;
    UPDATE accounts a SET held = a.held - v_hold.amount WHERE a.user_id = p_user_id;
    PERFORM grant_unreserve(p_user_id, ARRAY[v_hold.id]);
    UPDATE holds h SET status = 'released', ended_at = v_now
     WHERE h.user_id = p_user_id AND h.id = v_hold.id
    RETURNING h.* INTO v_hold;
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)
    VALUES (p_user_id, v_hold.id, 'released', -v_hold.amount, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    RETURN r;
END
$function$;;

CREATE OR REPLACE FUNCTION public.hold_expire_due(p_user_id text, p_now timestamp with time zone, p_limit integer)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_count     integer;
    v_released  bigint;
    v_ids       bigint[];
BEGIN
    WITH due AS (
        SELECT h.id FROM holds h
         WHERE h.user_id = p_user_id AND h.status = 'active' AND h.expires_at <= p_now
         ORDER BY h.expires_at, h.id
         LIMIT p_limit
    ), expired AS (
        UPDATE holds h SET status = 'expired', ended_at = h.expires_at
          FROM due
         WHERE h.user_id = p_user_id AND h.id = due.id AND h.status = 'active'
        RETURNING h.id, h.amount
    ), events AS (
        INSERT INTO hold_events AS e (user_id, hold_id, kind, held_delta, created_at)
        SELECT p_user_id, x.id, 'expired', -x.amount, p_now FROM expired x
        RETURNING e.held_delta, e.hold_id
    )
    SELECT count(*), COALESCE(-sum(events.held_delta), 0), array_agg(events.hold_id)
      INTO v_count, v_released, v_ids FROM events;
    IF v_count > 0 THEN
        UPDATE accounts a SET held = a.held - v_released WHERE a.user_id = p_user_id;
        PERFORM grant_unreserve(p_user_id, v_ids);
    END IF;
    RETURN v_count;
END
$function$;;

DROP FUNCTION ledger_payment_settle(text, text, text, text, text, bigint, bigint, text, text, text, text, text, bytea,
    bigint, bigint, bigint);
CREATE FUNCTION ledger_payment_settle(p_user_id text, p_session_id text, p_intent_id text, p_charge_id text,
    p_package_id text, p_credits bigint, p_amount_minor bigint, p_currency_code text, p_customer_email text,
    p_customer_id text, p_event_id text, p_event_type text, p_payload_sha256 bytea, p_amount_paid_minor bigint,
    p_amount_tax_minor bigint, p_amount_discount_minor bigint, p_grant_valid_days integer DEFAULT 0)
 RETURNS payment_result
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          payment_result;
    v_account  accounts;
    v_event    processed_events;
    v_payment  payments;
    v_entry    credit_transactions;
    v_credited boolean := false;
BEGIN
    v_account := payment_lock_account(p_user_id);
    v_event := payment_event_find(p_event_id);
    IF v_event.event_id IS NOT NULL THEN
        RETURN payment_event_replay(v_event, p_payload_sha256, p_user_id, p_session_id, p_intent_id);
    END IF;
    r := payment_match(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits, p_amount_minor,
                       p_currency_code, p_customer_email, p_customer_id, v_account.status = 'active');
    IF r.outcome = 'conflict' THEN
        RETURN r;
    END IF;
    v_payment := r.payment;
    IF r.outcome = 'missing' THEN
        v_payment := payment_insert(p_user_id, p_session_id, p_intent_id, p_charge_id, p_package_id, p_credits,
                                    p_amount_minor, p_currency_code, p_customer_email, p_customer_id,
                                    v_account.status = 'active', 'INIT');
    END IF;
    IF p_grant_valid_days > 0 AND v_payment.grant_valid_days <> p_grant_valid_days
       AND NOT payment_is_paid(v_payment) THEN
        -- How long the pack's credits stay valid (the catalog's valid_days), known by the time it is paid.
        UPDATE payments p SET grant_valid_days = p_grant_valid_days
         WHERE p.user_id = v_payment.user_id AND p.id = v_payment.id;
        v_payment.grant_valid_days := p_grant_valid_days;
    END IF;
    IF v_payment.status = 'EXPIRED' THEN
        v_payment.status := 'INIT';  -- A late proof of payment: the expired session was paid after all.
    END IF;
    IF NOT payment_is_paid(v_payment) THEN
        v_payment.status := 'PAID';
        IF v_account.status = 'active' THEN
            v_entry := payment_journal(p_user_id, v_payment.id, v_payment.credits, 'purchase',
                                       format('payment:%s:purchase', v_payment.id),
                                       format('purchase of package %s', v_payment.package_id));
            v_payment.credit_transaction_id := v_entry.id;
            v_payment.credited_at := v_entry.created_at;
            v_credited := true;
        END IF;
    END IF;
    r := payment_apply(v_payment);
    v_payment := payment_record_paid(
        r.payment, p_amount_paid_minor, p_amount_tax_minor, p_amount_discount_minor,
        CASE WHEN (r.payment).credit_transaction_id IS NULL THEN 'account_anonymized' END);
    r.payment := v_payment;
    IF v_payment.credit_transaction_id IS NULL THEN
        IF p_event_id IS NOT NULL THEN
            INSERT INTO processed_events (event_id, event_type, outcome, payload_sha256, user_id, payment_id,
                                          payment_intent_id, detail)
            VALUES (p_event_id, p_event_type, 'refused', p_payload_sha256, p_user_id, v_payment.id,
                    v_payment.payment_intent_id,
                    format('account_anonymized: payment %s paid, not credited (the account was anonymized); refund it',
                           v_payment.id))
            ON CONFLICT (event_id) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'event % was recorded concurrently', p_event_id USING ERRCODE = 'serialization_failure';
            END IF;
        END IF;
        r.outcome := 'purchase_account_anonymized';
        r.detail := v_payment.id::text;
        r.credited := false;
        r.credits_moved := 0;
        RETURN r;
    END IF;
    IF NOT v_credited THEN
        SELECT * INTO STRICT v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.id = v_payment.credit_transaction_id;
    END IF;
    PERFORM payment_event_applied(p_event_id, p_event_type, p_payload_sha256, p_user_id, v_payment.id,
                                  v_payment.payment_intent_id);
    r.entry := v_entry;
    r.credited := v_credited;
    r.credits_moved := CASE WHEN v_credited THEN v_payment.credits ELSE 0 END;
    RETURN r;
END
$function$;;
"""


def upgrade() -> None:
    op.execute(SCHEMA_SQL)
    op.execute(FUNCTIONS_SQL)
    op.execute(CARRY_OVER_SQL)
    op.execute(CHANGED_SQL)


# Each function this migration changed, and the revision whose definition comes back on downgrade.
RESTORED_FROM = {
    "ledger_post_batch": "0004_post_batch.py",
    "ledger_post": "0009_post_one_through_batch.py",
    "ledger_post_batch_atomic": "0010_post_batch_atomic.py",
    "ledger_payment_settle": "0006_checkout_outcomes.py",
    "payment_journal": "0002_payment_lifecycle.py",
    "ledger_payment_settle_manually": "0006_checkout_outcomes.py",
    "payment_save": "0002_payment_lifecycle.py",
    "ledger_hold_reserve": "0003_holds.py",
    "ledger_hold_capture": "0003_holds.py",
    "ledger_hold_release": "0003_holds.py",
    "hold_expire_due": "0003_holds.py",
}

DOWNGRADE_SQL = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM credit_transactions t WHERE t.kind = 'expiry') THEN
        RAISE EXCEPTION 'cannot downgrade below 0011: the journal holds expiry entries, which 0010 has no kind for '
                        '(the journal is append-only; keep 0011)';
    END IF;
END
$$;
DROP FUNCTION ledger_post(text, bigint, text, text, bytea, text, text, jsonb, text, boolean, text, integer,
    timestamptz);
DROP FUNCTION ledger_post_batch_atomic(text[], bigint[], text[], text[], bytea[], text[], text[], jsonb[], text[],
                                       boolean[], text[], integer[], timestamptz[]);
DROP FUNCTION ledger_post_batch(text[], bigint[], text[], text[], bytea[], text[], text[], jsonb[], text[], boolean[],
                                text[], integer[], timestamptz[]);
DROP FUNCTION ledger_payment_settle(text, text, text, text, text, bigint, bigint, text, text, text, text, text, bytea,
                                    bigint, bigint, bigint, integer);
DROP FUNCTION ledger_expire_grants(timestamptz, integer);
DROP FUNCTION grant_expire_due(text, timestamptz, bigint);
DROP FUNCTION grant_unreserve(text, bigint[]);
DROP FUNCTION grant_reserve(text, bigint, bigint, timestamptz);
DROP FUNCTION grant_expired_rest(text, timestamptz);
DROP FUNCTION grant_burn(credit_transactions, timestamptz);
DROP FUNCTION grant_take(text, bigint, bigint, bigint, boolean, bigint);
DROP FUNCTION grant_give(credit_transactions, text, integer, timestamptz);
ALTER TYPE hold_result DROP ATTRIBUTE spent_paid;
DROP TABLE hold_grants;
DROP TABLE grant_movements;
DROP TABLE credit_grants;
ALTER TABLE payments DROP COLUMN grant_valid_days;
ALTER TABLE accounts DROP COLUMN debt;
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN (
    'purchase', 'spend', 'grant', 'refund', 'chargeback', 'chargeback_reversal', 'admin_adjustment',
    'hold_capture', 'refund_reversal'));
"""


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    for name, revision_file in RESTORED_FROM.items():
        text = Path(__file__).with_name(revision_file).read_text(encoding="utf-8")
        op.execute(_as_replacement(text, name))


def _as_replacement(revision_text: str, name: str) -> str:
    """One function exactly as an earlier revision wrote it, as CREATE OR REPLACE."""
    pattern = rf"^CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?^\$\$;$"
    found = re.search(pattern, revision_text, re.MULTILINE | re.DOTALL)
    assert found is not None, f"{name} not found"
    return re.sub(r"^CREATE (?:OR REPLACE )?FUNCTION", "CREATE OR REPLACE FUNCTION", found.group(0), count=1)
