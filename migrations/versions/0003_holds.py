"""Holds: reserve credits before a paid action, then capture (fully or partly) or release them.

Tables
- holds: one row per reservation; its status moves once, from active to captured, released or expired.
- hold_events: the append-only audit of holds (reserved, then exactly one of captured / released /
  expired), each with its change to the held sum. A unique index makes "a hold ends exactly once" a
  fact of the database, not of the code.
- accounts.held: the cached sum of the amounts of the account's holds whose status is 'active', kept
  by the functions below under the account lock (like accounts.balance for the journal). It can
  include active holds already past expires_at that nothing has expired yet (see "Expiry"): the
  available balance is balance - held only after lazy expiry, which every function that checks
  availability runs first; readers (GetBalance, GetHold, ListHolds) exclude such holds themselves.
  Invariant: accounts.held = SUM(amount) of active holds = SUM(held_delta) of the user's hold_events.

Locking: every function locks the user's accounts row first, the same row ledger_post and the payment
functions lock, then holds, then the journal, then hold_events. One lock order for everyone: no
deadlock between a capture, a Debit, a refund and the sweeper (which skips locked accounts).

Expiry: a hold is expired exactly when the ledger's clock reaches expires_at. Two paths write it, both
under the account lock and both re-checking the status, so a hold ends once whoever gets there first:
- lazily: reserve, capture, release and ledger_post's availability check first expire the user's due
  holds (hold_expire_due), so an expired hold never blocks spending and can never be captured;
- the sweeper (ledger_expire_holds, called by every ledger replica in a loop), in bounded batches,
  skipping accounts that are locked (their own calls expire them), so holds release by themselves.
The time is read after the account lock is held, so the decision is made at the moment it takes effect.

Clock: ledger_now() is clock_timestamp(), unless the session set `credits.clock_override` to a
timestamptz (tests move the clock of their own ledger's connections this way; the gRPC API has no way
to set it, and a session setting affects only that session). The functions also take p_now: NULL (what
the ledger always passes) means ledger_now(); tests call the functions directly with a given instant.

Revision ID: 0003_holds
Revises: 0002_payment_lifecycle
Create Date: 2026-11-28
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0003_holds"
down_revision = "0002_payment_lifecycle"
branch_labels = None
depends_on = None

SCHEMA_SQL = r"""
ALTER TABLE accounts ADD COLUMN held bigint NOT NULL DEFAULT 0 CHECK (held >= 0);
COMMENT ON COLUMN accounts.held IS
    'Cached sum of holds.amount over this account''s holds with status active (kept under the account lock). '
    'May include active holds past expires_at not yet expired: availability is checked after lazy expiry.';

CREATE TABLE holds (
    id                       bigint      GENERATED ALWAYS AS IDENTITY,
    user_id                  text        NOT NULL REFERENCES accounts (user_id),
    amount                   bigint      NOT NULL CHECK (amount > 0),
    captured_amount          bigint      NOT NULL DEFAULT 0 CHECK (captured_amount >= 0 AND captured_amount <= amount),
    status                   text        NOT NULL DEFAULT 'active'
                                         CHECK (status IN ('active', 'captured', 'released', 'expired')),
    idempotency_key          text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    request_fingerprint      bytea       NOT NULL CHECK (length(request_fingerprint) = 32),
    reason                   text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_at               timestamptz NOT NULL,
    expires_at               timestamptz NOT NULL,
    ended_at                 timestamptz,
    -- The capture request that ended the hold: its key and fingerprint answer a replay of it.
    capture_idempotency_key  text        CHECK (length(capture_idempotency_key) BETWEEN 1 AND 200),
    capture_fingerprint      bytea       CHECK (length(capture_fingerprint) = 32),
    capture_transaction_id   bigint,
    PRIMARY KEY (user_id, id),
    UNIQUE (user_id, idempotency_key),
    FOREIGN KEY (user_id, capture_transaction_id) REFERENCES credit_transactions (user_id, id),
    CHECK (expires_at > created_at),
    CHECK ((status = 'active') = (ended_at IS NULL)),
    CHECK ((status = 'captured') = (capture_transaction_id IS NOT NULL)),
    CHECK ((status = 'captured') = (captured_amount > 0)),
    CHECK ((capture_idempotency_key IS NULL) = (capture_transaction_id IS NULL)),
    CHECK ((capture_fingerprint IS NULL) = (capture_transaction_id IS NULL))
);
-- A capture key names one capture of one hold of the user.
CREATE UNIQUE INDEX holds_capture_idempotency_key_idx ON holds (user_id, capture_idempotency_key)
    WHERE capture_idempotency_key IS NOT NULL;
-- The sweeper: due active holds, earliest expiry first.
CREATE INDEX holds_active_expires_at_idx ON holds (expires_at) WHERE status = 'active';
-- One user's active holds: lazy expiry, the held sum of GetBalance, ListHolds(active_only).
CREATE INDEX holds_user_id_active_idx ON holds (user_id, expires_at) WHERE status = 'active';

-- The audit of holds. Append-only (triggers below). held_delta: +amount when reserved, -amount when the
-- hold ends; captured_amount: what the capture spent (the rest was released with it).
CREATE TABLE hold_events (
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    user_id          text        NOT NULL,
    hold_id          bigint      NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('reserved', 'captured', 'released', 'expired')),
    held_delta       bigint      NOT NULL,
    captured_amount  bigint      NOT NULL DEFAULT 0 CHECK (captured_amount >= 0),
    transaction_id   bigint,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (user_id, id),
    FOREIGN KEY (user_id, hold_id) REFERENCES holds (user_id, id),
    FOREIGN KEY (user_id, transaction_id) REFERENCES credit_transactions (user_id, id),
    CHECK (held_delta <> 0),
    CHECK ((kind = 'reserved') = (held_delta > 0)),
    CHECK ((kind = 'captured') = (transaction_id IS NOT NULL)),
    CHECK ((kind = 'captured') = (captured_amount > 0)),
    CHECK (captured_amount <= abs(held_delta))
);
CREATE UNIQUE INDEX hold_events_reserved_idx ON hold_events (user_id, hold_id) WHERE kind = 'reserved';
-- A hold ends exactly once.
CREATE UNIQUE INDEX hold_events_ended_idx ON hold_events (user_id, hold_id) WHERE kind <> 'reserved';

CREATE TRIGGER hold_events_append_only
    BEFORE UPDATE OR DELETE ON hold_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER hold_events_no_truncate
    BEFORE TRUNCATE ON hold_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();
-- A hold's status changes, but the row stays: the journal and the audit refer to it.
CREATE TRIGGER holds_no_delete
    BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table();
CREATE TRIGGER holds_no_truncate
    BEFORE TRUNCATE ON holds
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only_table();

-- What every hold function answers. outcome: 'applied' | 'replayed' | a refusal ('not_found',
-- 'hold_not_active', 'idempotency_key_reused', 'insufficient_credits', 'account_anonymized',
-- 'capture_exceeds_hold', 'too_many_active_holds'). balance / held: the account's, for refusals.
CREATE TYPE hold_result AS (
    outcome  text,
    hold     holds,
    entry    credit_transactions,
    balance  bigint,
    held     bigint
);
"""

CLOCK_AND_EXPIRY_SQL = r"""
-- The ledger's clock for holds (see the module docstring of migrations/versions/0003_holds.py).
CREATE FUNCTION ledger_now() RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT COALESCE(NULLIF(current_setting('credits.clock_override', true), '')::timestamptz, clock_timestamp())
$$;

-- Expires the user's active holds whose expiry has come by p_now (at most p_limit of them, earliest first;
-- NULL: all of them), releasing what they held. The caller holds the user's account lock; every change of
-- a hold's status happens under it, so these rows cannot change meanwhile. Returns how many expired.
CREATE FUNCTION hold_expire_due(p_user_id text, p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count     integer;
    v_released  bigint;
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
        RETURNING e.held_delta
    )
    SELECT count(*), COALESCE(-sum(events.held_delta), 0) INTO v_count, v_released FROM events;
    IF v_count > 0 THEN
        UPDATE accounts a SET held = a.held - v_released WHERE a.user_id = p_user_id;
    END IF;
    RETURN v_count;
END
$$;

-- The sweeper: expires at most p_limit due holds, earliest expiry first, of accounts nobody holds locked
-- right now (those expire lazily in their own calls, or in the next sweep). Returns how many expired.
CREATE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := COALESCE(p_now, ledger_now());
    v_users    text[];
    v_user     text;
    v_expired  integer := 0;
BEGIN
    SELECT array_agg(DISTINCT d.user_id) INTO v_users FROM (
        SELECT h.user_id FROM holds h
         WHERE h.status = 'active' AND h.expires_at <= v_now
         ORDER BY h.expires_at
         LIMIT p_limit
    ) d;
    IF v_users IS NULL THEN
        RETURN 0;
    END IF;
    FOR v_user IN
        SELECT a.user_id FROM accounts a WHERE a.user_id = ANY (v_users) ORDER BY a.user_id FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN v_expired >= p_limit;
        v_expired := v_expired + hold_expire_due(v_user, v_now, p_limit - v_expired);
    END LOOP;
    RETURN v_expired;
END
$$;
"""

HOLD_FUNCTIONS_SQL = r"""
-- Reserve: under the account lock, after lazy expiry: a seen key is replayed (same fingerprint) or refused;
-- otherwise the available balance (balance - held) must cover the amount.
CREATE FUNCTION ledger_hold_reserve(
    p_user_id text, p_amount bigint, p_idempotency_key text, p_fingerprint bytea, p_reason text,
    p_ttl_seconds integer, p_active_max integer, p_now timestamptz
) RETURNS hold_result LANGUAGE plpgsql AS $$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
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
    r.balance := v_account.balance;
    r.held := v_account.held;
    IF v_account.status = 'anonymized' THEN
        r.outcome := 'account_anonymized';
        RETURN r;
    END IF;
    IF v_account.balance - v_account.held < p_amount THEN
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
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)
    VALUES (p_user_id, v_hold.id, 'reserved', p_amount, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    r.held := v_account.held + p_amount;
    RETURN r;
END
$$;

-- Capture: spends p_amount (0: the whole hold) of an active hold with one journal entry (kind hold_capture,
-- key hold:N:capture for hold N) and releases the rest, in one step that ends the hold. The capture key
-- replays the capture it made (same fingerprint: same hold and amount) whatever the hold's state now.
CREATE FUNCTION ledger_hold_capture(
    p_user_id text, p_hold_id bigint, p_amount bigint, p_idempotency_key text, p_fingerprint bytea,
    p_now timestamptz
) RETURNS hold_result LANGUAGE plpgsql AS $$
DECLARE
    r          hold_result;
    v_account  accounts;
    v_now      timestamptz;
    v_hold     holds;
    v_entry    credit_transactions;
    v_amount   bigint;
    v_balance  bigint;
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
    r.balance := v_account.balance;
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
    IF v_account.balance < v_amount THEN
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
$$;

-- Release: ends an active hold without spending. Releasing a released hold is a replay; a captured or
-- expired one is refused. Allowed on an anonymized account: it moves no credits.
CREATE FUNCTION ledger_hold_release(p_user_id text, p_hold_id bigint, p_now timestamptz) RETURNS hold_result
LANGUAGE plpgsql AS $$
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
    UPDATE holds h SET status = 'released', ended_at = v_now
     WHERE h.user_id = p_user_id AND h.id = v_hold.id
    RETURNING h.* INTO v_hold;
    INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)
    VALUES (p_user_id, v_hold.id, 'released', -v_hold.amount, v_now);
    r.outcome := 'applied';
    r.hold := v_hold;
    RETURN r;
END
$$;
"""

# ledger_post of 0001 with one change: a Debit or a negative AdminAdjust (p_delta < 0, not allow_negative)
# is checked against the AVAILABLE balance (balance - held), after lazy expiry of the user's due holds; the
# answer gains a `held` column (the account's held sum, for the INSUFFICIENT_CREDITS details). Adding an
# output column changes the result type, which CREATE OR REPLACE cannot do: the function is dropped and
# created again in this migration's transaction.
LEDGER_POST_SQL = r"""
DROP FUNCTION ledger_post(text, bigint, text, text, bytea, text, text, jsonb, text, boolean);
CREATE FUNCTION ledger_post(
    p_user_id          text,
    p_delta            bigint,
    p_kind             text,
    p_idempotency_key  text,
    p_fingerprint      bytea,
    p_reason           text,
    p_reference        text,
    p_metadata         jsonb,
    p_actor            text,
    p_allow_negative   boolean
) RETURNS TABLE (
    outcome          text,
    balance          bigint,
    id               bigint,
    user_id          text,
    delta            bigint,
    balance_after    bigint,
    kind             text,
    idempotency_key  text,
    reason           text,
    reference        text,
    payment_id       bigint,
    admin_action_id  bigint,
    hold_id          bigint,
    created_at       timestamptz,
    held             bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_entry    credit_transactions%ROWTYPE;
    v_account  accounts%ROWTYPE;
    v_balance  bigint;
    v_admin_id bigint;
BEGIN
    SELECT * INTO v_entry FROM credit_transactions t
     WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    IF NOT FOUND THEN
        SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
        IF NOT FOUND THEN
            IF p_delta < 0 AND NOT p_allow_negative THEN
                outcome := 'insufficient_credits';
                balance := 0;
                held := 0;
                RETURN NEXT;
                RETURN;
            END IF;
            INSERT INTO accounts (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
            SELECT * INTO v_account FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;
        END IF;
        -- Under the account lock: a concurrent request with this key may have committed meanwhile.
        SELECT * INTO v_entry FROM credit_transactions t
         WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    END IF;

    IF v_entry.id IS NOT NULL THEN
        RETURN QUERY SELECT
            CASE WHEN v_entry.request_fingerprint = p_fingerprint THEN 'replayed' ELSE 'idempotency_key_reused' END,
            NULL::bigint, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after, v_entry.kind,
            v_entry.idempotency_key, v_entry.reason, v_entry.reference, v_entry.payment_id,
            v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, NULL::bigint;
        RETURN;
    END IF;
    IF v_account.status = 'anonymized' THEN
        outcome := 'account_anonymized';
        balance := v_account.balance;
        held := v_account.held;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_delta < 0 AND NOT p_allow_negative THEN
        -- Lazy expiry: a hold past its expiry never blocks spending.
        IF hold_expire_due(p_user_id, ledger_now(), NULL) > 0 THEN
            SELECT * INTO STRICT v_account FROM accounts a WHERE a.user_id = p_user_id;
        END IF;
        IF v_account.balance - v_account.held + p_delta < 0 THEN
            outcome := 'insufficient_credits';
            balance := v_account.balance;
            held := v_account.held;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    UPDATE accounts a SET balance = a.balance + p_delta, updated_at = now()
     WHERE a.user_id = p_user_id
    RETURNING a.balance INTO v_balance;
    ASSERT v_balance = v_account.balance + p_delta, 'balance_after does not follow from delta';

    IF p_actor IS NOT NULL THEN
        v_admin_id := nextval(pg_get_serial_sequence('admin_actions', 'id'));
    END IF;
    INSERT INTO credit_transactions AS t (user_id, delta, balance_after, kind, idempotency_key,
                                          request_fingerprint, reason, reference, admin_action_id)
    VALUES (p_user_id, p_delta, v_balance, p_kind, p_idempotency_key, p_fingerprint, p_reason,
            p_reference, v_admin_id)
    RETURNING * INTO v_entry;
    IF p_actor IS NOT NULL THEN
        INSERT INTO admin_actions (id, user_id, actor, delta, reason, transaction_id)
        VALUES (v_admin_id, p_user_id, p_actor, p_delta, p_reason, v_entry.id);
    END IF;
    IF p_metadata IS NOT NULL THEN
        INSERT INTO transaction_metadata (user_id, transaction_id, metadata)
        VALUES (p_user_id, v_entry.id, p_metadata);
    END IF;
    RETURN QUERY SELECT 'applied', v_balance, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after,
                        v_entry.kind, v_entry.idempotency_key, v_entry.reason, v_entry.reference,
                        v_entry.payment_id, v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at,
                        v_account.held;
END
$$;
"""

DOWNGRADE_SQL = r"""
DROP FUNCTION ledger_post(text, bigint, text, text, bytea, text, text, jsonb, text, boolean);
DROP FUNCTION ledger_hold_release(text, bigint, timestamptz);
DROP FUNCTION ledger_hold_capture(text, bigint, bigint, text, bytea, timestamptz);
DROP FUNCTION ledger_hold_reserve(text, bigint, text, bytea, text, integer, integer, timestamptz);
DROP FUNCTION ledger_expire_holds(timestamptz, integer);
DROP FUNCTION hold_expire_due(text, timestamptz, integer);
DROP FUNCTION ledger_now();
DROP TYPE hold_result;
DROP TABLE hold_events;
DROP TABLE holds;
ALTER TABLE accounts DROP COLUMN held;
"""


def _ledger_post_of_0001() -> str:
    """0001's CREATE FUNCTION ledger_post, read from that revision so the downgrade restores it exactly
    (0002 does not change ledger_post)."""
    path = Path(__file__).with_name("0001_ledger_schema.py")
    spec = importlib.util.spec_from_file_location("credits_migration_0001_ledger_schema", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sql: str = module.LEDGER_POST_SQL
    return sql


def upgrade() -> None:
    op.execute(SCHEMA_SQL)
    op.execute(CLOCK_AND_EXPIRY_SQL)
    op.execute(HOLD_FUNCTIONS_SQL)
    op.execute(LEDGER_POST_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    op.execute(_ledger_post_of_0001())
